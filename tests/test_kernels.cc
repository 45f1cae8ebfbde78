// Every fast kernel against its reference on random data (never zeros), by relative error.
// Bounds: fast kernels compute in fp32 with vectorised exp/log (relative error < 3e-7 each)
// and a different summation order than the double-precision references, so outputs agree to
// ~1e-6 relative; we allow 1e-5 (2e-5 for scans, whose state compounds rounding over T steps).
#include "core/half.h"
#include "core/threads.h"
#include "dev.h"
#include "kernels/backend.h"
#include "kernels/cpu/vmath.h"
#include "kernels/hadamard.h"
#include "kernels/ref/ops.h"
#include "util.h"

using namespace mambaq;
using mqtest::rel_err;
using namespace mambaq::MAMBAQ_CPU_NS;  // vmath.h

// Every test runs on every backend (the reference backend included: its packed wrappers are
// checked against the one-sequence reference kernels; and the checked backend, which refuses any
// pointer it did not allocate). Inputs are built on the host, uploaded, run, downloaded
// (tests/dev.h), so a device backend runs these tests unchanged.
class Kernels : public ::testing::TestWithParam<std::string> {
 protected:
  std::string bparam() const { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Backends, Kernels, ::testing::ValuesIn(mqtest::test_backends()));

TEST(VMath, ExpLogSoftplusMatchLibm) {
  double worst_exp = 0, worst_log = 0, worst_sp = 0;
  for (float x = -80.f; x < 80.f; x += 0.0137f) {
    worst_exp = std::max(worst_exp, std::abs(fast_exp(x) / std::exp(double(x)) - 1));
    worst_sp = std::max(worst_sp, std::abs(softplus(x) / std::log1p(std::exp(double(x))) - 1));
  }
  for (float x = 1e-30f; x < 1e30f; x *= 1.37f)
    worst_log =
        std::max(worst_log, std::abs(fast_log(x) - std::log(double(x))) / std::max(1.0, std::abs(std::log(double(x)))));
  EXPECT_LT(worst_exp, 5e-7);
  EXPECT_LT(worst_log, 5e-7);
  EXPECT_LT(worst_sp, 1e-6);
  EXPECT_EQ(softplus(30.f), 30.f);  // torch's threshold
}

TEST_P(Kernels, RmsNorm) {
  mqtest::Dev d(bparam());
  const int T = 37, D = 200;
  auto x = mqtest::randn(size_t(T) * D, 1, 2.f), w = mqtest::randn(size_t(D), 2, 1.f, 1.f);
  std::vector<float> a(x.size()), b(x.size());
  ref::rmsnorm(x.data(), w.data(), a.data(), T, D, 1e-5f);
  float* o = d.alloc<float>(b.size());
  d.k.rmsnorm(d.ctx, d.up(x), d.up(w), o, T, D, 1e-5f);
  d.down_into(b, o);
  EXPECT_LT(rel_err(b, a), 1e-6);
}

TEST_P(Kernels, Gemm) {
  mqtest::Dev d(bparam());
  // 1, 4 and 2: a device's decode-sized GEMV (K % 8 == 0, aligned rows; K 1032: a row shared
  // among warps, with a tail)
  for (const int M : {19, 1, 4, 2}) {
    const int N = 70, K = M == 19 ? 33 : M == 2 ? 1032 : 64, lda = M == 19 ? 40 : M == 2 ? 1036 : 68, ldc = 75;
    auto A = mqtest::randn(size_t(M) * lda, 3), W = mqtest::randn(size_t(N) * K, 4), bias = mqtest::randn(size_t(N), 5);
    std::vector<float> a(size_t(M) * ldc, 0.f), b(size_t(M) * ldc, 0.f);
    ref::gemm(M, N, K, A.data(), lda, W.data(), bias.data(), a.data(), ldc);
    GemmArgs g;
    g.M = M, g.N = N, g.K = K, g.A = act_f32(d.up(A), lda), g.W = w_f32(d.up(W), N, K), g.bias = d.up(bias);
    g.C = d.up(b), g.ldc = ldc;
    d.k.gemm(d.ctx, g);
    d.down_into(b, g.C);
    EXPECT_LT(rel_err(b, a), 1e-6) << "M " << M;
  }
}

// A row's result does not depend on how many rows are multiplied with it or on the thread count
// (a document's score must not depend on its batch). Shapes of the fixtures' and Mamba-130m's
// projections (x_proj: N = dt_rank + 2 d_state, K = d_inner), where oneDNN's threaded sgemm splits K
// between two threads on an AVX2 EPYC. Host backends: bit for bit; a device backend may pick
// another algorithm per row count (cuBLAS heuristics), bound: 1e-6 relative.
TEST_P(Kernels, GemmRowsDoNotDependOnRowOrThreadCount) {
  mqtest::Dev d(bparam());
  struct Shape {
    int N, K;
  };
  for (const Shape s : {Shape{48, 512}, Shape{1024, 256}, Shape{256, 512}, Shape{80, 1536}, Shape{1536, 768}}) {
    const int Mmax = 160;
    auto A = mqtest::randn(size_t(Mmax) * s.K, 70), W = mqtest::randn(size_t(s.N) * s.K, 71, 0.05f);
    const float* Ad = d.up(A);
    const float* Wd = d.up(W);
    auto run = [&](int M, int threads) {
      set_num_threads(threads);
      GemmArgs g;
      g.M = M, g.N = s.N, g.K = s.K, g.A = act_f32(Ad, s.K), g.W = w_f32(Wd, s.N, s.K);
      g.C = d.alloc<float>(size_t(M) * s.N), g.ldc = s.N;
      d.k.gemm(d.ctx, g);
      set_num_threads(0);
      return d.down(g.C, size_t(M) * s.N);
    };
    const auto want = run(Mmax, 1);
    for (const int M : {16, 17, 40, Mmax})
      for (const int threads : {1, 2, 3}) {
        const auto got = run(M, threads);
        const std::vector<float> head(want.begin(), want.begin() + std::ptrdiff_t(got.size()));
        if (d.k.host_memory)
          EXPECT_EQ(got, head) << "N " << s.N << " K " << s.K << " M " << M << " threads " << threads;
        else
          EXPECT_LT(rel_err(got, head), 1e-6) << "N " << s.N << " K " << s.K << " M " << M;
      }
  }
}

// The cpu GEMM's fixed order of operations (kernels/cpu/gemm.cc), in scalar form: L lanes (16 on
// x86-64-v4, 8 on v3, 4 on v2), lane k % L accumulating A[m][k] W[n][k] in k order (fused on v3/v4;
// the product rounded first on v2, which has no FMA), then the lanes summed pairwise.
float dot_in_fixed_order(const float* a, const float* w, int K, int L, bool fused) {
  float s[16] = {};
  for (int k = 0; k < K; ++k) {
    if (fused) {
      s[k % L] = std::fma(a[k], w[k], s[k % L]);
    } else {
      volatile float p = a[k] * w[k];  // rounded on its own (no contraction into an FMA)
      s[k % L] = s[k % L] + p;
    }
  }
  for (int h = L / 2; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) s[l] = s[l] + s[l + h];
  return s[0];
}

TEST_P(Kernels, CpuGemmIsItsStatedOrderBitForBit) {
  mqtest::Dev d(bparam());
  const std::string name = d.k.name;
  if (!name.starts_with("cpu-v")) GTEST_SKIP() << "the order is the cpu variants' contract";
  const bool fused = name != "cpu-v2";
  const int lanes = name == "cpu-v4" ? 16 : name == "cpu-v3" ? 8 : 4;
  struct Shape {
    int M, N, K;
  };
  for (const Shape s : {Shape{1, 70, 33}, Shape{5, 13, 16}, Shape{19, 70, 777}, Shape{67, 131, 200}, Shape{3, 2, 5}}) {
    const int lda = s.K + 3, ldc = s.N + 5;
    auto A = mqtest::randn(size_t(s.M) * lda, 80), W = mqtest::randn(size_t(s.N) * s.K, 81),
         bias = mqtest::randn(size_t(s.N), 82);
    for (const bool with_bias : {false, true}) {
      std::vector<float> want(size_t(s.M) * ldc, -7.f);
      for (int m = 0; m < s.M; ++m)
        for (int n = 0; n < s.N; ++n)
          want[size_t(m) * ldc + n] =
              dot_in_fixed_order(A.data() + size_t(m) * lda, W.data() + size_t(n) * s.K, s.K, lanes, fused) +
              (with_bias ? bias[size_t(n)] : 0.f);
      GemmArgs g;
      g.M = s.M, g.N = s.N, g.K = s.K, g.A = act_f32(d.up(A), lda), g.W = w_f32(d.up(W), s.N, s.K);
      g.bias = with_bias ? d.up(bias) : nullptr;
      g.C = d.up(std::vector<float>(want.size(), -7.f)), g.ldc = ldc;
      d.k.gemm(d.ctx, g);
      EXPECT_EQ(d.down(g.C, want.size()), want) << "M " << s.M << " N " << s.N << " K " << s.K << " bias " << with_bias;
    }
  }
}

// F16/BF16 weights (--dtype): C = round(A to W's type) W^T + bias, sums in float. Expected: the
// rounded operands (core/half.h, round to nearest even) multiplied in double. Bound 1e-5: the
// products of two 16-bit values are exact in fp32, so only the order and rounding of the fp32 sums
// differ (about sqrt(K) * 6e-8 = 2e-6 relative for K = 777).
TEST_P(Kernels, GemmSixteenBitWeights) {
  mqtest::Dev d(bparam());
  struct Shape {
    int M, K, lda;
  };
  // a prefill-sized product, and decode-sized ones (a device's GEMV: aligned rows, K % 8 == 0)
  // (K 4096 / 4104 with N 70: a device GEMV may share each row among several warps, with a tail)
  for (const Shape sh : {Shape{21, 777, 780}, Shape{1, 776, 776}, Shape{3, 768, 772}, Shape{1, 4096, 4096},
                         Shape{4, 4104, 4108}})
    for (const WFormat wf : {WFormat::BF16, WFormat::F16}) {
      const int M = sh.M, N = 70, K = sh.K, lda = sh.lda, ldc = 75;
      auto A = mqtest::randn(size_t(M) * lda, 90), Wf = mqtest::randn(size_t(N) * K, 91, 0.05f),
           bias = mqtest::randn(size_t(N), 92);
      SCOPED_TRACE(std::string(wformat_name(wf)) + " M " + std::to_string(M));
      if (!d.k.can(Op::Gemm, {DType::F32, wf})) {
        ADD_FAILURE() << "every backend runs 16-bit weights (the host ones by widening)";
        continue;
      }
      const bool bf = wf == WFormat::BF16;
      auto round = [&](float x) { return bf ? bf16_to_f32(f32_to_bf16(x)) : f16_to_f32(f32_to_f16(x)); };
      std::vector<uint16_t> W16(Wf.size());
      for (size_t i = 0; i < Wf.size(); ++i) W16[i] = bf ? f32_to_bf16(Wf[i]) : f32_to_f16(Wf[i]);
      std::vector<float> want(size_t(M) * ldc, -3.f);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double s = bias[size_t(n)];
          for (int k = 0; k < K; ++k)
            s += double(round(A[size_t(m) * lda + size_t(k)])) *
                 double(bf ? bf16_to_f32(W16[size_t(n) * K + size_t(k)]) : f16_to_f32(W16[size_t(n) * K + size_t(k)]));
          want[size_t(m) * ldc + size_t(n)] = float(s);
        }
      GemmArgs g;
      g.M = M, g.N = N, g.K = K, g.A = act_f32(d.up(A), lda);
      g.W = {d.up(W16), wf, N, K, Granularity::Tensor, 0, nullptr, 0.f};
      g.bias = d.up(bias), g.C = d.up(std::vector<float>(want.size(), -3.f)), g.ldc = ldc;
      d.k.gemm(d.ctx, g);
      const auto got = d.down(g.C, want.size());
      EXPECT_LT(rel_err(got, want), 1e-5);
      for (int m = 0; m < M; ++m)  // the padding between rows is not written
        for (int n = N; n < ldc; ++n) EXPECT_EQ(got[size_t(m) * ldc + size_t(n)], -3.f);
      // the activations really are rounded: unrounded A would be ~1e-3 away (bf16) / ~1e-4 (fp16)
      std::vector<float> unrounded(want.size(), -3.f);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double s = bias[size_t(n)];
          for (int k = 0; k < K; ++k)
            s += double(A[size_t(m) * lda + size_t(k)]) *
                 double(bf ? bf16_to_f32(W16[size_t(n) * K + size_t(k)]) : f16_to_f32(W16[size_t(n) * K + size_t(k)]));
          unrounded[size_t(m) * ldc + size_t(n)] = float(s);
        }
      EXPECT_GT(rel_err(got, unrounded), 1e-5);
    }
}

