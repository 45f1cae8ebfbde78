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
  for (PercentileMode mode : {PercentileMode::Ema, PercentileMode::Exact}) {
    float prev_scale = 0.f;
    for (double alpha : opt.alphas) {
      // ema is a moving average of per-sample quantiles, not a quantile of all values, so its
      // guarantee holds per sample: it sees one sample (as the seeds' check does); exact sees all.
      const size_t used = mode == PercentileMode::Ema ? 1 : data.size(), n = used * opt.values;
      auto obs = make(alpha, mode, n);
      for (size_t i = 0; i < used; ++i) obs->observe(data[i].data(), data[i].size());
      ObserverCheckRow r{mode == PercentileMode::Ema ? "ema" : "exact", alpha, obs->amax(), obs->scale(8), 0, 0, true, ""};
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
