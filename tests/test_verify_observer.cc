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
  ASSERT_EQ(rows.size(), 15u);  // 5 alphas x (ema on one sample, ema over 3, exact)
  EXPECT_EQ(rows[5].mode, "ema x3");
  for (const auto& r : rows) {
    EXPECT_TRUE(r.ok) << r.mode << " " << r.alpha << ": " << r.problem;
    if (r.alpha == 1.0 && r.mode != "ema x3") {
      EXPECT_EQ(r.clipped, 0.0);
    }
    if (r.alpha == 1.0 && r.mode == "ema x3") {
      EXPECT_GT(r.clipped, 0.0);  // the moving average of the samples' maxima is below the largest
    }
    if (r.alpha == 0.99 && r.mode != "ema x3") {
      EXPECT_NEAR(r.clipped, 0.01, 1e-4) << r.mode;  // clips what alpha says
    }
    if (r.alpha == 0.99 && r.mode == "ema x3") {
      EXPECT_NEAR(r.clipped, 0.01, 1e-3);  // an average of quantiles: about what alpha says
    }
  }
  EXPECT_LT(rows[0].scale, rows[4].scale);  // the outliers matter
}

TEST(VerifyObserver, EmaOverSeveralSamplesIsTheMovingAverage) {
  // An "ema" that keeps the running maximum instead (what "alpha 1 = no clipping" would need) is
  // not the reference's observer: the several-sample check says so.
  class RunningMax final : public Observer {
   public:
    explicit RunningMax(double a) : a_(a) {}
    void observe(const float* x, size_t n) override { v_ = std::max(v_, abs_quantile(x, n, a_)); }
    float amax() const override { return v_; }
    std::string kind() const override { return "percentile"; }

   private:
    double a_;
    float v_ = 0;
  };
  auto maxed = [](double a, PercentileMode m, size_t e) -> std::unique_ptr<Observer> {
    if (m == PercentileMode::Ema) return std::make_unique<RunningMax>(a);
    return make_percentile_observer(a, m, e);
  };
  const auto rows = verify_observer(small(), maxed);
  for (const auto& r : rows) {
    if (r.mode == "ema x3") {
      EXPECT_FALSE(r.ok) << r.alpha;
      EXPECT_NE(r.problem.find("moving average"), std::string::npos) << r.problem;
    } else {
      EXPECT_TRUE(r.ok) << r.mode << " " << r.alpha << ": " << r.problem;  // one sample: the same thing
    }
  }
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
  auto r = mqtest::run_cli("verify-observer --samples 2 --values 50000 --threads 1");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("observer verified"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("coverage at alpha 1 over 2 samples"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("exact"), std::string::npos);
}
