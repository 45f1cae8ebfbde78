// Every fast kernel against its reference on random data (never zeros), by relative error.
// Bounds: fast kernels compute in fp32 with vectorised exp/log (relative error < 3e-7 each)
// and a different summation order than the double-precision references, so outputs agree to
// ~1e-6 relative; we allow 1e-5 (2e-5 for scans, whose state compounds rounding over T steps).
#include "core/threads.h"
#include "kernels/backend.h"
#include "kernels/hadamard.h"
#include "kernels/ref/ops.h"
#include "kernels/cpu/vmath.h"
#include "util.h"

using namespace mambaq;
using mqtest::rel_err;
using namespace mambaq::MAMBAQ_CPU_NS;  // vmath.h

// Every test runs on every backend (the reference backend included: its packed wrappers are
// checked against the one-sequence reference kernels).
class Kernels : public ::testing::TestWithParam<std::string> {
 protected:
  std::string bparam() const { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Backends, Kernels, ::testing::ValuesIn(backend_names()));

TEST(VMath, ExpLogSoftplusMatchLibm) {
  double worst_exp = 0, worst_log = 0, worst_sp = 0;
  for (float x = -80.f; x < 80.f; x += 0.0137f) {
    worst_exp = std::max(worst_exp, std::abs(fast_exp(x) / std::exp(double(x)) - 1));
    worst_sp = std::max(worst_sp, std::abs(softplus(x) / std::log1p(std::exp(double(x))) - 1));
  }
  for (float x = 1e-30f; x < 1e30f; x *= 1.37f) worst_log = std::max(worst_log, std::abs(fast_log(x) - std::log(double(x))) / std::max(1.0, std::abs(std::log(double(x)))));
  EXPECT_LT(worst_exp, 5e-7);
  EXPECT_LT(worst_log, 5e-7);
  EXPECT_LT(worst_sp, 1e-6);
  EXPECT_EQ(softplus(30.f), 30.f);  // torch's threshold
}

TEST_P(Kernels, RmsNorm) {
  const Backend& B = backend(bparam());
  const int T = 37, d = 200;
  auto x = mqtest::randn(size_t(T) * d, 1, 2.f), w = mqtest::randn(size_t(d), 2, 1.f, 1.f);
  std::vector<float> a(x.size()), b(x.size());
  ref::rmsnorm(x.data(), w.data(), a.data(), T, d, 1e-5f);
  B.rmsnorm(x.data(), w.data(), b.data(), T, d, 1e-5f);
  EXPECT_LT(rel_err(b, a), 1e-6);
}

TEST_P(Kernels, Gemm) {
  const Backend& B = backend(bparam());
  const int M = 19, N = 70, K = 33, lda = 40, ldc = 75;
  auto A = mqtest::randn(size_t(M) * lda, 3), W = mqtest::randn(size_t(N) * K, 4), bias = mqtest::randn(size_t(N), 5);
  std::vector<float> a(size_t(M) * ldc, 0.f), b(size_t(M) * ldc, 0.f);
  ref::gemm(M, N, K, A.data(), lda, W.data(), bias.data(), a.data(), ldc);
  B.gemm(M, N, K, A.data(), lda, W.data(), bias.data(), b.data(), ldc);
  EXPECT_LT(rel_err(b, a), 1e-6);
}

// Sequences of different lengths packed back to back, some with a carried state, some without.
struct Packed {
  std::vector<int> lens{5, 1, 17, 3, 64};
  std::vector<int> offs;
  int T = 0;
  Packed() {
    offs.push_back(0);
    for (int l : lens) offs.push_back(T += l);
  }
  int n() const { return int(lens.size()); }
};

TEST_P(Kernels, Conv1dSiluPackedWithState) {
  const Backend& B = backend(bparam());
  Packed p;
  const int C = 150, K = 4, ldx = 170, ldo = 160;
  auto x = mqtest::randn(size_t(p.T) * ldx, 6), w = mqtest::randn(size_t(C) * K, 7, 0.5f), b = mqtest::randn(size_t(C), 8);
  std::vector<float> a(size_t(p.T) * ldo, 0.f), o(size_t(p.T) * ldo, 0.f);
  std::vector<std::vector<float>> st_ref, st_fast;
  std::vector<float*> sp;
  for (int s = 0; s < p.n(); ++s) {
    st_ref.push_back(mqtest::randn(size_t(K - 1) * C, 100 + uint32_t(s)));
    st_fast.push_back(st_ref.back());
  }
  for (int s = 0; s < p.n(); ++s) sp.push_back(s == 1 ? nullptr : st_fast[size_t(s)].data());
  for (int s = 0; s < p.n(); ++s)
    ref::conv1d_silu(x.data() + size_t(p.offs[size_t(s)]) * ldx, ldx, p.lens[size_t(s)], C, K, w.data(), b.data(),
                     s == 1 ? nullptr : st_ref[size_t(s)].data(), a.data() + size_t(p.offs[size_t(s)]) * ldo, ldo);
  B.conv1d_silu(p.n(), p.offs.data(), x.data(), ldx, C, K, w.data(), b.data(), sp.data(), o.data(), ldo);
  EXPECT_LT(rel_err(o, a), 1e-5);
  for (int s = 0; s < p.n(); ++s) EXPECT_EQ(st_fast[size_t(s)], st_ref[size_t(s)]) << "state of sequence " << s;
}

TEST_P(Kernels, SelectiveScanPackedWithState) {
  const Backend& B = backend(bparam());
  Packed p;
  const int D = 64, N = 16, ld = 3 * D, ldbc = 2 * N + 5;
  auto u = mqtest::randn(size_t(p.T) * ld, 10), delta = mqtest::randn(size_t(p.T) * ld, 11, 1.f, -3.f);
  auto z = mqtest::randn(size_t(p.T) * ld, 12), bc = mqtest::randn(size_t(p.T) * ldbc, 13);
  auto A = mqtest::uniform(size_t(D) * N, 14, -16.f, -0.5f), bias = mqtest::randn(size_t(D), 15, 0.5f);
  auto Dk = mqtest::randn(size_t(D), 16);
  std::vector<float> a(size_t(p.T) * D, 0.f), o(size_t(p.T) * D, 0.f);
  std::vector<std::vector<float>> st_ref, st_fast;
  std::vector<float*> sp;
  for (int s = 0; s < p.n(); ++s) {
    st_ref.push_back(mqtest::randn(size_t(D) * N, 200 + uint32_t(s)));
    st_fast.push_back(st_ref.back());
  }
  for (int s = 0; s < p.n(); ++s) sp.push_back(s == 3 ? nullptr : st_fast[size_t(s)].data());
  for (int s = 0; s < p.n(); ++s) {
    const size_t o0 = size_t(p.offs[size_t(s)]);
    ref::selective_scan(p.lens[size_t(s)], D, N, u.data() + o0 * ld, ld, delta.data() + o0 * ld, ld, bias.data(), A.data(),
                        bc.data() + o0 * ldbc, ldbc, bc.data() + o0 * ldbc + N, ldbc, Dk.data(), z.data() + o0 * ld, ld,
                        s == 3 ? nullptr : st_ref[size_t(s)].data(), a.data() + o0 * D, D);
  }
  B.selective_scan(p.n(), p.offs.data(), D, N, u.data(), ld, delta.data(), ld, bias.data(), A.data(), bc.data(), ldbc,
                      bc.data() + N, ldbc, Dk.data(), z.data(), ld, sp.data(), o.data(), D);
  EXPECT_LT(rel_err(o, a), 2e-5);
  for (int s = 0; s < p.n(); ++s)
    if (s != 3) {
      EXPECT_LT(rel_err(st_fast[size_t(s)], st_ref[size_t(s)]), 2e-5) << "state of sequence " << s;
    }
}

class SsdScan : public ::testing::TestWithParam<std::tuple<std::string, int>> {  // backend, ngroups
 protected:
  std::string bparam() const { return std::get<0>(GetParam()); }
};

TEST_P(SsdScan, PackedWithState) {
  const Backend& B = backend(bparam());
  Packed p;
  const int G = std::get<1>(GetParam()), H = 8, P = 16, N = 32, ldx = H * P + 7, ldbc = 2 * G * N + 3, lddt = H + 2;
  auto x = mqtest::randn(size_t(p.T) * ldx, 20), bc = mqtest::randn(size_t(p.T) * ldbc, 21);
  auto dt = mqtest::randn(size_t(p.T) * lddt, 22, 1.f, -2.f), A = mqtest::uniform(size_t(H), 23, -8.f, -1.f);
  auto dtb = mqtest::randn(size_t(H), 24, 0.5f), Dk = mqtest::randn(size_t(H), 25);
  std::vector<float> a(size_t(p.T) * H * P, 0.f), o(a.size(), 0.f);
  std::vector<std::vector<float>> st_ref, st_fast;
  std::vector<float*> sp;
  for (int s = 0; s < p.n(); ++s) {
    st_ref.push_back(mqtest::randn(size_t(H) * P * N, 300 + uint32_t(s)));
    st_fast.push_back(st_ref.back());
  }
  for (int s = 0; s < p.n(); ++s) sp.push_back(s == 0 ? nullptr : st_fast[size_t(s)].data());
  for (int s = 0; s < p.n(); ++s) {
    const size_t o0 = size_t(p.offs[size_t(s)]);
    ref::ssd_scan(p.lens[size_t(s)], H, P, G, N, x.data() + o0 * ldx, ldx, dt.data() + o0 * lddt, lddt, dtb.data(), A.data(),
                  bc.data() + o0 * ldbc, ldbc, bc.data() + o0 * ldbc + G * N, ldbc, Dk.data(),
                  s == 0 ? nullptr : st_ref[size_t(s)].data(), a.data() + o0 * H * P, H * P);
  }
  B.ssd_scan(p.n(), p.offs.data(), H, P, G, N, x.data(), ldx, dt.data(), lddt, dtb.data(), A.data(), bc.data(), ldbc,
                bc.data() + G * N, ldbc, Dk.data(), sp.data(), o.data(), H * P);
  EXPECT_LT(rel_err(o, a), 2e-5);
  for (int s = 1; s < p.n(); ++s) EXPECT_LT(rel_err(st_fast[size_t(s)], st_ref[size_t(s)]), 2e-5);
}
INSTANTIATE_TEST_SUITE_P(Groups, SsdScan, ::testing::Combine(::testing::ValuesIn(backend_names()), ::testing::Values(1, 2, 4)));

TEST_P(Kernels, GatedRmsNormBothOrders) {
  const Backend& B = backend(bparam());
  const int T = 9, D = 96, ldz = 110;
  for (int group : {96, 24})
    for (bool nbg : {false, true}) {
      auto y = mqtest::randn(size_t(T) * D, 30), z = mqtest::randn(size_t(T) * ldz, 31), w = mqtest::randn(size_t(D), 32, 0.2f, 1.f);
      auto a = y, b = y;
      ref::gated_rmsnorm(a.data(), z.data(), ldz, w.data(), T, D, group, 1e-5f, nbg);
      B.gated_rmsnorm(b.data(), z.data(), ldz, w.data(), T, D, group, 1e-5f, nbg);
      EXPECT_LT(rel_err(b, a), 1e-6) << "group " << group << " norm_before_gate " << nbg;
    }
}

TEST_P(Kernels, ResultsDoNotDependOnThreadCount) {
  const Backend& B = backend(bparam());
  Packed p;
  const int D = 128, N = 16;
  auto u = mqtest::randn(size_t(p.T) * D, 40), delta = mqtest::randn(size_t(p.T) * D, 41, 1.f, -3.f);
  auto bc = mqtest::randn(size_t(p.T) * 2 * N, 42), A = mqtest::uniform(size_t(D) * N, 43, -4.f, -1.f);
  std::vector<float> y1(size_t(p.T) * D), y2(y1.size());
  set_num_threads(1);
  B.selective_scan(p.n(), p.offs.data(), D, N, u.data(), D, delta.data(), D, nullptr, A.data(), bc.data(), 2 * N,
                      bc.data() + N, 2 * N, nullptr, nullptr, 0, nullptr, y1.data(), D);
  set_num_threads(2);
  B.selective_scan(p.n(), p.offs.data(), D, N, u.data(), D, delta.data(), D, nullptr, A.data(), bc.data(), 2 * N,
                      bc.data() + N, 2 * N, nullptr, nullptr, 0, nullptr, y2.data(), D);
  set_num_threads(0);
  EXPECT_EQ(y1, y2);
}

TEST_P(Kernels, LogSoftmaxAt) {
  const Backend& B = backend(bparam());
  const int V = 50280;
  auto l = mqtest::randn(size_t(V), 50, 3.f);
  l[777] = 25.f;  // a clear maximum
  for (int target : {0, 777, 4242, V - 1}) {
    double a, b;
    int aa, ba;
    ref::log_softmax_at(l.data(), V, target, &a, &aa);
    B.log_softmax_at(l.data(), V, target, &b, &ba);
    EXPECT_NEAR(b, a, 1e-5 * std::max(1.0, std::abs(a)));
    EXPECT_EQ(ba, aa);
    EXPECT_EQ(ba, 777);
  }
}

TEST_P(Kernels, HadamardMatchesDenseMatrix) {
  const Backend& B = backend(bparam());
  for (int n : {64, 96, 160, 224, 320}) {  // 2^k and 12, 20, 28 (x 8), 40 (x 8) bases
    const int rows = 5, ld = n + 3;
    auto x = mqtest::randn(size_t(rows) * ld, uint32_t(n));
    for (bool tr : {false, true}) {
      auto y = x;
      B.hadamard(y.data(), rows, n, ld, tr);
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