// Sequences of different lengths packed back to back, some with a carried state, some without.
struct Packed {
  std::vector<int> lens;
  std::vector<int> offs;
  int T = 0;
  Packed() : Packed(std::vector<int>{5, 1, 17, 3, 64}) {}
  explicit Packed(std::vector<int> ls) : lens(std::move(ls)) {
    offs.push_back(0);
    for (int l : lens) offs.push_back(T += l);
  }
  int n() const { return int(lens.size()); }
};

TEST_P(Kernels, Conv1dSiluPackedWithState) {
  // a prefill batch (the state-less sequence is 1 long), then sequences shorter than the window
  // with states: decode steps (1 token) and a 2-token one, which shift only part of the state
  for (const std::vector<int>& lens : {std::vector<int>{5, 1, 17, 3, 64}, std::vector<int>{1, 9, 1, 2, 1}}) {
    SCOPED_TRACE(::testing::Message() << "lens " << lens[0] << "," << lens[1] << "," << lens[2] << ",...");
    mqtest::Dev d(bparam());
    Packed p(lens);
    const int C = 150, K = 4, ldx = 170, ldo = 160;
    auto x = mqtest::randn(size_t(p.T) * ldx, 6), w = mqtest::randn(size_t(C) * K, 7, 0.5f),
         b = mqtest::randn(size_t(C), 8);
    std::vector<float> a(size_t(p.T) * ldo, 0.f), o(size_t(p.T) * ldo, 0.f);
    std::vector<std::vector<float>> st_ref;
    for (int s = 0; s < p.n(); ++s)
      st_ref.push_back(s == 1 ? std::vector<float>{} : mqtest::randn(size_t(K - 1) * C, 100 + uint32_t(s)));
    auto st = d.states(st_ref);
    for (int s = 0; s < p.n(); ++s)
      ref::conv1d_silu(x.data() + size_t(p.offs[size_t(s)]) * ldx, ldx, p.lens[size_t(s)], C, K, w.data(), b.data(),
                       s == 1 ? nullptr : st_ref[size_t(s)].data(), a.data() + size_t(p.offs[size_t(s)]) * ldo, ldo);
    ConvArgs c;
    c.b = d.batch(p.offs), c.C = C, c.K = K, c.x = act_f32(d.up(x), ldx), c.w = w_f32(d.up(w), C, K), c.bias = d.up(b);
    c.st = st.view(DType::F32), c.out = d.up(o), c.ldo = ldo;
    d.k.conv1d_silu(d.ctx, c);
    d.down_into(o, static_cast<float*>(c.out));
    EXPECT_LT(rel_err(o, a), 1e-5);
    const auto st_fast = d.down_states(st, st_ref);
    for (int s = 0; s < p.n(); ++s) EXPECT_EQ(st_fast[size_t(s)], st_ref[size_t(s)]) << "state of sequence " << s;
  }
}

