// 4-bit weights: the packed S4 layout and round-to-nearest by hand, and the W4A16 / W4A8 GEMMs
// of every backend against their scalar references on random data.
// Bounds: W4A8's group dot products are exact int32 in both; the fast kernels sum the groups
// (and, in the decode GEMV, the 16 SIMD lanes) in float where the reference sums in double, so
// the outputs agree to a relative error (norm-wise) of 1e-5: a float sum of at most K / 32 <= 19
// partial terms of similar magnitude loses a few ulps (6e-8 each). W4A16's inner products run in
// float in both fast paths (the decode GEMV, and sgemm over the expanded weights), the same 1e-5.
#include "kernels/backend.h"
#include "kernels/ref/ops.h"
#include "kernels/wquant.h"
#include "dev.h"
#include "util.h"

using namespace mambaq;
using mqtest::rand_codes;
using mqtest::rel_err;

namespace {
// A random S4 weight {N, K}: codes in [-8, 7] (the full nibble range), positive group scales.
QTensor rand_s4(int N, int K, int group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-8, 7);
  std::vector<int8_t> q(size_t(N) * K);
  for (auto& x : q) x = int8_t(d(rng));
  return make_qtensor(q, N, K, 4, Granularity::Group, group,
                      mqtest::uniform(size_t(N) * ((K + group - 1) / group), seed + 1, 0.01f, 0.05f));
}
}  // namespace

TEST(S4, LayoutAndRoundToNearestByHand) {
  // one row of 64 columns: w[k] = 0.1 * (k % 15 - 7), group 32: each group's max |w| is 0.7, so
  // the scale is 0.7 / 7 = 0.1 and the codes are k % 15 - 7 exactly.
  std::vector<float> w(64);
  for (int k = 0; k < 64; ++k) w[size_t(k)] = 0.1f * float(k % 15 - 7);
  const QTensor q = quantize_weight(w.data(), 1, 64, Granularity::Group, 4, 32);
  ASSERT_EQ(q.format, WFormat::S4);
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_FLOAT_EQ(q.scales[0], 0.1f);
  EXPECT_FLOAT_EQ(q.scales[1], 0.1f);
  for (int k = 0; k < 64; ++k) EXPECT_EQ(q.code(0, k), k % 15 - 7) << k;
  // byte 3 of the first block: column 3 (code 3 - 7 = -4, stored 4) low, column 19 (19 % 15 - 7
  // = -3, stored 5) high; byte 16 + 2 (second block): column 34 (34 % 15 - 7 = -3 -> 5) low,
  // column 50 (50 % 15 - 7 = -2 -> 6) high
  EXPECT_EQ(q.s4()[3], 4 | (5 << 4));
  EXPECT_EQ(q.s4()[18], 5 | (6 << 4));
  EXPECT_EQ(q.bytes(), 32u + 2 * 4);
  const auto d = dequantize_weight(q);
  for (int k = 0; k < 64; ++k) EXPECT_NEAR(d[size_t(k)], w[size_t(k)], 1e-6f) << k;
  // a group whose max is 1.4 has scale 0.2: 0.3 -> 1.5 -> 2 (half to even), -0.1 -> -0.5 -> 0
  std::vector<float> v(32, 0.f);
  v[0] = 1.4f, v[1] = 0.3f, v[2] = -0.1f, v[3] = -1.4f;
  const QTensor r = quantize_weight(v.data(), 1, 32, Granularity::Group, 4, 32);
  EXPECT_FLOAT_EQ(r.scales[0], 0.2f);
  EXPECT_EQ(r.code(0, 0), 7);
  EXPECT_EQ(r.code(0, 1), 2);
  EXPECT_EQ(r.code(0, 2), 0);
  EXPECT_EQ(r.code(0, 3), -7);
}

