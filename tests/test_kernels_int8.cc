// int8 kernels against their scalar references on random data.
// Bounds: integer products are exact (int32), so the GEMMs differ from the reference only in the
// float epilogue (one multiply-add in float vs double): relative error < 1e-6. Requantized outputs
// (conv) may differ by one code where the float and double paths land on opposite sides of a
// rounding boundary: at most 1 code, in under 1 % of the elements. Scans on int8 inputs inherit
// the float scans' bound (2e-5).
#include "core/threads.h"
#include "kernels/backend.h"
#include "kernels/ref/ops.h"
#include "dev.h"
#include "util.h"

using namespace mambaq;
using mqtest::rand_codes;
using mqtest::rel_err;

// Every test runs on every backend (the reference backend included: its packed wrappers are
// checked against the one-sequence reference kernels).
class KernelsInt8 : public ::testing::TestWithParam<std::string> {
 protected:
  std::string bparam() const { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Backends, KernelsInt8, ::testing::ValuesIn(mqtest::test_backends()));

namespace {
}  // namespace

TEST_P(KernelsInt8, QuantizeRoundsHalfToEvenAndClamps) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const float x[] = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 126.6f, 300.f, -300.f, 0.49f, 3.2f};
  int8_t a[10], b[10];
  ref::quantize(x, 1, 10, 10, 1.0f, a, 10);
  int8_t* qd = d.alloc<int8_t>(10);
  d.k.quantize(d.ctx, d.up(std::vector<float>(x, x + 10)), 1, 10, 10, 1.0f, qd, 10);
  const auto bq = d.down(qd, 10);
  std::copy(bq.begin(), bq.end(), b);
  const int8_t want[] = {0, 2, 2, 0, -2, 127, 127, -127, 0, 3};  // by hand
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(a[i], want[i]) << i;
    EXPECT_EQ(b[i], want[i]) << i;
  }
}

TEST_P(KernelsInt8, QuantizeMatchesReference) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const int rows = 33, cols = 300, ldx = 310, ldq = 305;
  auto x = mqtest::randn(size_t(rows) * ldx, 1, 3.f);
  std::vector<int8_t> a(size_t(rows) * ldq), b(size_t(rows) * ldq);
  ref::quantize(x.data(), rows, cols, ldx, 0.05f, a.data(), ldq);
  int8_t* qd = d.up(b);
  d.k.quantize(d.ctx, d.up(x), rows, cols, ldx, 0.05f, qd, ldq);
  d.down_into(b, qd);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) ASSERT_EQ(a[size_t(r) * ldq + c], b[size_t(r) * ldq + c]) << r << "," << c;
}

// M = 1 and 3 take the GEMV path (K = 77: the vector tail), M = 37 a GEMM;
// K = 77 takes the exact-fp32 path for M > 4, K = 16 and 600 oneDNN's int8 GEMM.
class GemmS8 : public ::testing::TestWithParam<std::tuple<std::string, int, bool, int>> {  // backend, M, per row, K
 protected:
  std::string bparam() const { return std::get<0>(GetParam()); }
};
TEST_P(GemmS8, MatchesReference) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const auto [name, M, per_row, K] = GetParam();
  const int N = 70, lda = 610, ldc = 75;
  auto A = rand_codes(size_t(M) * lda, 2), W = rand_codes(size_t(N) * K, 3);
  auto ws = mqtest::uniform(per_row ? size_t(N) : 1, 4, 1e-3f, 2e-2f);
  auto bias = mqtest::randn(size_t(N), 5);
  std::vector<float> a(size_t(M) * ldc, 0.f), b(size_t(M) * ldc, 0.f);
  ref::gemm_s8(M, N, K, A.data(), lda, 0.03f, W.data(), ws.data(), per_row, bias.data(), a.data(), ldc);
  GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = act_s8(d.up(A), lda, 0.03f), g.W = w_s8(d.up(W), N, K, d.up(ws), per_row, ws[0]);
  g.bias = d.up(bias), g.C = d.up(b), g.ldc = ldc;
  d.k.gemm(d.ctx, g);
  d.down_into(b, g.C);
  EXPECT_LT(rel_err(b, a), 1e-6);
  // Without bias, exact integer products: compare the int32 sums recovered from the outputs.
  const std::vector<float> ones(size_t(N), 1.f);
  ref::gemm_s8(M, N, K, A.data(), lda, 1.f, W.data(), ones.data(), per_row, nullptr, a.data(), ldc);
  g.A.scale = 1.f, g.W = w_s8(g.W.s8(), N, K, d.up(ones), per_row, 1.f), g.bias = nullptr;
  d.k.gemm(d.ctx, g);
  d.down_into(b, g.C);
  EXPECT_EQ(a, b);
}
INSTANTIATE_TEST_SUITE_P(Shapes, GemmS8,
                         ::testing::Combine(::testing::ValuesIn(mqtest::test_backends()), ::testing::Values(1, 3, 37), ::testing::Values(false, true),
                                            ::testing::Values(16, 77, 600)));

