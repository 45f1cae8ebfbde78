// FP32 projections: C {M, N} (row stride ldc) = A {M, K} (row stride lda) W^T (+ bias), W {N, K}.
//
// Hand-written rather than oneDNN's sgemm, which this file used before: oneDNN picks its blocking
// (and, threaded, splits K between threads) from M, N and the thread count, so a row's result
// changed with the number of rows multiplied with it. Measured on an AVX2 EPYC with oneDNN 2.7:
// of M in {1 .. 511}, most row counts gave other last bits for the first rows of a 3072x768
// product than M = 512, even on one thread. A document's log-likelihood then depended on which
// other documents shared its batch (tests SharedPrefix.*), and a quantized model turns such a
// last bit into a flipped activation code.
//
// Here every element is one fixed computation whatever M, N, the tile or the thread count: with L
// lanes (the variant's vector width: 16 on x86-64-v4, 8 on v3, 4 on v2),
//   s[0 .. L-1] = +0;  s[k % L] = fma(A[m][k], W[n][k], s[k % L]) for k = 0 .. K-1
//   then pairwise: s[l] += s[l + h] for h = L/2, L/4, .., 1;  C[m][n] = s[0] (+ bias[n])
// (tests/test_kernels.cc, dot_in_fixed_order, has it in scalar form). v2 has no FMA: the product is
// rounded before it is added. The variants therefore differ from each other in the last bits;
// each one is the same for every batch and thread count.
//
// Register tiles of MR rows x NR columns keep MR*NR accumulators; a tile reads MR rows of A and NR
// rows of W over the whole of K (both contiguous in k, no packing), so one element is never split
// between tiles or threads. Tasks are blocks of rows x columns, the columns sized so a block of
// W stays in L2 while the rows stream past it.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/scratch.h"

namespace mambaq {

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16, kMR = 4, kNR = 6;  // 24 accumulators + 4 rows of A + 1 of W: 29 of 32 zmm
using Reg = __m512;
inline Reg zero() { return _mm512_setzero_ps(); }
inline Reg load(const float* p) { return _mm512_loadu_ps(p); }
inline Reg load_part(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
inline Reg madd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline float reduce(Reg s) {
  const __m256 t = _mm256_add_ps(_mm512_extractf32x8_ps(s, 0), _mm512_extractf32x8_ps(s, 1));  // l + l+8
  const __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));         // l + l+4
  const __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));                                          // l + l+2
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));                                 // l + l+1
}
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8, kMR = 3, kNR = 4;  // 12 accumulators + 3 rows of A + 1 of W: 16 ymm
using Reg = __m256;
inline Reg zero() { return _mm256_setzero_ps(); }
inline Reg load(const float* p) { return _mm256_loadu_ps(p); }
inline Reg load_part(const float* p, int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}
inline Reg madd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline float reduce(Reg s) {
  const __m128 u = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));  // l + l+4
  const __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));                                  // l + l+2
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));                         // l + l+1
}
#else
// No FMA on x86-64-v2: the product is rounded, then added.
constexpr int kLanes = 4, kMR = 3, kNR = 4;  // 12 accumulators + 3 rows of A + 1 of W: 16 xmm
using Reg = __m128;
inline Reg zero() { return _mm_setzero_ps(); }
inline Reg load(const float* p) { return _mm_loadu_ps(p); }
inline Reg load_part(const float* p, int n) {
  alignas(16) float t[4] = {0.f, 0.f, 0.f, 0.f};
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return _mm_load_ps(t);
}
inline Reg madd(Reg a, Reg b, Reg c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
inline float reduce(Reg s) {
  const __m128 v = _mm_add_ps(s, _mm_movehl_ps(s, s));           // l + l+2
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));  // l + l+1
}
#endif

