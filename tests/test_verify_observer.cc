// verify-observer passes for the observers as built and fails for deliberately broken ones.
#include "analysis/verify_observer.h"
#include "util.h"

using namespace mambaq;

namespace {
ObserverCheckOptions small() {
  ObserverCheckOptions o;
  o.samples = 3;
  o.values = 100000;
  return o;
}
// Wraps a real observer and reports a distorted clip value.
class Distorted final : public Observer {
 public:
  Distorted(std::unique_ptr<Observer> in, std::function<float(float)> f) : in_(std::move(in)), f_(std::move(f)) {}
  void observe(const float* x, size_t n) override { in_->observe(x, n); }
  float amax() const override { return f_(in_->amax()); }
  std::string kind() const override { return "percentile"; }

 private:
  std::unique_ptr<Observer> in_;
  std::function<float(float)> f_;
};
}  // namespace

TEST(VerifyObserver, PassesForTheObserversAsBuilt) {
  const auto rows = verify_observer(small());
  ASSERT_EQ(rows.size(), 10u);  // 5 alphas x 2 modes
  for (const auto& r : rows) {
    EXPECT_TRUE(r.ok) << r.mode << " " << r.alpha << ": " << r.problem;
    if (r.alpha == 1.0) {
      EXPECT_EQ(r.clipped, 0.0);
    }
    if (r.alpha == 0.99) {
      EXPECT_NEAR(r.clipped, 0.01, 1e-4) << r.mode;  // clips what alpha says
    }
  }
  EXPECT_LT(rows[0].scale, rows[4].scale);  // the outliers matter
}

TEST(VerifyObserver, FailsForABrokenObserver) {
  // Clips at half the quantile: too many values outside.
  auto halves = [](double a, PercentileMode m, size_t e) -> std::unique_ptr<Observer> {
    return std::make_unique<Distorted>(make_percentile_observer(a, m, e), [](float v) { return 0.5f * v; });
  };
  auto rows = verify_observer(small(), halves);
  EXPECT_FALSE(rows[0].ok);
  EXPECT_NE(rows[0].problem.find("inside"), std::string::npos) << rows[0].problem;
  // Ignores alpha and always uses the 0.99 quantile: alpha = 1 clips values.
  auto fixed = [](double, PercentileMode m, size_t e) -> std::unique_ptr<Observer> {
    return make_percentile_observer(0.99, m, e);
  };
  rows = verify_observer(small(), fixed);
  EXPECT_FALSE(rows[4].ok);
  EXPECT_NE(rows[4].problem.find("alpha 1"), std::string::npos) << rows[4].problem;
  // Scale falls as alpha grows.
  auto inverted = [](double a, PercentileMode m, size_t e) -> std::unique_ptr<Observer> {
    return make_percentile_observer(1.0 - (a - 0.99), m, e);
  };
  rows = verify_observer(small(), inverted);
  bool saw = false;
  for (const auto& r : rows) saw = saw || r.problem.find("below the scale") != std::string::npos;
  EXPECT_TRUE(saw);
}

TEST(VerifyObserver, CliExitsZeroWhenVerified) {
  auto r = mqtest::run_cli("verify-observer --samples 2 --values 50000");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("observer verified"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("exact"), std::string::npos);
}