TEST_P(KernelsInt8, Conv1dS8SiluPackedWithState) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const std::vector<int> lens{5, 1, 17, 3, 64};
  std::vector<int> offs{0};
  for (int l : lens) offs.push_back(offs.back() + l);
  const int T = offs.back(), C = 150, K = 4, ldx = 170, ldo = 160, nseq = int(lens.size());
  auto x = rand_codes(size_t(T) * ldx, 6), w = rand_codes(size_t(C) * K, 7);
  auto b = mqtest::randn(size_t(C), 8), os = mqtest::uniform(size_t(C), 9, 0.005f, 0.02f);
  const float sx = 0.02f, sw = 0.01f;
  std::vector<int8_t> a(size_t(T) * ldo, 0), o(size_t(T) * ldo, 0);
  std::vector<std::vector<int8_t>> st_ref;
  for (int s = 0; s < nseq; ++s)
    st_ref.push_back(s == 1 ? std::vector<int8_t>{} : rand_codes(size_t(K - 1) * C, 100 + uint32_t(s)));
  auto st = d.states(st_ref);
  for (int s = 0; s < nseq; ++s)
    ref::conv1d_s8_silu(x.data() + size_t(offs[size_t(s)]) * ldx, ldx, sx, lens[size_t(s)], C, K, w.data(), sw,
                        b.data(), s == 1 ? nullptr : st_ref[size_t(s)].data(), os.data(),
                        a.data() + size_t(offs[size_t(s)]) * ldo, ldo);
  ConvArgs ca;
  ca.b = d.batch(offs), ca.C = C, ca.K = K, ca.x = act_s8(d.up(x), ldx, sx);
  ca.w = w_s8(d.up(w), C, K, d.up(std::vector<float>{sw}), false, sw);
  ca.bias = d.up(b), ca.st = st.view(DType::I8), ca.out = d.up(o), ca.ldo = ldo, ca.out_scale = d.up(os);
  d.k.conv1d_silu(d.ctx, ca);
  d.down_into(o, static_cast<int8_t*>(ca.out));
  const auto st_fast = d.down_states(st, st_ref);
  int off_by_one = 0, nonzero = 0;
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      const int dd = std::abs(int(a[size_t(t) * ldo + c]) - int(o[size_t(t) * ldo + c]));
      ASSERT_LE(dd, 1) << t << "," << c;
      off_by_one += dd;
      nonzero += a[size_t(t) * ldo + c] != 0;
    }
  EXPECT_LT(off_by_one, T * C / 100);
  EXPECT_GT(nonzero, T * C / 2);  // the outputs are not trivially zero
  EXPECT_EQ(st_fast, st_ref);
}

