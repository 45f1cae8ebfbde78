// Observers: quantiles by selection equal quantiles by sorting; ema follows the reference's
// update rule (computed by hand here); exact equals the quantile of all values together;
// scales grow with alpha and cover at least an alpha share of the values.
#include "quant/observer.h"
#include "util.h"

using namespace mambaq;

namespace {
// Activations with planted outliers, as the seeds' observer check.
std::vector<float> with_outliers(size_t n, uint32_t seed) {
  auto v = mqtest::randn(n, seed, 10.f);
  std::mt19937 rng(seed + 1);
  for (size_t k = 0; k < n / 100; ++k) v[rng() % n] = mqtest::randn(1, uint32_t(rng()), 1000.f)[0];
  return v;
}
}  // namespace

TEST(Observer, QuantileBySelectionEqualsSorting) {
  auto v = with_outliers(100003, 1);
  for (double a : {0.5, 0.99, 0.999, 0.9995, 0.99999, 1.0})
    EXPECT_EQ(abs_quantile(v.data(), v.size(), a), ref::abs_quantile_sorted(v, a)) << a;
  // torch.quantile's interpolation, by hand: |x| = {1, 2, 3, 4}, alpha 0.5 -> position 1.5 -> 2.5
  std::vector<float> s = {-4, 1, 3, -2};
  EXPECT_FLOAT_EQ(abs_quantile(s.data(), 4, 0.5), 2.5f);
  EXPECT_FLOAT_EQ(abs_quantile(s.data(), 4, 1.0), 4.f);
  EXPECT_FLOAT_EQ(abs_quantile(s.data(), 4, 0.9), 3.7f);  // position 2.7 -> 3 + 0.7
}

TEST(Observer, MinMaxIsTheRunningAbsMax) {
  auto o = make_minmax_observer();
  std::vector<float> a = {1, -7, 3}, b = {2, 5};
  o->observe(a.data(), a.size());
  o->observe(b.data(), b.size());
  EXPECT_EQ(o->amax(), 7.f);
  EXPECT_FLOAT_EQ(o->scale(8), 7.f / 127.f);
  EXPECT_EQ(o->kind(), "minmax");
}

TEST(Observer, EmaFollowsTheReferenceRule) {
  auto o = make_percentile_observer(0.9995, PercentileMode::Ema);
  double expect = 0;
  for (int s = 0; s < 5; ++s) {
    auto v = with_outliers(20000, 10 + uint32_t(s));
    const double q = ref::abs_quantile_sorted(v, 0.9995);
    expect = s == 0 ? q : expect + 0.01 * (q - expect);
    o->observe(v.data(), v.size());
  }
  EXPECT_NEAR(o->amax(), expect, 1e-4 * expect);
}

TEST(Observer, ExactIsTheQuantileOfAllValues) {
  std::vector<float> all;
  auto o = make_percentile_observer(0.9995, PercentileMode::Exact, 5 * 20000);
  for (int s = 0; s < 5; ++s) {
    auto v = with_outliers(20000, 20 + uint32_t(s));
    all.insert(all.end(), v.begin(), v.end());
    o->observe(v.data(), v.size());
  }
  EXPECT_EQ(o->amax(), ref::abs_quantile_sorted(all, 0.9995));
  auto one = make_percentile_observer(1.0, PercentileMode::Exact, all.size());
  one->observe(all.data(), all.size());
  EXPECT_EQ(one->amax(), ref::abs_quantile_sorted(all, 1.0));
  // under-sized: a clear error, not a wrong answer
  auto small = make_percentile_observer(0.9, PercentileMode::Exact, 10);
  small->observe(all.data(), 1000);
  EXPECT_ERROR(small->amax(), "sized for");
}

TEST(Observer, ScaleGrowsWithAlphaAndCoversAlpha) {
  auto v = with_outliers(200000, 3);
  for (auto mode : {PercentileMode::Ema, PercentileMode::Exact}) {
    float prev = 0;
    for (double a : {0.99, 0.999, 0.9999, 0.99999, 1.0}) {
      auto o = make_percentile_observer(a, mode, v.size());
      o->observe(v.data(), v.size());
      const float clip = o->scale() * 127.f;
      EXPECT_GE(clip, prev) << a;
      prev = clip;
      size_t inside = 0;
      for (float x : v) inside += std::fabs(x) <= clip;
      EXPECT_GE(double(inside) / double(v.size()), a - 1.0 / double(v.size())) << a;  // interpolation: within one value
      if (a == 1.0) {
        EXPECT_EQ(inside, v.size());
      }
    }
  }
  EXPECT_ERROR(make_percentile_observer(1.5, PercentileMode::Ema), "percentile_alpha");
}

TEST(Observer, ClipStatisticsCountWhatTheClipCutsOff) {
  // The share clipped, from the histogram, against an exact count over the same values; the
  // histogram is exact up to the values inside the clip's own bin (bound_share).
  auto obs = make_percentile_observer(0.999, PercentileMode::Ema);
  std::vector<float> all;
  for (uint32_t s = 0; s < 4; ++s) {
    auto v = with_outliers(50000, 10 + s);
    v[7] = 0.f;  // zeros count as values, never clipped
    obs->observe(v.data(), v.size());
    all.insert(all.end(), v.begin(), v.end());
  }
  ASSERT_NE(obs->clipping(), nullptr);
  const ClipStats st = obs->clipping()->stats(obs->amax());
  double above = 0, mx = 0;
  for (float x : all) above += std::fabs(x) > obs->amax(), mx = std::max(mx, double(std::fabs(x)));
  EXPECT_EQ(st.values, int64_t(all.size()));
  EXPECT_EQ(st.raw_max, float(mx));
  EXPECT_EQ(st.clip, obs->amax());
  EXPECT_LE(std::abs(st.share_clipped - above / double(all.size())), st.bound_share + 1e-12);
  EXPECT_LT(st.bound_share, 1e-3);  // 1/64 octave holds few values at the clip
  EXPECT_GT(st.share_clipped, 0.0);
  // min-max clips nothing: no statistics
  EXPECT_EQ(make_minmax_observer()->clipping(), nullptr);
}