// One MR x NR tile over the whole of K. The lanes beyond K in the last step load as +0, which
// leaves an accumulator lane unchanged (it is never -0: it starts at +0, and x + y = -0 needs both
// -0 under round-to-nearest).
template <int MR, int NR>
void tile(int K, const float* A, int lda, const float* W, int ldw, const float* bias, float* C, int ldc) {
  Reg s[MR][NR];
  for (auto& r : s)
    for (auto& x : r) x = zero();
  int k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    Reg a[MR];
    for (int i = 0; i < MR; ++i) a[i] = load(A + size_t(i) * lda + k);
    for (int j = 0; j < NR; ++j) {
      const Reg w = load(W + size_t(j) * ldw + k);
      for (int i = 0; i < MR; ++i) s[i][j] = madd(a[i], w, s[i][j]);
    }
  }
  if (k < K) {
    Reg a[MR];
    for (int i = 0; i < MR; ++i) a[i] = load_part(A + size_t(i) * lda + k, K - k);
    for (int j = 0; j < NR; ++j) {
      const Reg w = load_part(W + size_t(j) * ldw + k, K - k);
      for (int i = 0; i < MR; ++i) s[i][j] = madd(a[i], w, s[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) C[size_t(i) * ldc + j] = reduce(s[i][j]) + (bias ? bias[j] : 0.f);
}

// Tiles of `mr` rows (1 .. kMR) and `nr` columns (1 .. kNR), chosen at run time for the edges.
using TileFn = void (*)(int, const float*, int, const float*, int, const float*, float*, int);
template <int MR, int... NR>
constexpr auto row_of_tiles(std::integer_sequence<int, NR...>) {
  return std::array<TileFn, sizeof...(NR)>{&tile<MR, NR + 1>...};
}
template <int... MR>
constexpr auto all_tiles(std::integer_sequence<int, MR...>) {
  return std::array<std::array<TileFn, kNR>, sizeof...(MR)>{row_of_tiles<MR + 1>(std::make_integer_sequence<int, kNR>())...};
}
constexpr auto kTiles = all_tiles(std::make_integer_sequence<int, kMR>());

// Rows whose vector loads would straddle cache lines (a row start not on a 64-byte boundary):
// measured 1.4x slower on AVX-512 (BENCHMARKS.md, session 14). Such blocks are copied first into
// aligned per-thread scratch with a row stride rounded up to 16 floats; the values and the order
// of every element's computation are unchanged, so results are bit-identical either way.
inline bool misaligned(const float* p, int ld) {
  return (reinterpret_cast<uintptr_t>(p) % 64) != 0 || (size_t(ld) * 4) % 64 != 0;
}
inline int padded(int K) { return (K + 15) / 16 * 16; }
const float* pack_rows(const float* src, int ld, int rows, int K, int slot) {
  const int lp = padded(K);
  float* dst = scratch(slot, size_t(rows) * size_t(lp));
  for (int r = 0; r < rows; ++r) std::copy(src + size_t(r) * ld, src + size_t(r) * ld + K, dst + size_t(r) * lp);
  return dst;
}

// Block of rows [m0, m1) x columns [n0, n1).
void block(int m0, int m1, int n0, int n1, int K, const float* A, int lda, const float* W, const float* bias, float* C,
           int ldc) {
  int ldw = K;
  const float* Wb = W + size_t(n0) * K;
  if (m1 - m0 > kMR && misaligned(Wb, K)) {  // reused by every row tile of the block: worth a copy
    Wb = pack_rows(Wb, K, n1 - n0, K, kSlotGemmPackW);
    ldw = padded(K);
  }
  const bool pack_a = m1 - m0 > kMR && n1 - n0 > kNR && misaligned(A + size_t(m0) * lda, lda);
  for (int m = m0; m < m1; m += kMR) {
    const int mr = std::min(kMR, m1 - m);
    const float* At = A + size_t(m) * lda;
    int ld_a = lda;
    if (pack_a) At = pack_rows(At, lda, mr, K, kSlotGemmPackA), ld_a = padded(K);
    for (int n = n0; n < n1; n += kNR) {
      const int nr = std::min(kNR, n1 - n);
      kTiles[size_t(mr - 1)][size_t(nr - 1)](K, At, ld_a, Wb + size_t(n - n0) * ldw, ldw, bias ? bias + n : nullptr,
                                             C + size_t(m) * ldc + n, ldc);
    }
  }
}

}  // namespace

void MAMBAQ_CPU_NS::gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  // Column blocks of about 64 KiB of W (a multiple of kNR columns; best of 64/128/256 KiB on an
  // AVX2 EPYC), row blocks of 16 tiles: the tasks, spread over the threads; how they are cut does
  // not change any element.
  const int nb = std::max(kNR, (std::max(1, (64 << 10) / (4 * std::max(K, 1))) / kNR) * kNR);
  const int mb = 16 * kMR;
  const int ncb = (N + nb - 1) / nb, nmb = (M + mb - 1) / mb;
  const int tasks = ncb * nmb;
  [[maybe_unused]] const double flops = 2.0 * M * N * K;  // unused where OpenMP is off
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1 && flops > 2e5)
  for (int t = 0; t < tasks; ++t) {
    const int cb = t % ncb, rb = t / ncb;  // neighbouring tasks share rows of A
    block(rb * mb, std::min(M, rb * mb + mb), cb * nb, std::min(N, cb * nb + nb), K, A, lda, W, bias, C, ldc);
  }
}

}  // namespace mambaq
