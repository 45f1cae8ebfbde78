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
// alpha = 1 is the plain maximum in both modes.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "model/quant_state.h"  // PercentileMode

namespace mambaq {


class Observer {
 public:
  virtual ~Observer() = default;
  virtual void observe(const float* x, size_t n) = 0;  // one calibration sample
  virtual float amax() const = 0;                      // clip value (0 before any sample)
  virtual std::string kind() const = 0;                // "minmax" or "percentile"
  float scale(int bits = 8) const { return amax() / float((1 << (bits - 1)) - 1); }
  size_t samples() const { return samples_; }

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
