// The seeds' observer check: seeded synthetic activations with planted outliers go through the
// percentile observer for several alphas and both modes; the scale must not decrease as alpha
// grows, the values inside +-127*scale must be at least alpha of all (up to the one value the
// quantile's interpolation may leave out), and exactly all of them at alpha = 1.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/observer.h"

namespace mambaq {

struct ObserverCheckRow {
  std::string mode;     // "ema" (one sample), "ema xN" (every sample), "exact"
  double alpha;
  float amax, scale;
  double inside;        // share of all values with |x| <= amax
  double clipped;       // 1 - inside
  bool ok;
  std::string problem;  // why not ok
};

struct ObserverCheckOptions {
  std::vector<double> alphas{0.99, 0.999, 0.9999, 0.99999, 1.0};
  int samples = 4;                // calibration samples (observer.observe calls)
  size_t values = 1024 * 512;     // values per sample
  double outlier_share = 0.001;   // planted outliers, x ~ N(0, 1000) instead of N(0, 10)
  uint64_t seed = 0;
};

using ObserverFactory = std::function<std::unique_ptr<Observer>(double alpha, PercentileMode mode, size_t expected)>;

// Runs the check; `make` defaults to make_percentile_observer (tests pass broken ones).
std::vector<ObserverCheckRow> verify_observer(const ObserverCheckOptions& opt, const ObserverFactory& make = {});

}  // namespace mambaq