// Both scans: a prefill batch of short sequences, then long ones that backends may cut into
// chunks of time (2100: more than 32 chunks of 64 tokens), with and without carried states.
const std::vector<std::vector<int>> kScanLens = {{5, 1, 17, 3, 64}, {2100, 1, 130, 65, 64}, {16, 1, 9, 3}};

TEST_P(Kernels, SelectiveScanPackedWithState) {
  for (const auto& lens : kScanLens) {
    SCOPED_TRACE(::testing::Message() << "lens " << lens[0] << "," << lens[1] << "," << lens[2] << ",...");
    mqtest::Dev d(bparam());
    Packed p(lens);
    const int D = 64, N = 16, ld = 3 * D, ldbc = 2 * N + 5;
    auto u = mqtest::randn(size_t(p.T) * ld, 10), delta = mqtest::randn(size_t(p.T) * ld, 11, 1.f, -3.f);
    auto z = mqtest::randn(size_t(p.T) * ld, 12), bc = mqtest::randn(size_t(p.T) * ldbc, 13);
    auto A = mqtest::uniform(size_t(D) * N, 14, -16.f, -0.5f), bias = mqtest::randn(size_t(D), 15, 0.5f);
    auto Dk = mqtest::randn(size_t(D), 16);
    std::vector<float> a(size_t(p.T) * D, 0.f), o(size_t(p.T) * D, 0.f);
    std::vector<std::vector<float>> st_ref;
    for (int s = 0; s < p.n(); ++s)
      st_ref.push_back(s == 3 ? std::vector<float>{} : mqtest::randn(size_t(D) * N, 200 + uint32_t(s)));
    auto st = d.states(st_ref);
    for (int s = 0; s < p.n(); ++s) {
      const size_t o0 = size_t(p.offs[size_t(s)]);
      ref::selective_scan(p.lens[size_t(s)], D, N, u.data() + o0 * ld, ld, delta.data() + o0 * ld, ld, bias.data(),
                          A.data(), bc.data() + o0 * ldbc, ldbc, bc.data() + o0 * ldbc + N, ldbc, Dk.data(),
                          z.data() + o0 * ld, ld, s == 3 ? nullptr : st_ref[size_t(s)].data(), a.data() + o0 * D, D);
    }
    ScanArgs sa;
    float* bcd = d.up(bc);
    sa.b = d.batch(p.offs), sa.D = D, sa.N = N, sa.u = act_f32(d.up(u), ld), sa.delta = act_f32(d.up(delta), ld);
    sa.delta_bias = d.up(bias), sa.A = d.up(A), sa.B = act_f32(bcd, ldbc), sa.C = act_f32(bcd + N, ldbc);
    sa.Dskip = d.up(Dk), sa.z = act_f32(d.up(z), ld), sa.st = st.view(DType::F32), sa.y = d.up(o), sa.ldy = D;
    d.k.selective_scan(d.ctx, sa);
    d.down_into(o, sa.y);
    const auto st_fast = d.down_states(st, st_ref);
    EXPECT_LT(rel_err(o, a), 2e-5);
    for (int s = 0; s < p.n(); ++s)
      if (s != 3) {
        EXPECT_LT(rel_err(st_fast[size_t(s)], st_ref[size_t(s)]), 2e-5) << "state of sequence " << s;
      }
  }
}

