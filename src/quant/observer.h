// Activation observers for static per-tensor quantization (Quamba): each calibration sample's
// values of one quantization point are passed to observe(); amax() is the clipping value and
// scale = amax / (2^(bits-1) - 1).
//
// - MinMax: running max |x| over all samples.
// - Percentile, mode "ema" (the reference implementation's semantics): per sample q = the
//   alpha-quantile of |x| (torch.quantile's linear interpolation); the first sample sets the
//   value, each later one moves it by 0.01 * (q - value). Depends on sample order and size.
// - Percentile, mode "exact": the alpha-quantile of |x| over all calibration values together.
//   It keeps only the top (1 - alpha) tail (a bounded min-heap sized from the expected total
//   count), never the whole population, and selects with nth_element rather than sorting.
// alpha = 1: the plain maximum in mode exact; in mode ema the moving average of each sample's
// maximum, which is below the largest one whenever the samples differ (the reference's numbers).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "model/quant_state.h"  // PercentileMode

namespace mambaq {


// What a clip value cuts off: the largest |x| seen and the share of values above the clip,
// counted from a histogram of |x| with 64 bins per octave (the values inside the clip's own bin
// are split in proportion to where the clip falls in it, so the share is exact up to that one
// bin's count: bound_share).
struct ClipStats {
  float raw_max = 0, clip = 0;
  double share_clipped = 0, bound_share = 0;
  int64_t values = 0;
};
class ClipHistogram {
 public:
  void add(const float* x, size_t n);
  ClipStats stats(float clip) const;

 private:
  static constexpr int kPerOctave = 64, kOctaves = 300;  // float exponents -149 .. 128, with margin
  std::vector<int64_t> bins_ = std::vector<int64_t>(size_t(kPerOctave) * kOctaves, 0);
  int64_t zeros_ = 0, n_ = 0;
  float max_ = 0;
  static size_t bin(float a);
  static double lower_edge(size_t b);
};

class Observer {
 public:
  virtual ~Observer() = default;
  virtual void observe(const float* x, size_t n) = 0;  // one calibration sample
  virtual float amax() const = 0;                      // clip value (0 before any sample)
  virtual std::string kind() const = 0;                // "minmax" or "percentile"
  float scale(int bits = 8) const { return amax() / float((1 << (bits - 1)) - 1); }
  size_t samples() const { return samples_; }
  // Percentile observers: what their clip value cuts off (null for min-max, which clips nothing).
  virtual const ClipHistogram* clipping() const { return nullptr; }

 protected:
  size_t samples_ = 0;
};

std::unique_ptr<Observer> make_minmax_observer();
// expected_total: values the exact mode will see in all (an upper bound is fine; only used to
// size the retained tail). Ignored by ema.
std::unique_ptr<Observer> make_percentile_observer(double alpha, PercentileMode mode, size_t expected_total = 0);

// torch.quantile(|x|, alpha) with linear interpolation, by selection (x is copied).
float abs_quantile(const float* x, size_t n, double alpha);

namespace ref {
// The same by sorting everything (tests).
float abs_quantile_sorted(std::vector<float> values, double alpha);
}

}  // namespace mambaq