TEST_P(KernelsInt8, SelectiveScanS8PackedWithState) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const std::vector<int> lens{5, 1, 17, 3, 64};
  std::vector<int> offs{0};
  for (int l : lens) offs.push_back(offs.back() + l);
  const int T = offs.back(), D = 64, N = 16, ld = 3 * D, ldbc = 2 * N + 5, nseq = int(lens.size());
  auto u = rand_codes(size_t(T) * ld, 10), delta = rand_codes(size_t(T) * ld, 11), z = rand_codes(size_t(T) * ld, 12);
  auto bc = rand_codes(size_t(T) * ldbc, 13);
  auto A = mqtest::uniform(size_t(D) * N, 14, -16.f, -0.5f), bias = mqtest::randn(size_t(D), 15, 0.5f, -2.f);
  auto Dsk = mqtest::randn(size_t(D), 16);
  std::vector<float> a(size_t(T) * D), o(size_t(T) * D);
  std::vector<std::vector<float>> st_ref;
  for (int s = 0; s < nseq; ++s) st_ref.push_back(mqtest::randn(size_t(D) * N, 200 + uint32_t(s)));
  auto st = d.states(st_ref);
  for (int s = 0; s < nseq; ++s) {
    const size_t o0 = size_t(offs[size_t(s)]);
    ref::selective_scan_s8(lens[size_t(s)], D, N, u.data() + o0 * ld, ld, 0.02f, delta.data() + o0 * ld, ld, 0.01f,
                           bias.data(), A.data(), bc.data() + o0 * ldbc, ldbc, 0.03f, bc.data() + o0 * ldbc + N, ldbc,
                           0.03f, Dsk.data(), z.data() + o0 * ld, ld, 0.04f, st_ref[size_t(s)].data(),
                           a.data() + o0 * D, D);
  }
  ScanArgs sa;
  int8_t* bcd = d.up(bc);
  sa.b = d.batch(offs), sa.D = D, sa.N = N, sa.u = act_s8(d.up(u), ld, 0.02f), sa.delta = act_s8(d.up(delta), ld, 0.01f);
  sa.delta_bias = d.up(bias), sa.A = d.up(A), sa.B = act_s8(bcd, ldbc, 0.03f), sa.C = act_s8(bcd + N, ldbc, 0.03f);
  sa.Dskip = d.up(Dsk), sa.z = act_s8(d.up(z), ld, 0.04f), sa.st = st.view(DType::F32), sa.y = d.up(o), sa.ldy = D;
  d.k.selective_scan(d.ctx, sa);
  d.down_into(o, sa.y);
  const auto st_fast = d.down_states(st, st_ref);
  EXPECT_LT(rel_err(o, a), 2e-5);
  for (int s = 0; s < nseq; ++s) EXPECT_LT(rel_err(st_fast[size_t(s)], st_ref[size_t(s)]), 2e-5);
}

TEST_P(KernelsInt8, SsdScanS8PackedWithState) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const std::vector<int> lens{5, 1, 17, 3, 64};
  std::vector<int> offs{0};
  for (int l : lens) offs.push_back(offs.back() + l);
  const int T = offs.back(), H = 8, P = 16, G = 2, N = 32, ldx = H * P + 3, lddt = H + 1, ldbc = 2 * G * N + 7;
  const int nseq = int(lens.size());
  auto x = rand_codes(size_t(T) * ldx, 20), dt = rand_codes(size_t(T) * lddt, 21), bc = rand_codes(size_t(T) * ldbc, 22);
  auto A = mqtest::uniform(size_t(H), 23, -8.f, -0.5f), bias = mqtest::randn(size_t(H), 24, 0.5f, -2.f);
  auto Dsk = mqtest::randn(size_t(H), 25);
  std::vector<float> a(size_t(T) * H * P), o(size_t(T) * H * P);
  std::vector<std::vector<float>> st_ref;
  for (int s = 0; s < nseq; ++s) st_ref.push_back(mqtest::randn(size_t(H) * N * P, 300 + uint32_t(s)));
  auto st = d.states(st_ref);
  // per-channel x scales and per-column B, C scales (Quamba2's grouped scales), all different
  auto sx = mqtest::uniform(size_t(H) * P, 26, 0.01f, 0.03f), sb = mqtest::uniform(size_t(G) * N, 27, 0.02f, 0.04f),
       sc = mqtest::uniform(size_t(G) * N, 28, 0.02f, 0.04f);
  for (int s = 0; s < nseq; ++s) {
    const size_t o0 = size_t(offs[size_t(s)]);
    ref::ssd_scan_s8(lens[size_t(s)], H, P, G, N, x.data() + o0 * ldx, ldx, sx.data(), dt.data() + o0 * lddt, lddt,
                     0.01f, bias.data(), A.data(), bc.data() + o0 * ldbc, ldbc, sb.data(), bc.data() + o0 * ldbc + G * N,
                     ldbc, sc.data(), Dsk.data(), st_ref[size_t(s)].data(), a.data() + o0 * H * P, H * P);
  }
  SsdArgs sa;
  int8_t* bcd = d.up(bc);
  sa.b = d.batch(offs), sa.H = H, sa.P = P, sa.G = G, sa.N = N, sa.x = act_s8(d.up(x), ldx, sx[0], d.up(sx));
  sa.dt = act_s8(d.up(dt), lddt, 0.01f), sa.dt_bias = d.up(bias), sa.A = d.up(A);
  sa.B = act_s8(bcd, ldbc, sb[0], d.up(sb)), sa.C = act_s8(bcd + G * N, ldbc, sc[0], d.up(sc)), sa.Dskip = d.up(Dsk);
  sa.st = st.view(DType::F32), sa.y = d.up(o), sa.ldy = H * P;
  d.k.ssd_scan(d.ctx, sa);
  d.down_into(o, sa.y);
  const auto st_fast = d.down_states(st, st_ref);
  EXPECT_LT(rel_err(o, a), 2e-5);
  for (int s = 0; s < nseq; ++s) EXPECT_LT(rel_err(st_fast[size_t(s)], st_ref[size_t(s)]), 2e-5);
}