class SsdScan : public ::testing::TestWithParam<std::tuple<std::string, int>> {  // backend, ngroups
 protected:
  std::string bparam() const { return std::get<0>(GetParam()); }
  void check(const std::vector<int>& lens, int H, int P, int N);
};

// Sequences of 5 / 1 / 17 / 3 / 64, 2100 / 1 / 130 / 65 / 64 and 16 / 1 / 9 / 3 tokens (cuda: one
// token and a multiple of its 64-token chunks, more than 32 chunks, tails; only short ones, which
// run the recurrence), sequence 0 from an empty state.
// Bound 2e-5 (relative L2): float sums in another order (the chunked form's products over
// tokens and states) and exp of a sum where the recurrence multiplies exps.
TEST_P(SsdScan, PackedWithState) {
  for (const auto& lens : kScanLens) check(lens, 8, 16, 32);
}
// A published head (headdim 64, d_state 128: every Mamba2 checkpoint's), so the tiles of the
// chunked form run whole, over chunk boundaries.
TEST_P(SsdScan, PublishedHeadShape) { check({200, 1, 64, 65, 3}, 8, 64, 128); }
// d_state and headdim not multiples of 4 (cuda: the chunked form declines them; the recurrence
// runs long sequences in its chunked passes).
TEST_P(SsdScan, OddStateShape) { check({200, 1, 130, 3}, 4, 6, 30); }
INSTANTIATE_TEST_SUITE_P(Groups, SsdScan,
                         ::testing::Combine(::testing::ValuesIn(mqtest::test_backends()), ::testing::Values(1, 2, 4)));

