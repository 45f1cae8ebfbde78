#include "quant/act_format.h"

#include <algorithm>
#include <cmath>

#include "mambaq/error.h"

namespace mambaq {

ActFormat parse_act_format(const std::string& name, const std::string& where) {
  for (const char* kind : {"int", "dual"}) {
    const std::string k = kind;
    if (name.size() == k.size() + 1 && name.starts_with(k) && name.back() >= '2' && name.back() <= '8') {
      ActFormat f;
      f.name = name;
      f.bits = name.back() - '0';
      f.dual = k == "dual";
      return f;
    }
  }
  fail("{}: unknown activation format '{}' (intN or dualN, N = 2..8: e.g. int8, int4, dual4)", where, name);
}

namespace {

// x = q s with q = clamp(round(x / s), -Q, Q); round half to even (the default rounding mode).
inline float code_at(float x, float s, int Q) {
  return std::clamp(std::nearbyint(x / s), float(-Q), float(Q));
}

// One value: the header's definition (shared by the in-place pass and the reference below).
inline float fake_one(const ActFormat& f, const ActScales& s, float x) {
  if (!(s.s1 > 0)) return 0.f;
  const int Q = f.qmax();
  const float q = std::nearbyint(x / s.s1);
  if (!f.dual || std::fabs(q) <= float(Q)) return std::clamp(q, float(-Q), float(Q)) * s.s1;
  const float hi = s.s1 * s.s2;
  return code_at(x, hi, Q) * hi;
}

// The quantile of sorted |x| at `level` by linear interpolation between order statistics
// (torch.quantile's default).
float quantile_sorted(const std::vector<float>& a, double level) {
  const double pos = level * double(a.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, a.size() - 1);
  return float(double(a[lo]) + (pos - double(lo)) * (double(a[hi]) - double(a[lo])));
}

// MSE, outlier share of x at scales s.
void measure(const ActFormat& f, ActScales& s, const float* x, size_t n) {
  double se = 0;
  size_t out = 0;
  const int Q = f.qmax();
  for (size_t i = 0; i < n; ++i) {
    const float y = fake_one(f, s, x[i]);
    se += double(y - x[i]) * double(y - x[i]);
    if (f.dual && s.s1 > 0 && std::fabs(std::nearbyint(x[i] / s.s1)) > float(Q)) ++out;
  }
  s.mse = n ? se / double(n) : 0.0;
  s.outlier_share = n ? double(out) / double(n) : 0.0;
}

}  // namespace

ActScales calibrate_act(const ActFormat& f, const float* x, size_t n, DualRule rule, double alpha) {
  ActScales s;
  if (n == 0) return s;
  std::vector<float> a(n);
  for (size_t i = 0; i < n; ++i) a[i] = std::fabs(x[i]);
  std::sort(a.begin(), a.end());
  const float amax = a.back();
  if (!(amax > 0)) return s;  // all zeros: s1 = 0 codes every value as 0, exactly
  const int Q = f.qmax();
  auto at_threshold = [&](float t) {
    ActScales c;
    c.s1 = t / float(Q);
    c.s2 = f.dual ? std::max(1.f, amax / t) : 1.f;
    c.threshold = float(Q) * c.s1;
    measure(f, c, x, n);
    return c;
  };
  if (!f.dual) return at_threshold(amax);
  if (rule == DualRule::Percentile) {
    if (!(alpha > 0 && alpha <= 1)) fail("dual calibration: alpha {} must be in (0, 1]", alpha);
    const float t = quantile_sorted(a, alpha);
    return at_threshold(t > 0 ? t : amax);
  }
  // MinMse: the candidate thresholds are |x| quantiles at 128 levels in [0.5, 1]; the first with
  // the least error wins (level 1 is amax: the intN scale, never worse than intN)
  ActScales best;
  bool have = false;
  for (int k = 0; k <= 127; ++k) {
    const float t = quantile_sorted(a, 0.5 + 0.5 * double(k) / 127.0);
    if (!(t > 0)) continue;
    const ActScales c = at_threshold(t);
    if (!have || c.mse < best.mse) best = c, have = true;
  }
  return best;
}

void fake_quantize_act(const ActFormat& f, const ActScales& s, float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = fake_one(f, s, x[i]);
}

float ref::fake_quantize_act_one(const ActFormat& f, const ActScales& s, float x) {
  // written out once more, step by step, as act_format.h states it
  if (s.s1 <= 0) return 0.f;
  const int Q = (1 << (f.bits - 1)) - 1;
  const float q1 = std::nearbyint(x / s.s1);
  if (!f.dual) return std::min(std::max(q1, float(-Q)), float(Q)) * s.s1;
  if (q1 >= float(-Q) && q1 <= float(Q)) return q1 * s.s1;  // selector 0
  const float s_hi = s.s1 * s.s2;
  const float q2 = std::nearbyint(x / s_hi);
  return std::min(std::max(q2, float(-Q)), float(Q)) * s_hi;  // selector 1
}

}  // namespace mambaq