// The decode step on int8 states against (1) the same backend's unfused path, which it must equal
// exactly (it replaces that path in decode: results must not change), and (2) the reference
// definition (dequantize, one scan step, quantize): y to 2e-5 relative (the float kernels' bound
// above), and state codes equal except where the float state lands within rounding of a .5
// boundary (at most one code step, on a tiny share).
TEST_P(KernelsInt8, SsdDecodeStepOnInt8StatesEqualsTheUnfusedPath) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const int nseq = 3, H = 8, P = 64, G = 2, N = 16, ndg = 3, ldx = H * P + 5, lddt = H + 2, ldbc = 2 * G * N + 3;
  auto x = rand_codes(size_t(nseq) * ldx, 50), dt = rand_codes(size_t(nseq) * lddt, 51),
       bc = rand_codes(size_t(nseq) * ldbc, 52);
  auto A = mqtest::uniform(size_t(H), 53, -8.f, -0.5f), bias = mqtest::randn(size_t(H), 54, 0.5f, -2.f);
  auto Dsk = mqtest::randn(size_t(H), 55);
  auto sx = mqtest::uniform(size_t(H) * P, 56, 0.01f, 0.03f), sb = mqtest::uniform(size_t(G) * N, 57, 0.02f, 0.04f),
       sc = mqtest::uniform(size_t(G) * N, 58, 0.02f, 0.04f);
  // grouped state scales {H, N, ndg}, runs of P ending at dim_end {H, ndg}: uneven, per head
  auto sst = mqtest::uniform(size_t(H) * N * ndg, 59, 0.002f, 0.02f);
  std::vector<int> dim_end;
  for (int h = 0; h < H; ++h) dim_end.insert(dim_end.end(), {8 + 2 * h, 40 + h, P});
  std::vector<std::vector<int8_t>> q0;
  for (int s = 0; s < nseq; ++s) q0.push_back(rand_codes(size_t(H) * N * P, 60 + uint32_t(s)));
  const StateScalesView ss{ndg, d.up(sst), d.up(dim_end)};
  int8_t* bcd = d.up(bc);
  SsdArgs sa;
  const std::vector<int> offs{0, 1, 2, 3};
  sa.b = d.batch(offs), sa.H = H, sa.P = P, sa.G = G, sa.N = N, sa.x = act_s8(d.up(x), ldx, sx[0], d.up(sx));
  sa.dt = act_s8(d.up(dt), lddt, 0.01f), sa.dt_bias = d.up(bias), sa.A = d.up(A);
  sa.B = act_s8(bcd, ldbc, sb[0], d.up(sb)), sa.C = act_s8(bcd + G * N, ldbc, sc[0], d.up(sc)), sa.Dskip = d.up(Dsk);
  sa.ldy = H * P;
  // (1) the unfused path on this backend: dequantize, the scan with T = 1, quantize
  auto qs = d.states(q0);
  std::vector<std::vector<float>> f0(nseq, std::vector<float>(size_t(H) * N * P));
  auto fs = d.states(f0);
  for (int s = 0; s < nseq; ++s) d.k.state_dequantize(d.ctx, qs.ptrs[size_t(s)], fs.ptrs[size_t(s)], H, N, P, ss);
  std::vector<float> y_unf(size_t(nseq) * H * P), y_fused(y_unf.size()), y_ref(y_unf.size());
  sa.st = fs.view(DType::F32), sa.y = d.up(y_unf);
  d.k.ssd_scan(d.ctx, sa);
  d.down_into(y_unf, sa.y);
  for (int s = 0; s < nseq; ++s) d.k.state_quantize(d.ctx, fs.ptrs[size_t(s)], qs.ptrs[size_t(s)], H, N, P, ss);
  const auto q_unf = d.down_states(qs, q0);
  // the fused step: int8 states in the arguments
  auto qf = d.states(q0);
  sa.st = qf.view(DType::I8), sa.qs = ss, sa.y = d.up(y_fused);
  d.k.ssd_scan(d.ctx, sa);
  d.down_into(y_fused, sa.y);
  const auto q_fused = d.down_states(qf, q0);
  EXPECT_EQ(y_fused, y_unf);
  EXPECT_EQ(q_fused, q_unf);
  size_t moved = 0;
  for (int s = 0; s < nseq; ++s) moved += q_fused[size_t(s)] != q0[size_t(s)];
  EXPECT_EQ(moved, size_t(nseq));  // the step changed every state (not a no-op)
  // (2) the reference definition, by hand from the one-sequence references
  auto q_ref = q0;
  std::vector<float> stf(size_t(H) * N * P);
  for (int s = 0; s < nseq; ++s) {
    ref::state_dequantize(q_ref[size_t(s)].data(), stf.data(), H, N, P, ndg, sst.data(), dim_end.data());
    ref::ssd_scan_s8(1, H, P, G, N, x.data() + size_t(s) * ldx, ldx, sx.data(), dt.data() + size_t(s) * lddt, lddt, 0.01f,
                     bias.data(), A.data(), bc.data() + size_t(s) * ldbc, ldbc, sb.data(), bc.data() + size_t(s) * ldbc + G * N,
                     ldbc, sc.data(), Dsk.data(), stf.data(), y_ref.data() + size_t(s) * H * P, H * P);
    ref::state_quantize(stf.data(), q_ref[size_t(s)].data(), H, N, P, ndg, sst.data(), dim_end.data());
  }
  EXPECT_LT(rel_err(y_fused, y_ref), 2e-5);
  size_t diff = 0, total = 0;
  for (int s = 0; s < nseq; ++s)
    for (size_t i = 0; i < q_ref[size_t(s)].size(); ++i, ++total) {
      const int dd = std::abs(int(q_fused[size_t(s)][i]) - int(q_ref[size_t(s)][i]));
      EXPECT_LE(dd, 1);
      diff += dd != 0;
    }
  EXPECT_LE(diff, total / 1000);
}