void SsdScan::check(const std::vector<int>& lens, int H, int P, int N) {
  {
    SCOPED_TRACE(::testing::Message() << "lens " << lens[0] << "," << lens[1] << "," << lens[2] << ",... H " << H
                                      << " P " << P << " N " << N);
    mqtest::Dev d(bparam());
    Packed p(lens);
    const int G = std::get<1>(GetParam()), ldx = H * P + 7, ldbc = 2 * G * N + 3, lddt = H + 2;
    auto x = mqtest::randn(size_t(p.T) * ldx, 20), bc = mqtest::randn(size_t(p.T) * ldbc, 21);
    auto dt = mqtest::randn(size_t(p.T) * lddt, 22, 1.f, -2.f), A = mqtest::uniform(size_t(H), 23, -8.f, -1.f);
    auto dtb = mqtest::randn(size_t(H), 24, 0.5f), Dk = mqtest::randn(size_t(H), 25);
    std::vector<float> a(size_t(p.T) * H * P, 0.f), o(a.size(), 0.f);
    std::vector<std::vector<float>> st_ref;
    for (int s = 0; s < p.n(); ++s)
      st_ref.push_back(s == 0 ? std::vector<float>{} : mqtest::randn(size_t(H) * P * N, 300 + uint32_t(s)));
    auto st = d.states(st_ref);
    for (int s = 0; s < p.n(); ++s) {
      const size_t o0 = size_t(p.offs[size_t(s)]);
      ref::ssd_scan(p.lens[size_t(s)], H, P, G, N, x.data() + o0 * ldx, ldx, dt.data() + o0 * lddt, lddt, dtb.data(),
                    A.data(), bc.data() + o0 * ldbc, ldbc, bc.data() + o0 * ldbc + G * N, ldbc, Dk.data(),
                    s == 0 ? nullptr : st_ref[size_t(s)].data(), a.data() + o0 * H * P, H * P);
    }
    SsdArgs sa;
    float* bcd = d.up(bc);
    sa.b = d.batch(p.offs), sa.H = H, sa.P = P, sa.G = G, sa.N = N, sa.x = act_f32(d.up(x), ldx);
    sa.dt = act_f32(d.up(dt), lddt), sa.dt_bias = d.up(dtb), sa.A = d.up(A), sa.B = act_f32(bcd, ldbc);
    sa.C = act_f32(bcd + G * N, ldbc), sa.Dskip = d.up(Dk), sa.st = st.view(DType::F32), sa.y = d.up(o), sa.ldy = H * P;
    d.k.ssd_scan(d.ctx, sa);
    d.down_into(o, sa.y);
    const auto st_fast = d.down_states(st, st_ref);
    EXPECT_LT(rel_err(o, a), 2e-5);
    for (int s = 1; s < p.n(); ++s) EXPECT_LT(rel_err(st_fast[size_t(s)], st_ref[size_t(s)]), 2e-5);
  }
}