TEST(S4, SplitScalesByHand) {
  // rows 0-1 share one scale (max 2 -> 2/127), row 2 its own (max 0.5 -> 0.5/127)
  const float w[] = {2.f, -1.f, 0.5f, 1.f, 0.25f, -0.5f};
  const int splits[] = {0, 2, 3};
  const QTensor q = quantize_weight_splits(w, 3, 2, splits, 8);
  ASSERT_EQ(q.granularity, Granularity::Channel);
  EXPECT_FLOAT_EQ(q.scales[0], 2.f / 127);
  EXPECT_FLOAT_EQ(q.scales[1], 2.f / 127);
  EXPECT_FLOAT_EQ(q.scales[2], 0.5f / 127);
  EXPECT_EQ(q.code(0, 0), 127);
  EXPECT_EQ(q.code(0, 1), -64);  // -63.5 -> -64 (half to even)
  EXPECT_EQ(q.code(2, 0), 64);   // 0.25 / (0.5/127) = 63.5 -> 64
  EXPECT_EQ(q.code(2, 1), -127);
}

// backend, M (1, 3: decode GEMV; 37: prefill), K, group (K = 96: a single 32-block tail for the
// 64-column SIMD step; K = 320 with group 128: a partial last group)
class GemmW4 : public ::testing::TestWithParam<std::tuple<std::string, int, int, int>> {};
TEST_P(GemmW4, W4A16MatchesReference) {
  const auto [name, M, K, group] = GetParam();
  mqtest::Dev d(name);
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S4, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const int N = 70, lda = K + 9, ldc = 75;
  const QTensor W = rand_s4(N, K, group, 3);
  auto A = mqtest::randn(size_t(M) * lda, 4);
  auto bias = mqtest::randn(size_t(N), 5);
  std::vector<float> a(size_t(M) * ldc, 0.f), b(size_t(M) * ldc, 0.f);
  ref::gemm_w4(M, N, K, A.data(), lda, W.s4(), W.scales.data(), group, bias.data(), a.data(), ldc);
  GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = act_f32(d.up(A), lda);
  g.W = w_s4(d.up(std::vector<uint8_t>(W.s4(), W.s4() + size_t(N) * K / 2)), N, K, group, d.up(W.scales));
  g.bias = d.up(bias), g.C = d.up(b), g.ldc = ldc;
  d.k.gemm(d.ctx, g);
  d.down_into(b, g.C);
  EXPECT_LT(rel_err(b, a), 1e-5);
  // the reference is the float GEMM over the dequantized weights (an independent path)
  const auto Wf = dequantize_weight(W);
  std::vector<float> c(size_t(M) * ldc, 0.f);
  ref::gemm(M, N, K, A.data(), lda, Wf.data(), bias.data(), c.data(), ldc);
  EXPECT_LT(rel_err(a, c), 1e-6);
}
TEST_P(GemmW4, W4A8MatchesReferenceAndIsExactOnIntegers) {
  const auto [name, M, K, group] = GetParam();
  mqtest::Dev d(name);
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S4, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const int N = 70, lda = K + 9, ldc = 75;
  const QTensor W = rand_s4(N, K, group, 6);
  auto A = rand_codes(size_t(M) * lda, 7);
  auto bias = mqtest::randn(size_t(N), 8);
  std::vector<float> a(size_t(M) * ldc, 0.f), b(size_t(M) * ldc, 0.f);
  ref::gemm_s8w4(M, N, K, A.data(), lda, 0.03f, W.s4(), W.scales.data(), group, bias.data(), a.data(), ldc);
  GemmArgs g;
  const uint8_t* wd = d.up(std::vector<uint8_t>(W.s4(), W.s4() + size_t(N) * K / 2));
  g.M = M, g.N = N, g.K = K, g.A = act_s8(d.up(A), lda, 0.03f), g.W = w_s4(wd, N, K, group, d.up(W.scales));
  g.bias = d.up(bias), g.C = d.up(b), g.ldc = ldc;
  d.k.gemm(d.ctx, g);
  d.down_into(b, g.C);
  EXPECT_LT(rel_err(b, a), 1e-5);
  // unit scales: every output is an integer sum below K * 127 * 8 < 2^24, exact in float
  const std::vector<float> ones(W.scales.size(), 1.f);
  ref::gemm_s8w4(M, N, K, A.data(), lda, 1.f, W.s4(), ones.data(), group, nullptr, a.data(), ldc);
  g.A.scale = 1.f, g.W = w_s4(wd, N, K, group, d.up(ones)), g.bias = nullptr;
  d.k.gemm(d.ctx, g);
  d.down_into(b, g.C);
  EXPECT_EQ(a, b);
  // independent: the int8 GEMM over the unpacked codes with unit scales
  std::vector<int8_t> codes(size_t(N) * K);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) codes[size_t(n) * K + k] = int8_t(W.code(n, k));
  std::vector<float> c(size_t(M) * ldc, 0.f);
  const float one = 1.f;
  ref::gemm_s8(M, N, K, A.data(), lda, 1.f, codes.data(), &one, false, nullptr, c.data(), ldc);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) ASSERT_EQ(a[size_t(m) * ldc + n], c[size_t(m) * ldc + n]) << m << "," << n;
}
INSTANTIATE_TEST_SUITE_P(Shapes, GemmW4,
                         ::testing::Combine(::testing::ValuesIn(mqtest::test_backends()), ::testing::Values(1, 3, 37),
                                            ::testing::Values(96, 320, 512), ::testing::Values(32, 128)));

