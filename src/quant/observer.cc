#include "quant/observer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>

#include "mambaq/error.h"

namespace mambaq {

namespace {

// position alpha*(n-1) in ascending order; value = v[lo] + frac * (v[lo+1] - v[lo])
float interpolate(float lo_v, float hi_v, double pos) {
  const double frac = pos - std::floor(pos);
  return float(lo_v + frac * (double(hi_v) - lo_v));
}

class MinMax final : public Observer {
 public:
  void observe(const float* x, size_t n) override {
    float m = max_;
#pragma omp parallel for simd reduction(max : m) if (n > 65536)
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    max_ = m;
    ++samples_;
  }
  float amax() const override { return max_; }
  std::string kind() const override { return "minmax"; }

 private:
  float max_ = 0.f;
};

class PercentileEma final : public Observer {
 public:
  explicit PercentileEma(double alpha) : alpha_(alpha) {}
  void observe(const float* x, size_t n) override {
    if (n == 0) return;
    const float q = abs_quantile(x, n, alpha_);
    value_ = samples_ == 0 ? q : value_ + 0.01f * (q - value_);
    hist_.add(x, n);
    ++samples_;
  }
  float amax() const override { return value_; }
  std::string kind() const override { return "percentile"; }
  const ClipHistogram* clipping() const override { return &hist_; }

 private:
  double alpha_;
  float value_ = 0.f;
  ClipHistogram hist_;
};

class PercentileExact final : public Observer {
 public:
  PercentileExact(double alpha, size_t expected) : alpha_(alpha) {
    // ranks from the top that the quantile can touch, for up to `expected` values
    const double pos = alpha * (double(std::max<size_t>(expected, 1)) - 1);
    keep_ = size_t(double(std::max<size_t>(expected, 1)) - std::floor(pos)) + 1;
  }
  void observe(const float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) {
      const float a = std::fabs(x[i]);
      if (heap_.size() < keep_) {
        heap_.push(a);
      } else if (a > heap_.top()) {
        heap_.pop();
        heap_.push(a);
      }
    }
    count_ += n;
    hist_.add(x, n);
    ++samples_;
  }
  const ClipHistogram* clipping() const override { return &hist_; }
  float amax() const override {
    if (count_ == 0) return 0.f;
    const double pos = alpha_ * double(count_ - 1);
    const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, count_ - 1);
    // rank from the top (0 = largest) of ascending index i is count_-1-i
    const size_t r_lo = count_ - 1 - lo, r_hi = count_ - 1 - hi;
    if (r_lo >= heap_.size())
      fail("percentile observer (exact): saw {} values, more than the {} it was sized for; the tail it kept "
           "cannot give the {}-quantile",
           count_, keep_, alpha_);
    std::vector<float> tail = heap_container();
    std::sort(tail.begin(), tail.end(), std::greater<float>());
    return interpolate(tail[r_lo], tail[r_hi], pos);
  }
  std::string kind() const override { return "percentile"; }

 private:
  double alpha_;
  size_t keep_ = 1, count_ = 0;
  std::priority_queue<float, std::vector<float>, std::greater<float>> heap_;  // min-heap of the largest values
  ClipHistogram hist_;
  std::vector<float> heap_container() const {
    auto copy = heap_;
    std::vector<float> v;
    v.reserve(copy.size());
    while (!copy.empty()) {
      v.push_back(copy.top());
      copy.pop();
    }
    return v;
  }
};

void check_alpha(double alpha) {
  if (!(alpha > 0.0 && alpha <= 1.0)) fail_option("percentile_alpha", "percentile_alpha must be in (0, 1] (got {})", alpha);
}

}  // namespace

// bin = (exponent + 150) * 64 + the mantissa's 1/64 step: |x| = m 2^e, m in [0.5, 1)
size_t ClipHistogram::bin(float a) {
  int e;
  const float m = std::frexp(a, &e);
  const int j = std::min(kPerOctave - 1, int((m - 0.5f) * 2 * kPerOctave));
  return size_t(std::clamp(e + 150, 0, kOctaves - 1)) * kPerOctave + size_t(j);
}
double ClipHistogram::lower_edge(size_t b) {
  const int e = int(b / kPerOctave) - 150, j = int(b % kPerOctave);
  return std::ldexp(0.5 + double(j) / (2 * kPerOctave), e);
}

void ClipHistogram::add(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    max_ = std::max(max_, a);
    if (a == 0.f || !std::isfinite(a)) ++zeros_;
    else ++bins_[bin(a)];
  }
  n_ += int64_t(n);
}

ClipStats ClipHistogram::stats(float clip) const {
  ClipStats s;
  s.raw_max = max_, s.clip = clip, s.values = n_;
  if (n_ == 0 || !(clip > 0)) return s;
  const size_t bc = bin(clip);
  double above = 0;
  for (size_t b = bc + 1; b < bins_.size(); ++b) above += double(bins_[b]);
  const double lo = lower_edge(bc), hi = lower_edge(bc + 1);
  above += double(bins_[bc]) * (hi - clip) / (hi - lo);  // the clip's own bin, split in proportion
  s.share_clipped = above / double(n_);
  s.bound_share = double(bins_[bc]) / double(n_);
  return s;
}

float abs_quantile(const float* x, size_t n, double alpha) {
  check_alpha(alpha);
  if (n == 0) return 0.f;
  std::vector<float> a(n);
  for (size_t i = 0; i < n; ++i) a[i] = std::fabs(x[i]);
  const double pos = alpha * double(n - 1);
  const size_t lo = size_t(std::floor(pos));
  std::nth_element(a.begin(), a.begin() + std::ptrdiff_t(lo), a.end());
  const float lo_v = a[lo];
  const float hi_v = lo + 1 < n ? *std::min_element(a.begin() + std::ptrdiff_t(lo) + 1, a.end()) : lo_v;
  return interpolate(lo_v, hi_v, pos);
}

float ref::abs_quantile_sorted(std::vector<float> v, double alpha) {
  for (auto& x : v) x = std::fabs(x);
  std::sort(v.begin(), v.end());
  const double pos = alpha * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return interpolate(v[lo], v[hi], pos);
}

std::unique_ptr<Observer> make_minmax_observer() { return std::make_unique<MinMax>(); }

std::unique_ptr<Observer> make_percentile_observer(double alpha, PercentileMode mode, size_t expected_total) {
  check_alpha(alpha);
  if (mode == PercentileMode::Ema) return std::make_unique<PercentileEma>(alpha);
  return std::make_unique<PercentileExact>(alpha, expected_total);
}

}  // namespace mambaq