TEST_P(Kernels, GatedRmsNormBothOrders) {
  mqtest::Dev d(bparam());
  const int T = 9, D = 96, ldz = 110;
  for (int group : {96, 24})
    for (bool nbg : {false, true}) {
      auto y = mqtest::randn(size_t(T) * D, 30), z = mqtest::randn(size_t(T) * ldz, 31),
           w = mqtest::randn(size_t(D), 32, 0.2f, 1.f);
      auto a = y, b = y;
      ref::gated_rmsnorm(a.data(), z.data(), ldz, w.data(), T, D, group, 1e-5f, nbg);
      float* yd = d.up(b);
      d.k.gated_rmsnorm(d.ctx, yd, d.up(z), ldz, d.up(w), T, D, group, 1e-5f, nbg);
      d.down_into(b, yd);
      EXPECT_LT(rel_err(b, a), 1e-6) << "group " << group << " norm_before_gate " << nbg;
    }
}

TEST_P(Kernels, ResultsDoNotDependOnThreadCount) {
  mqtest::Dev d(bparam());
  Packed p;
  const int D = 128, N = 16;
  auto u = mqtest::randn(size_t(p.T) * D, 40), delta = mqtest::randn(size_t(p.T) * D, 41, 1.f, -3.f);
  auto bc = mqtest::randn(size_t(p.T) * 2 * N, 42), A = mqtest::uniform(size_t(D) * N, 43, -4.f, -1.f);
  std::vector<float> y1(size_t(p.T) * D), y2(y1.size());
  ScanArgs sa;
  float* bcd = d.up(bc);
  sa.b = d.batch(p.offs), sa.D = D, sa.N = N, sa.u = act_f32(d.up(u), D), sa.delta = act_f32(d.up(delta), D);
  sa.A = d.up(A), sa.B = act_f32(bcd, 2 * N), sa.C = act_f32(bcd + N, 2 * N), sa.y = d.up(y1), sa.ldy = D;
  set_num_threads(1);
  d.k.selective_scan(d.ctx, sa);
  d.down_into(y1, sa.y);
  set_num_threads(2);
  d.k.selective_scan(d.ctx, sa);
  d.down_into(y2, sa.y);
  set_num_threads(0);
  EXPECT_EQ(y1, y2);
}