// The grouped SSM-state kernels: a hand case, then every backend against the reference.
TEST(StateKernels, GroupedScalesByHand) {
  // H = 1, N = 2, P = 4, two dim groups [0, 1) and [1, 4); scales (n, j): (0,0) 1, (0,1) 0.5,
  // (1,0) 2, (1,1) 0.25
  const float x[8] = {2.5f, 1.0f, -0.3f, 100.f, 3.f, 0.125f, 0.375f, -1.f};
  const float sc[4] = {1.f, 0.5f, 2.f, 0.25f};
  const int de[2] = {1, 4};
  int8_t q[8];
  ref::state_quantize(x, q, 1, 2, 4, 2, sc, de);
  // 2.5 -> 2 (half to even); 1/0.5 = 2; -0.3/0.5 = -0.6 -> -1; 100/0.5 = 200 -> 127; 3/2 = 1.5 -> 2;
  // 0.125/0.25 = 0.5 -> 0; 0.375/0.25 = 1.5 -> 2; -1/0.25 = -4
  const int8_t want[8] = {2, 2, -1, 127, 2, 0, 2, -4};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(q[i], want[i]) << i;
}

class StateKernels : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Backends, StateKernels, ::testing::ValuesIn(mqtest::test_backends()));
TEST_P(StateKernels, MatchReference) {
  mqtest::Dev d(GetParam());
  if (!d.k.can(Op::StateQuantize, {DType::F32, WFormat::F32, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 states";
  const int H = 6, N = 16, P = 24, ndg = 4, n = H * N * P;
  const auto x = mqtest::randn(size_t(n), 51, 0.3f);
  const auto sc = mqtest::uniform(size_t(H) * N * ndg, 52, 0.002f, 0.01f);
  std::vector<int> de;
  for (int h = 0; h < H; ++h)
    for (int j : {1 + h % 3, 9, 20, P}) de.push_back(j);  // uneven groups, different per head
  std::vector<int8_t> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
  ref::state_quantize(x.data(), a.data(), H, N, P, ndg, sc.data(), de.data());
  const StateScalesView ss{ndg, d.up(sc), d.up(de)};
  int8_t* bd = d.up(b);
  d.k.state_quantize(d.ctx, d.up(x), bd, H, N, P, ss);
  d.down_into(b, bd);
  EXPECT_EQ(a, b);  // one multiply and one rounding each: exact
  std::vector<float> fa(static_cast<size_t>(n)), fb(static_cast<size_t>(n));
  ref::state_dequantize(a.data(), fa.data(), H, N, P, ndg, sc.data(), de.data());
  float* fbd = d.up(fb);
  d.k.state_dequantize(d.ctx, d.up(a), fbd, H, N, P, ss);
  d.down_into(fb, fbd);
  EXPECT_EQ(fa, fb);
  std::vector<float> ga(x), gb(x);
  ref::state_fake_quantize(ga.data(), H, N, P, ndg, sc.data(), de.data(), 8);
  float* gbd = d.up(gb);
  d.k.state_fake_quantize(d.ctx, gbd, H, N, P, ss, 8);
  d.down_into(gb, gbd);
  EXPECT_EQ(ga, gb);
  EXPECT_EQ(ga, fa);  // fake = dequantize(quantize)
}