TEST_P(KernelsInt8, DequantizeAndFakeQuantizeMatchReference) {
  mqtest::Dev d(bparam());
  if (!d.k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8})) GTEST_SKIP() << d.k.name << " declines int8 operands (Backend::supports)";
  const int rows = 21, cols = 130, ld = 140;
  auto codes = rand_codes(size_t(rows) * ld, 40);
  std::vector<float> a(size_t(rows) * ld, 7.f), b(a);
  ref::dequantize(codes.data(), rows, cols, ld, 0.037f, a.data(), ld);
  float* bd = d.up(b);
  d.k.dequantize(d.ctx, d.up(codes), rows, cols, ld, 0.037f, bd, ld);
  d.down_into(b, bd);
  EXPECT_EQ(a, b);  // one float multiply each: exact
  // fake quantization: round half to even and clamp, by hand, then against the reference
  std::vector<float> x = {0.5f, 1.5f, -2.5f, 200.f, -200.f, 0.26f};
  float* xd = d.up(x);
  d.k.fake_quantize(d.ctx, xd, 1, 6, 6, 1.0f, 8);
  d.down_into(x, xd);
  const float want[] = {0.f, 2.f, -2.f, 127.f, -127.f, 0.f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(x[i], want[i]) << i;
  auto v = mqtest::randn(size_t(rows) * ld, 41, 3.f), w = v;
  ref::fake_quantize(v.data(), rows, cols, ld, 0.05f, 8);
  float* wd = d.up(w);
  d.k.fake_quantize(d.ctx, wd, rows, cols, ld, 0.05f, 8);
  d.down_into(w, wd);
  EXPECT_EQ(v, w);  // the same float division and rounding; the stride leaves the gap untouched
  auto y = mqtest::randn(size_t(rows) * ld, 42), r1 = mqtest::randn(size_t(rows) * ld, 43), r2 = r1;
  ref::add(r1.data(), y.data(), y.size());
  float* rd = d.up(r2);
  d.k.add(d.ctx, rd, d.up(y), y.size());
  d.down_into(r2, rd);
  EXPECT_EQ(r1, r2);
}