// score_rows: per row the log-softmax at the target and the argmax (the first maximum).
TEST_P(Kernels, ScoreRows) {
  mqtest::Dev d(bparam());
  const int V = 50280, rows = 5, ld = V + 8;
  auto l = mqtest::randn(size_t(rows) * ld, 50, 3.f);
  const std::vector<int32_t> targets = {0, 777, 4242, V - 1, 3};
  for (int r = 0; r < rows; ++r) l[size_t(r) * ld + 777 + size_t(r)] = 25.f;  // a clear maximum per row
  l[size_t(4) * ld + 9] = 25.f;  // a tie in row 4: the first maximum (index 9) wins
  ScoreArgs a;
  a.rows = rows, a.V = V, a.ld = ld, a.logits = d.up(l), a.targets = d.up(targets);
  a.logprob = d.alloc<double>(rows), a.argmax = d.alloc<int32_t>(rows);
  d.k.score_rows(d.ctx, a);
  const auto lp = d.down(a.logprob, rows);
  const auto am = d.down(a.argmax, rows);
  for (int r = 0; r < rows; ++r) {
    double want;
    int wa;
    ref::log_softmax_at(l.data() + size_t(r) * ld, V, targets[size_t(r)], &want, &wa);
    EXPECT_NEAR(lp[size_t(r)], want, 1e-5 * std::max(1.0, std::abs(want))) << "row " << r;
    EXPECT_EQ(am[size_t(r)], wa) << "row " << r;
    EXPECT_EQ(am[size_t(r)], r == 4 ? 9 : 777 + r) << "row " << r;
  }
}

// embed: rows of a float table, and of an int8 table with per-row scales, dequantized.
TEST_P(Kernels, EmbedGathersRows) {
  mqtest::Dev d(bparam());
  const int V = 40, dm = 24, T = 6, ldo = 30;
  auto E = mqtest::randn(size_t(V) * dm, 60);
  auto q = mqtest::rand_codes(size_t(V) * dm, 61);
  auto sc = mqtest::uniform(size_t(V), 62, 0.01f, 0.1f);
  const std::vector<int32_t> ids = {3, 0, 39, 3, 17, 8};
  for (bool quant : {false, true}) {
    std::vector<float> out(size_t(T) * ldo, -1.f);
    EmbedArgs a;
    a.T = T, a.ids = d.up(ids), a.out = d.up(out), a.ldo = ldo;
    a.table = quant ? w_s8(d.up(q), V, dm, d.up(sc), true, sc[0]) : w_f32(d.up(E), V, dm);
    d.k.embed(d.ctx, a);
    d.down_into(out, a.out);
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < dm; ++c) {
        const size_t i = size_t(ids[size_t(t)]) * dm + size_t(c);
        const float want = quant ? float(q[i]) * sc[size_t(ids[size_t(t)])] : E[i];
        ASSERT_EQ(out[size_t(t) * ldo + size_t(c)], want) << (quant ? "s8" : "f32") << " token " << t << " col " << c;
      }
    EXPECT_EQ(out[size_t(ldo) - 1], -1.f);  // the row stride's gap untouched
  }
}

// check_finite records the first non-finite element once; gather_rows copies rows by index.
TEST_P(Kernels, CheckFiniteAndGatherRows) {
  mqtest::Dev d(bparam());
  auto x = mqtest::randn(1000, 63);
  NonFinite none;
  NonFinite* rec = d.up(std::vector<NonFinite>{none});
  d.k.check_finite(d.ctx, d.up(x), 1000, 5, rec);
  EXPECT_LT(d.down(rec, 1)[0].index, 0);
  x[700] = std::numeric_limits<float>::quiet_NaN();
  x[900] = std::numeric_limits<float>::infinity();
  d.k.check_finite(d.ctx, d.up(x), 1000, 6, rec);
  x[100] = std::numeric_limits<float>::infinity();
  d.k.check_finite(d.ctx, d.up(x), 1000, 7, rec);  // a record is kept: the first call that saw one
  const NonFinite r = d.down(rec, 1)[0];
  EXPECT_EQ(r.index, 700);
  EXPECT_EQ(r.tag, 6);
  EXPECT_TRUE(std::isnan(r.value));
  const int cols = 7, lds = 10, ldd = 8;
  auto src = mqtest::randn(size_t(20) * lds, 64);
  const std::vector<int32_t> idx = {19, 0, 5, 5};
  std::vector<float> dst(idx.size() * ldd, 0.f);
  float* dd = d.up(dst);
  d.k.gather_rows(d.ctx, d.up(src), lds, d.up(idx), int(idx.size()), cols, dd, ldd);
  d.down_into(dst, dd);
  for (size_t i = 0; i < idx.size(); ++i)
    for (int c = 0; c < cols; ++c) EXPECT_EQ(dst[i * ldd + size_t(c)], src[size_t(idx[i]) * lds + size_t(c)]);
}

