#include "kernels/hadamard.h"

#include <cmath>

#include "mambaq/error.h"

namespace mambaq {

namespace {

int chi(int a, int q) {  // quadratic character modulo a prime q
  a = ((a % q) + q) % q;
  if (a == 0) return 0;
  for (int x = 1; x < q; ++x)
    if ((x * x) % q == a) return 1;
  return -1;
}

// Paley I, q prime, q = 3 mod 4: H = I + S, S = [[0, 1^T], [-1, Q]], Q[i][j] = chi(j - i). Order q + 1.
std::vector<float> paley1(int q) {
  const int n = q + 1;
  std::vector<float> h(size_t(n) * n, 0.f);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      float s;
      if (i == 0) s = j == 0 ? 0.f : 1.f;
      else if (j == 0) s = -1.f;
      else s = float(chi(j - i, q));
      h[size_t(i) * n + j] = s + (i == j ? 1.f : 0.f);
    }
  return h;
}

// Paley II, q prime, q = 1 mod 4: C = [[0, 1^T], [1, Q]] (symmetric conference matrix);
// H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]]. Order 2 (q + 1).
std::vector<float> paley2(int q) {
  const int c = q + 1, n = 2 * c;
  std::vector<float> h(size_t(n) * n, 0.f);
  for (int i = 0; i < c; ++i)
    for (int j = 0; j < c; ++j) {
      float cij;
      if (i == 0 && j == 0) cij = 0.f;
      else if (i == 0 || j == 0) cij = 1.f;
      else cij = float(chi(j - i, q));
      const float a[2][2] = {{1, 1}, {1, -1}}, b[2][2] = {{1, -1}, {-1, -1}};
      for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v)
          h[size_t(2 * i + u) * n + 2 * j + v] = cij * a[u][v] + (i == j ? b[u][v] : 0.f);
    }
  return h;
}

std::vector<float> doubled(const std::vector<float>& h, int m) {
  std::vector<float> d(size_t(4) * m * m);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) {
      const float v = h[size_t(i) * m + j];
      d[size_t(i) * 2 * m + j] = v;
      d[size_t(i) * 2 * m + m + j] = v;
      d[size_t(m + i) * 2 * m + j] = v;
      d[size_t(m + i) * 2 * m + m + j] = -v;
    }
  return d;
}

const std::vector<float>& base(int m) {
  static const std::vector<float> h1{1.f}, h12 = paley1(11), h20 = paley1(19), h28 = paley2(13),
                                   h40 = doubled(paley1(19), 20);
  switch (m) {
    case 1: return h1;
    case 12: return h12;
    case 20: return h20;
    case 28: return h28;
    case 40: return h40;
  }
  fail("internal error: no Hadamard matrix of order {}", m);
}

// In-place unnormalised Walsh-Hadamard transform of length p (a power of two).
void fwht(float* v, int p) {
  for (int h = 1; h < p; h *= 2)
    for (int i = 0; i < p; i += 2 * h)
#pragma omp simd
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
}

}  // namespace

int hadamard_base_order(int n) {
  if (n <= 0) return 0;
  for (int m : {1, 12, 20, 28, 40}) {
    if (n % m) continue;
    const int p = n / m;
    if ((p & (p - 1)) == 0) return m;
  }
  return 0;
}

bool hadamard_supported(int n) { return hadamard_base_order(n) != 0; }

std::vector<float> hadamard_base_matrix(int m) {
  if (m == 2) return {1.f, 1.f, 1.f, -1.f};
  return base(m);
}

void hadamard_transform(float* x, int rows, int n, int ld, bool transpose) {
  const int m = hadamard_base_order(n);
  if (!m) fail("Hadamard transform: size {} is not m * 2^k with m in {{1, 12, 20, 28, 40}}", n);
  const int p = n / m;
  const std::vector<float>& H = base(m);
  const float scale = 1.0f / std::sqrt(float(n));
#pragma omp parallel if (rows > 1)
  {
    std::vector<float> tmp(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int r = 0; r < rows; ++r) {
      float* v = x + size_t(r) * ld;
      // index i = a * p + b: FWHT over b within each of the m blocks, then H_m across blocks
      for (int a = 0; a < m; ++a) fwht(v + size_t(a) * p, p);
      if (m == 1) {
        for (int i = 0; i < n; ++i) v[i] *= scale;
        continue;
      }
      for (int a = 0; a < m; ++a) {
        float* t = tmp.data() + size_t(a) * p;
        for (int b = 0; b < p; ++b) t[b] = 0.f;
        for (int a2 = 0; a2 < m; ++a2) {
          // H_n^T = H_m^T (x) H_{2^k} (the Sylvester factor is symmetric)
          const float h = (transpose ? H[size_t(a2) * m + a] : H[size_t(a) * m + a2]) * scale;
          const float* s = v + size_t(a2) * p;
#pragma omp simd
          for (int b = 0; b < p; ++b) t[b] += h * s[b];
        }
      }
      for (int i = 0; i < n; ++i) v[i] = tmp[size_t(i)];
    }
  }
}

void hadamard_fuse_right(float* W, int rows, int n) {
  // (W H^T) row i = H (W row i), since (W H^T)^T = H W^T.
  hadamard_transform(W, rows, n, n);
}

std::vector<double> ref::hadamard_dense(int n) {
  const int m = hadamard_base_order(n);
  if (!m) fail("Hadamard transform: size {} unsupported", n);
  const int p = n / m;
  const std::vector<float> Hm = hadamard_base_matrix(m);
  std::vector<double> H(size_t(n) * n);
  const double scale = 1.0 / std::sqrt(double(n));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const int a = i / p, b = i % p, a2 = j / p, b2 = j % p;
      const int sylvester = (__builtin_popcount(unsigned(b & b2)) & 1) ? -1 : 1;  // H_{2^k}[b][b2]
      H[size_t(i) * n + j] = Hm[size_t(a) * m + a2] * sylvester * scale;
    }
  return H;
}

}  // namespace mambaq
