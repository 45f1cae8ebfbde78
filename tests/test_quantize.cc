// Symmetric int8 quantizers against hand-computed cases and their error bounds.
#include "kernels/wquant.h"
#include "util.h"

using namespace mambaq;

TEST(Quantize, HandComputedPerTensorAndPerChannel) {
  // rows: max 2.54 -> scale 0.02; max 1.27 -> 0.01
  const std::vector<float> W = {2.54f, -1.0f, 0.005f, 0.015f, -1.27f, 0.5f};
  auto t = quantize_weight(W.data(), 2, 3, Granularity::Tensor);
  ASSERT_EQ(t.scales.size(), 1u);
  EXPECT_FLOAT_EQ(t.scales[0], 0.02f);
  EXPECT_EQ(std::vector<int8_t>(t.s8(), t.s8() + 6), (std::vector<int8_t>{127, -50, 0, 1, -64, 25}));  // 0.015/0.02 = 0.75 -> 1; -1.27/0.02 = -63.5 -> -64 (half to even)
  auto c = quantize_weight(W.data(), 2, 3, Granularity::Channel);
  ASSERT_EQ(c.scales.size(), 2u);
  EXPECT_FLOAT_EQ(c.scales[1], 0.01f);
  EXPECT_EQ(c.s8()[3], 2);     // 0.015 / 0.01 = 1.5 -> 2 (half to even)
  EXPECT_EQ(c.s8()[4], -127);
  EXPECT_EQ(c.s8()[5], 50);
}

TEST(Quantize, ErrorWithinHalfAStep) {
  const int rows = 64, cols = 96;
  auto W = mqtest::randn(size_t(rows) * cols, 5, 0.05f);
  W[17] = 3.f;  // an outlier: per-channel keeps the other rows fine
  for (auto g : {Granularity::Tensor, Granularity::Channel}) {
    auto q = quantize_weight(W.data(), rows, cols, g);
    auto d = dequantize_weight(q);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        ASSERT_LE(std::fabs(d[size_t(r) * cols + c] - W[size_t(r) * cols + c]), 0.5f * q.scale_of(r) * (1 + 1e-6f));
  }
  auto t = dequantize_weight(quantize_weight(W.data(), rows, cols, Granularity::Tensor));
  auto c = dequantize_weight(quantize_weight(W.data(), rows, cols, Granularity::Channel));
  EXPECT_LT(mqtest::rel_err(c, W), mqtest::rel_err(t, W));
  EXPECT_ERROR(quantize_weight(W.data(), rows, cols, Granularity::Tensor, 9), "weight bits 9");
}

TEST(Quantize, FakeQuantizeClampsAndRounds) {
  std::vector<float> x = {0.26f, -0.24f, 100.f, -100.f, 0.f};
  fake_quantize(x.data(), x.size(), 0.5f);  // grid step 0.5, range +-63.5
  EXPECT_EQ(x, (std::vector<float>{0.5f, -0.f, 63.5f, -63.5f, 0.f}));
}
