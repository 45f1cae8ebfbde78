#include "analysis/verify_observer.h"

#include <cmath>
#include <random>

#include <fmt/format.h>

#include "mambaq/error.h"

namespace mambaq {

std::vector<ObserverCheckRow> verify_observer(const ObserverCheckOptions& opt, const ObserverFactory& make_in) {
  if (opt.samples < 1 || opt.values < 2) fail("verify-observer: need at least 1 sample of 2 values");
  const ObserverFactory make = make_in ? make_in : [](double a, PercentileMode m, size_t e) {
    return make_percentile_observer(a, m, e);
  };
  // The activations: N(0, 10) with a share of planted outliers from N(0, 1000) (the seeds' recipe).
  std::mt19937_64 rng(opt.seed);
  std::normal_distribution<float> base(0.f, 10.f), outlier(0.f, 1000.f);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<std::vector<float>> data(size_t(opt.samples), std::vector<float>(opt.values));
  for (auto& s : data)
    for (auto& x : s) x = u(rng) < opt.outlier_share ? outlier(rng) : base(rng);

  std::vector<ObserverCheckRow> rows;
  // Three checks. "ema" on one sample: the reference's observer is a per-sample quantile there,
  // so the quantile's guarantee holds (at least alpha inside; all at alpha 1). "ema" over every
  // sample ("ema xN"): a moving average of the per-sample quantiles (momentum 0.01, the
  // reference's), computed here independently from sorted copies — coverage is reported, and at
  // alpha 1 it is below 100 % whenever a later sample's max is below the largest (alpha 1 in ema
  // still clips). "exact" over every sample: a quantile of all values, with its guarantee.
  struct Check {
    PercentileMode mode;
    size_t used;
    std::string name;
  };
  std::vector<Check> checks = {{PercentileMode::Ema, 1, "ema"}};
  if (data.size() > 1) checks.push_back({PercentileMode::Ema, data.size(), fmt::format("ema x{}", data.size())});
  checks.push_back({PercentileMode::Exact, data.size(), "exact"});
  for (const Check& ck : checks) {
    float prev_scale = 0.f;
    for (double alpha : opt.alphas) {
      const size_t used = ck.used, n = used * opt.values;
      auto obs = make(alpha, ck.mode, n);
      for (size_t i = 0; i < used; ++i) obs->observe(data[i].data(), data[i].size());
      ObserverCheckRow r{ck.name, alpha, obs->amax(), obs->scale(8), 0, 0, true, ""};
      const float clip = 127.f * r.scale;  // what int8 codes reach: |q| <= 127
      size_t in = 0;
      for (size_t i = 0; i < used; ++i)
        for (float x : data[i]) in += std::fabs(x) <= clip;
      r.inside = double(in) / double(n);
      r.clipped = 1.0 - r.inside;
      // torch.quantile interpolates between two order statistics: the value at position
      // alpha*(n-1) may leave one value (1/n of them) more outside than alpha allows.
      const double slack = 1.0 / double(n);
      if (r.scale < prev_scale) {
        r.ok = false;
        r.problem = fmt::format("scale {:.6g} is below the scale {:.6g} of a smaller alpha", r.scale, prev_scale);
      } else if (ck.mode == PercentileMode::Ema && used > 1) {
        float ema = 0.f;  // the reference's update, on quantiles of sorted copies
        for (size_t i = 0; i < used; ++i) {
          const float q = ref::abs_quantile_sorted(data[i], alpha);
          ema = i == 0 ? q : ema + 0.01f * (q - ema);
        }
        if (std::fabs(r.amax - ema) > 1e-5f * ema) {
          r.ok = false;
          r.problem = fmt::format("clip {:.7g} is not the moving average {:.7g} of the samples' quantiles", r.amax, ema);
        }
      } else if (alpha >= 1.0 && in != n) {
        r.ok = false;
        r.problem = fmt::format("alpha 1 must keep every value inside, but {} are clipped", n - in);
      } else if (r.inside < alpha - slack) {
        r.ok = false;
        r.problem = fmt::format("only {:.7f} of the values are inside (alpha {})", r.inside, alpha);
      }
      prev_scale = std::max(prev_scale, r.scale);
      rows.push_back(r);
    }
  }
  return rows;
}

}  // namespace mambaq