// add_norm (the host backends compose add, check_finite and the norm; a device fuses them): r +=
// y, then the norm of r, against ref's double-precision norm of the same sums (1e-6 relative, as
// RmsNorm); the residual bit for bit (one float add per element); the first non-finite element
// recorded once, as check_finite.
TEST_P(Kernels, AddNormFusesTheBlockBoundary) {
  mqtest::Dev d(bparam());
  ASSERT_TRUE(d.k.add_norm) << "every backend here has add_norm";
  const int T = 23, D = 300;
  for (bool ln : {false, true}) {
    SCOPED_TRACE(ln ? "layernorm" : "rmsnorm");
    auto r = mqtest::randn(size_t(T) * D, 31, 2.f), y = mqtest::randn(size_t(T) * D, 32);
    auto w = mqtest::randn(size_t(D), 33, 1.f, 1.f), b = mqtest::randn(size_t(D), 34);
    std::vector<float> sum(r.size()), want(r.size()), got(r.size());
    for (size_t i = 0; i < r.size(); ++i) sum[i] = r[i] + y[i];
    if (ln)
      ref::layernorm(sum.data(), w.data(), b.data(), want.data(), T, D, 1e-5f);
    else
      ref::rmsnorm(sum.data(), w.data(), want.data(), T, D, 1e-5f);
    NonFinite* rec = d.up(std::vector<NonFinite>{NonFinite{}});
    AddNormArgs a;
    a.r = d.up(r), a.y = d.up(y), a.w = d.up(w), a.b = d.up(b), a.out = d.alloc<float>(got.size());
    a.T = T, a.d = D, a.eps = 1e-5f, a.layer_norm = ln, a.tag = 4, a.rec = rec;
    d.k.add_norm(d.ctx, a);
    d.down_into(got, a.out);
    EXPECT_LT(rel_err(got, want), 1e-6);
    EXPECT_EQ(d.down(a.r, sum.size()), sum);
    EXPECT_LT(d.down(rec, 1)[0].index, 0);
    // non-finite sums at two places: the first is recorded, under this call's tag; a later call
    // keeps the record
    y[size_t(9) * D + 7] = std::numeric_limits<float>::infinity();
    y[size_t(3) * D + 250] = std::numeric_limits<float>::quiet_NaN();
    a.y = d.up(y), a.tag = 5;
    d.k.add_norm(d.ctx, a);
    a.tag = 6;
    d.k.add_norm(d.ctx, a);
    NonFinite got_rec = d.down(rec, 1)[0];
    EXPECT_EQ(got_rec.index, 3 * D + 250);
    EXPECT_EQ(got_rec.tag, 5);
    EXPECT_TRUE(std::isnan(got_rec.value));
    // no y: the norm of r alone, and a fresh record finds the first one again
    a.y = nullptr, a.tag = 7, a.rec = d.up(std::vector<NonFinite>{NonFinite{}});
    d.k.add_norm(d.ctx, a);
    got_rec = d.down(a.rec, 1)[0];
    EXPECT_EQ(got_rec.index, 3 * D + 250);
    EXPECT_EQ(got_rec.tag, 7);
  }
}

TEST_P(Kernels, HadamardMatchesDenseMatrix) {
  mqtest::Dev d(bparam());
  for (int n : {64, 96, 160, 224, 320}) {  // 2^k and 12, 20, 28 (x 8), 40 (x 8) bases
    const int rows = 5, ld = n + 3;
    auto x = mqtest::randn(size_t(rows) * ld, uint32_t(n));
    for (bool tr : {false, true}) {
      auto y = x;
      float* yd = d.up(y);
      d.k.hadamard(d.ctx, yd, rows, n, ld, tr);
      d.down_into(y, yd);
      const auto H = ref::hadamard_dense(n);
      std::vector<float> want(x);
      for (int r = 0; r < rows; ++r)
        for (int i = 0; i < n; ++i) {
          double acc = 0;
          for (int j = 0; j < n; ++j) acc += (tr ? H[size_t(j) * n + i] : H[size_t(i) * n + j]) * x[size_t(r) * ld + j];
          want[size_t(r) * ld + i] = float(acc);
        }
      EXPECT_LT(rel_err(y, want), 1e-6) << n << (tr ? " transposed" : "");  // fp32 butterflies, log2(n) levels
    }
  }
}
