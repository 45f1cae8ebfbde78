// Hadamard transforms: the base matrices are Hadamard (H H^T = m I, entries +-1), the fast
// transform equals the dense orthonormal matrix, round trips are exact to fp32 rounding, and
// fusing into weights preserves W x.
#include "kernels/hadamard.h"
#include "util.h"

using namespace mambaq;

TEST(Hadamard, BaseMatricesAreHadamard) {
  for (int m : {2, 12, 20, 28, 40}) {
    auto H = hadamard_base_matrix(m);
    ASSERT_EQ(H.size(), size_t(m) * m);
    for (float v : H) ASSERT_TRUE(v == 1.f || v == -1.f) << "order " << m;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j) {
        double dot = 0;
        for (int k = 0; k < m; ++k) dot += double(H[size_t(i) * m + k]) * H[size_t(j) * m + k];
        ASSERT_EQ(dot, i == j ? m : 0) << "order " << m << " rows " << i << "," << j;
      }
  }
}

TEST(Hadamard, SupportedWidths) {
  for (int n : {16, 512, 1536, 2048, 2560, 3584, 4096, 5120, 8192, 12, 40}) EXPECT_TRUE(hadamard_supported(n)) << n;
  for (int n : {0, 3, 24 * 3, 1000, 36}) EXPECT_FALSE(hadamard_supported(n)) << n;
  EXPECT_ERROR(hadamard_transform(nullptr, 1, 1000, 1000), "1000");
}

TEST(Hadamard, FastEqualsDenseAndIsOrthonormal) {
  for (int n : {64, 96, 160, 224, 320, 1536}) {
    auto H = ref::hadamard_dense(n);
    // orthonormal: H H^T = I
    double worst = 0;
    for (int i = 0; i < n; i += std::max(1, n / 16))
      for (int j = 0; j < n; ++j) {
        double dot = 0;
        for (int k = 0; k < n; ++k) dot += H[size_t(i) * n + k] * H[size_t(j) * n + k];
        worst = std::max(worst, std::abs(dot - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(worst, 1e-12) << n;
    const int rows = 3, ld = n + 5;
    auto x = mqtest::randn(size_t(rows) * ld, uint32_t(n));
    auto y = x;
    hadamard_transform(y.data(), rows, n, ld);
    std::vector<float> want(size_t(rows) * n), got(size_t(rows) * n);
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < n; ++i) {
        double acc = 0;
        for (int k = 0; k < n; ++k) acc += H[size_t(i) * n + k] * x[size_t(r) * ld + k];
        want[size_t(r) * n + i] = float(acc);
        got[size_t(r) * n + i] = y[size_t(r) * ld + i];
      }
    EXPECT_LT(mqtest::rel_err(got, want), 1e-6) << n;
  }
}

TEST(Hadamard, RoundTripAndWeightFusion) {
  for (int n : {512, 1536, 2560}) {
    // H^T H = I: transform with the transpose via the dense matrix, or check W x = (W H^T)(H x)
    const int out = 7;
    auto W = mqtest::randn(size_t(out) * n, 1), x = mqtest::randn(size_t(n), 2);
    std::vector<float> Wf = W, hx = x;
    hadamard_fuse_right(Wf.data(), out, n);
    hadamard_transform(hx.data(), 1, n, n);
    std::vector<float> a(static_cast<size_t>(out)), b(static_cast<size_t>(out));
    for (int o = 0; o < out; ++o) {
      double s1 = 0, s2 = 0;
      for (int k = 0; k < n; ++k) {
        s1 += double(W[size_t(o) * n + k]) * x[size_t(k)];
        s2 += double(Wf[size_t(o) * n + k]) * hx[size_t(k)];
      }
      a[size_t(o)] = float(s1);
      b[size_t(o)] = float(s2);
    }
    EXPECT_LT(mqtest::rel_err(b, a), 1e-5) << n;
    // norm preserved (orthonormal)
    double nx = 0, nh = 0;
    for (int k = 0; k < n; ++k) {
      nx += double(x[size_t(k)]) * x[size_t(k)];
      nh += double(hx[size_t(k)]) * hx[size_t(k)];
    }
    EXPECT_NEAR(nh / nx, 1.0, 1e-5) << n;
  }
}

TEST(Hadamard, TransposeInverts) {
  for (int n : {256, 1536, 2560, 3584, 5120}) {
    auto x = mqtest::randn(size_t(2) * n, uint32_t(n) + 1);
    auto y = x;
    hadamard_transform(y.data(), 2, n, n);
    EXPECT_GT(mqtest::rel_err(y, x), 0.5) << n;  // it did something
    hadamard_transform(y.data(), 2, n, n, /*transpose=*/true);
    EXPECT_LT(mqtest::rel_err(y, x), 1e-6) << n;
  }
}
