// Activation formats (quant/act_format.h): intN and dualN codes by hand, their calibration on a
// hand-computed case and on data with planted outliers, and the in-place pass against the
// reference on random data.
#include <random>

#include "quant/act_format.h"
#include "util.h"

using namespace mambaq;

TEST(ActFormat, ParseNamesAndErrors) {
  const ActFormat d = parse_act_format("dual4", "--act-format");
  EXPECT_TRUE(d.dual);
  EXPECT_EQ(d.bits, 4);
  EXPECT_EQ(d.qmax(), 7);
  EXPECT_EQ(d.bits_per_value(), 5.0);  // the notes' W4A5-SE: 4-bit codes + 1 selector bit
  EXPECT_EQ(parse_act_format("int8", "x").qmax(), 127);
  EXPECT_EQ(parse_act_format("int2", "x").qmax(), 1);
  for (const char* bad : {"int9", "int1", "dual", "fp8", "Int4"})
    EXPECT_ERROR(parse_act_format(bad, "--act-format 'x_proj:input=...'"), "--act-format", bad);
}

TEST(ActFormat, CodesByHand) {
  const ActFormat i4 = parse_act_format("int4", "t"), d4 = parse_act_format("dual4", "t");
  ActScales s;
  s.s1 = 0.5f, s.s2 = 4.f;  // the outlier scale is 2
  // int4, Q = 7: round(0.2) = 0; round(0.52) = 1; round(-1.5) = -2 (half to even); round(6.8) = 7;
  // round(-20) clamps to -7
  std::vector<float> x = {0.1f, 0.26f, -0.75f, 3.4f, -10.f};
  fake_quantize_act(i4, s, x.data(), x.size());
  EXPECT_EQ(x, (std::vector<float>{0.f, 0.5f, -1.f, 3.5f, -3.5f}));
  // dual4: 3.4 fits at s1 (code 7); 3.9 -> round(7.8) = 8 does not: at 2, round(1.95) = 2 -> 4;
  // -10 -> at 2, -5 -> -10; 100 -> at 2, 50 clamps to 7 -> 14
  x = {0.1f, 3.4f, 3.9f, -10.f, 100.f};
  fake_quantize_act(d4, s, x.data(), x.size());
  EXPECT_EQ(x, (std::vector<float>{0.f, 3.5f, 4.f, -10.f, 14.f}));
}

TEST(ActFormat, DualCalibrationByHand) {
  // 999 values of +-1 and one 100: the bulk fits exactly at s1 = 1/7, the outlier at s1 s2 = 100/7.
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 2 ? 1.f : -1.f;
  x[500] = 100.f;
  const ActFormat d4 = parse_act_format("dual4", "t"), i4 = parse_act_format("int4", "t");
  const ActScales d = calibrate_act(d4, x.data(), x.size());
  EXPECT_FLOAT_EQ(d.threshold, 1.f);
  EXPECT_FLOAT_EQ(d.s1, 1.f / 7.f);
  EXPECT_FLOAT_EQ(d.s2, 100.f);
  EXPECT_DOUBLE_EQ(d.outlier_share, 0.001);
  EXPECT_LT(d.mse, 1e-9);
  // int4 spends its 7 levels on 100: every +-1 becomes 0
  const ActScales i = calibrate_act(i4, x.data(), x.size());
  EXPECT_FLOAT_EQ(i.s1, 100.f / 7.f);
  EXPECT_NEAR(i.mse, 0.999, 1e-6);
  // the percentile rule at alpha 0.99 lands on the bulk too
  const ActScales p = calibrate_act(d4, x.data(), x.size(), DualRule::Percentile, 0.99);
  EXPECT_FLOAT_EQ(p.threshold, 1.f);
}

TEST(ActFormat, PlantedOutliersAndTheReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> bulk(0.f, 1.f), outlier(0.f, 50.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> x(50000);
  for (auto& v : x) v = u(rng) < 0.002f ? outlier(rng) : bulk(rng);
  const ActFormat i4 = parse_act_format("int4", "t"), i8 = parse_act_format("int8", "t"), d4 = parse_act_format("dual4", "t");
  const ActScales si4 = calibrate_act(i4, x.data(), x.size()), si8 = calibrate_act(i8, x.data(), x.size());
  const ActScales sd = calibrate_act(d4, x.data(), x.size()), sp = calibrate_act(d4, x.data(), x.size(), DualRule::Percentile, 0.999);
  EXPECT_LT(sd.mse, 0.1 * si4.mse);  // the point of the format: outliers no longer cost the bulk its levels
  EXPECT_LT(sp.mse, si4.mse);
  EXPECT_LE(sd.mse, sp.mse * 1.5);
  EXPECT_LT(si8.mse, si4.mse);
  EXPECT_GT(sd.outlier_share, 0.0);
  EXPECT_LT(sd.outlier_share, 0.2);
  // every format's in-place pass equals the reference, value by value
  for (const char* name : {"int2", "int4", "int5", "int8", "dual2", "dual3", "dual4", "dual8"}) {
    const ActFormat f = parse_act_format(name, "t");
    const ActScales s = calibrate_act(f, x.data(), x.size());
    std::vector<float> y = x;
    fake_quantize_act(f, s, y.data(), y.size());
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(y[i], ref::fake_quantize_act_one(f, s, x[i])) << name << " at " << i << " x " << x[i];
  }
  // all zeros: exact
  std::vector<float> z(16, 0.f);
  const ActScales s0 = calibrate_act(d4, z.data(), z.size());
  fake_quantize_act(d4, s0, z.data(), z.size());
  EXPECT_EQ(z, std::vector<float>(16, 0.f));
}
