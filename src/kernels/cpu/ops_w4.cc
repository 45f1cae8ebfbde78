// Fast 4-bit weight kernels (Quamba2 W4A16, W4A8): contracts in kernels/ref/ops.h.
//
// The packed layout (blocks of 32 columns, byte j = column j | column j+16 << 4, code + 8) lets
// one mask and one shift unpack a block into its 32 unsigned values u = code + 8 in column
// order; the kernels use sum(a * code) = sum(a * u) - 8 * sum(a) with the activations' group sums
// computed once per call, so the inner loops see only u.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/ops.h"
#include "mambaq/error.h"

namespace mambaq::MAMBAQ_CPU_NS {

namespace {

constexpr int kMaxGemvM = 4;

inline void unpack_block(const uint8_t* b, float* w) {  // 16 bytes -> 32 values u in column order
#pragma omp simd
  for (int j = 0; j < 16; ++j) {
    w[j] = float(b[j] & 15);
    w[j + 16] = float(b[j] >> 4);
  }
}

// Weights {N, K} expanded to fp32 (code * scale) for the prefill products.
float* expand_w4(int N, int K, const uint8_t* W, const float* ws, int group) {
  const int ng = (K + group - 1) / group;
  float* wf = scratch(kSlotQGemmW, size_t(N) * K);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const uint8_t* w = W + size_t(n) * (K / 2);
    float* o = wf + size_t(n) * K;
    for (int b = 0; b < K / 32; ++b) {
      const float s = ws[size_t(n) * ng + size_t(b * 32 / group)];
      unpack_block(w + b * 16, o + b * 32);
#pragma omp simd
      for (int j = 0; j < 32; ++j) o[b * 32 + j] = (o[b * 32 + j] - 8.f) * s;
    }
  }
  return wf;
}

// ---- W4A8 decode: exact int32 dot products of u (0..15) with int8 codes ----

// Activations of one row permuted to the order a 64-column step unpacks the weights in:
// [cols 0-15, 32-47, 16-31, 48-63] (the low nibbles of two blocks, then their high nibbles).
void permute64(const int8_t* a, int K, int8_t* out) {
  int k = 0;
  for (; k + 64 <= K; k += 64) {
    std::memcpy(out + k, a + k, 16);
    std::memcpy(out + k + 16, a + k + 32, 16);
    std::memcpy(out + k + 32, a + k + 16, 16);
    std::memcpy(out + k + 48, a + k + 48, 16);
  }
  std::memcpy(out + k, a + k, size_t(K - k));  // a last single block keeps its order
}

// GCC 12 reports its own intrinsics (_mm512_inserti64x4, _mm512_cvtepi32_ps: they start from
// _mm512_undefined_*()) as maybe-uninitialized once inlined; a known false positive.
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// sum_g ws[g] * sum_{k in g} u[k] a[k] over one row; the caller subtracts 8 * sum_g ws[g] sa[g].
// `ap` is the row permuted by permute64. Needs group % 64 == 0 (else the portable version).
// Two functions rather than one template over the accumulate step: a function's target attribute
// decides which instructions the compiler may emit anywhere in it, and the AVX512BW version runs
// on CPUs without VNNI, so it must not be compiled for a VNNI target.
[[maybe_unused]] __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) float row_dot_vnni(const uint8_t* w, const int8_t* ap,
                                                                                 int K, const float* ws, int group) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  __m512 facc = _mm512_setzero_ps();
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    const int g1 = std::min(K, g0 + group);
    __m512i acc = _mm512_setzero_si512();
    for (int k = g0; k < g1; k += 64) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k / 2));
      const __m256i lo = _mm256_and_si256(x, mask), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
      const __m512i u = _mm512_inserti64x4(_mm512_inserti64x4(_mm512_setzero_si512(), lo, 0), hi, 1);
      acc = _mm512_dpbusd_epi32(acc, u, _mm512_loadu_si512(ap + k));
    }
    facc = _mm512_fmadd_ps(_mm512_set1_ps(ws[gi]), _mm512_cvtepi32_ps(acc), facc);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, facc);
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

[[maybe_unused]] __attribute__((target("avx512f,avx512bw,avx512vl"))) float row_dot_avx512bw(const uint8_t* w, const int8_t* ap, int K,
                                                                             const float* ws, int group) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m512i ones = _mm512_set1_epi16(1);
  __m512 facc = _mm512_setzero_ps();
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    const int g1 = std::min(K, g0 + group);
    __m512i acc = _mm512_setzero_si512();
    for (int k = g0; k < g1; k += 64) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k / 2));
      const __m256i lo = _mm256_and_si256(x, mask), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
      const __m512i u = _mm512_inserti64x4(_mm512_inserti64x4(_mm512_setzero_si512(), lo, 0), hi, 1);
      // u <= 15, |a| <= 128: each pair sum fits int16 (2 * 15 * 128 = 3840)
      const __m512i p16 = _mm512_maddubs_epi16(u, _mm512_loadu_si512(ap + k));
      acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p16, ones));
    }
    facc = _mm512_fmadd_ps(_mm512_set1_ps(ws[gi]), _mm512_cvtepi32_ps(acc), facc);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, facc);
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

// W4A16 decode: one row, sum_g ws[g] * sum_{k in g} u[k] a[k] (the caller subtracts the offset):
// 16 nibbles widened to int32 and converted to float per step, FMA with the activations.
[[maybe_unused]] __attribute__((target("avx512f,avx512bw,avx512vl"))) float row_dot_f32_avx512(const uint8_t* w, const float* a, int K,
                                                                               const float* ws, int group) {
  const __m512i mask = _mm512_set1_epi32(0x0F);
  __m512 facc = _mm512_setzero_ps();
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    const int g1 = std::min(K, g0 + group);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int k = g0; k < g1; k += 32) {
      const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k / 2)));
      const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(b, mask));
      const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
      acc0 = _mm512_fmadd_ps(lo, _mm512_loadu_ps(a + k), acc0);
      acc1 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(a + k + 16), acc1);
    }
    facc = _mm512_fmadd_ps(_mm512_set1_ps(ws[gi]), _mm512_add_ps(acc0, acc1), facc);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, facc);
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

#pragma GCC diagnostic pop

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// x86-64-v3 (AVX2 + FMA; issue 24: these CPUs had only the portable loops). A 32-column block is
// 16 bytes: its low nibbles are columns 0-15 and its high nibbles 16-31, so [low | high] in one
// ymm is the block in column order and the activations are read as they are (no permutation).
// W4A8: maddubs(u, a) pairs (u <= 15, |a| <= 128: each pair sum fits int16), madd with ones to
// int32 — exact integer sums, so the result equals the portable loop's bit for bit.
float row_dot_avx2(const uint8_t* w, const int8_t* a, int K, const float* ws, int group) {
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  float s = 0;
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    const int g1 = std::min(K, g0 + group);
    __m256i acc = _mm256_setzero_si256();
    for (int k = g0; k < g1; k += 32) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k / 2));
      const __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), mask), _mm_and_si128(x, mask));
      const __m256i p16 = _mm256_maddubs_epi16(u, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
    }
    const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    const int32_t t = _mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xB1)));
    s += ws[gi] * float(t);
  }
  return s;
}
// W4A16: 8 nibbles widened to int32, converted, FMA with the activations; four accumulators per
// block (columns 0-7, 8-15 from the low nibbles, 16-23, 24-31 from the high ones).
float row_dot_f32_avx2(const uint8_t* w, const float* a, int K, const float* ws, int group) {
  const __m256i mask = _mm256_set1_epi32(0x0F);
  float s = 0;
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    const int g1 = std::min(K, g0 + group);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    for (int k = g0; k < g1; k += 32) {
      const __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k / 2)));
      const __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k / 2 + 8)));
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b0, mask)), _mm256_loadu_ps(a + k), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b1, mask)), _mm256_loadu_ps(a + k + 8), acc1);
      acc2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4)), _mm256_loadu_ps(a + k + 16), acc2);
      acc3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4)), _mm256_loadu_ps(a + k + 24), acc3);
    }
    const __m256 t = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    s += ws[gi] * _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
  return s;
}
#endif

[[maybe_unused]] float row_dot_f32_portable(const uint8_t* w, const float* a, int K, const float* ws, int group) {
  float s = 0;
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    float acc = 0;
    for (int k = g0; k < std::min(K, g0 + group); k += 32) {
      const uint8_t* b = w + k / 2;
#pragma omp simd reduction(+ : acc)
      for (int j = 0; j < 16; ++j) acc += float(b[j] & 15) * a[k + j] + float(b[j] >> 4) * a[k + j + 16];
    }
    s += ws[gi] * acc;
  }
  return s;
}

// Portable: the row in its natural order (any group % 32 == 0).
[[maybe_unused]] float row_dot_portable(const uint8_t* w, const int8_t* a, int K, const float* ws, int group) {
  float s = 0;
  for (int g0 = 0, gi = 0; g0 < K; g0 += group, ++gi) {
    int32_t acc = 0;
    for (int k = g0; k < std::min(K, g0 + group); k += 32) {
      const uint8_t* b = w + k / 2;
#pragma omp simd reduction(+ : acc)
      for (int j = 0; j < 16; ++j) acc += int32_t(b[j] & 15) * a[k + j] + int32_t(b[j] >> 4) * a[k + j + 16];
    }
    s += ws[gi] * float(acc);
  }
  return s;
}

using RowDot = float (*)(const uint8_t*, const int8_t*, int, const float*, int);
// The W4A8 row dot for this variant and CPU, and whether it reads the row permuted (permute64).
// x86-64-v4 (and v2 on an AVX-512 CPU): the 64-column AVX-512 dots when the groups allow; v3: the
// AVX2 dot, natural order; else the portable loop.
struct RowDotPick {
  RowDot fn;
  bool permuted;
};
RowDotPick pick_row_dot(bool wide_ok) {
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
  return {row_dot_avx2, false};
#else
  static const bool bw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  static const bool vnni = bw && __builtin_cpu_supports("avx512vnni");
  if (wide_ok && vnni) return {row_dot_vnni, true};
  if (wide_ok && bw) return {row_dot_avx512bw, true};
  return {row_dot_portable, false};
#endif
}

}  // namespace

void gemm_w4(int M, int N, int K, const float* A, int lda, const uint8_t* W, const float* ws, int group,
             const float* bias, float* C, int ldc) {
  if (M == 0) return;
  MQ_ASSERT(K % 32 == 0 && group % 32 == 0);
  if (M > kMaxGemvM) {
    gemm(M, N, K, A, lda, expand_w4(N, K, W, ws, group), bias, C, ldc);
    return;
  }
  const int ng = (K + group - 1) / group;
  // sa[m][g] = sum of row m's activations in group g (for the -8 offset)
  std::vector<float> sa(size_t(M) * ng, 0.f);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) sa[size_t(m) * ng + size_t(k / group)] += A[size_t(m) * lda + k];
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
  const auto dot = row_dot_f32_avx2;
#else
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  const auto dot = avx512 ? row_dot_f32_avx512 : row_dot_f32_portable;
#endif
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const uint8_t* w = W + size_t(n) * (K / 2);
    const float* s = ws + size_t(n) * ng;
    for (int m = 0; m < M; ++m) {
      float off = 0;
      for (int g = 0; g < ng; ++g) off += s[g] * sa[size_t(m) * ng + size_t(g)];
      C[size_t(m) * ldc + n] = dot(w, A + size_t(m) * lda, K, s, group) - 8.f * off + (bias ? bias[n] : 0.f);
    }
  }
}

void gemm_s8w4(int M, int N, int K, const int8_t* A, int lda, float a_scale, const uint8_t* W, const float* ws,
               int group, const float* bias, float* C, int ldc) {
  if (M == 0) return;
  MQ_ASSERT(K % 32 == 0 && group % 32 == 0);
  const int ng = (K + group - 1) / group;
  if (M > kMaxGemvM) {
    float* af = scratch(kSlotQGemmA, size_t(M) * K);
#pragma omp parallel for schedule(static) if (size_t(M) * K > 65536)
    for (int m = 0; m < M; ++m)
#pragma omp simd
      for (int k = 0; k < K; ++k) af[size_t(m) * K + k] = float(A[size_t(m) * lda + k]);
    gemm(M, N, K, af, K, expand_w4(N, K, W, ws, group), nullptr, C, ldc);
#pragma omp parallel for schedule(static) if (M > 16)
    for (int m = 0; m < M; ++m) {
      float* c = C + size_t(m) * ldc;
#pragma omp simd
      for (int n = 0; n < N; ++n) c[n] = c[n] * a_scale + (bias ? bias[n] : 0.f);
    }
    return;
  }
  const bool wide = group % 64 == 0 && K % 64 == 0;
  static const RowDotPick fast = pick_row_dot(true), narrow = pick_row_dot(false);
  const RowDotPick pick = wide ? fast : narrow;
  const RowDot dot = pick.fn;
  const bool permute = pick.permuted;
  // per row m: the activations in the order the dot reads them, and their group sums
  std::vector<int8_t> ap(size_t(M) * K);
  std::vector<float> sa(size_t(M) * ng, 0.f);
  for (int m = 0; m < M; ++m) {
    const int8_t* a = A + size_t(m) * lda;
    if (permute) permute64(a, K, ap.data() + size_t(m) * K);
    else std::memcpy(ap.data() + size_t(m) * K, a, size_t(K));
    for (int g = 0; g < ng; ++g) {
      int32_t t = 0;
      for (int k = g * group; k < std::min(K, (g + 1) * group); ++k) t += a[k];
      sa[size_t(m) * ng + size_t(g)] = float(t);
    }
  }
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const uint8_t* w = W + size_t(n) * (K / 2);
    const float* s = ws + size_t(n) * ng;
    for (int m = 0; m < M; ++m) {
      float off = 0;
      for (int g = 0; g < ng; ++g) off += s[g] * sa[size_t(m) * ng + size_t(g)];
      const float v = dot(w, ap.data() + size_t(m) * K, K, s, group) - 8.f * off;
      C[size_t(m) * ldc + n] = v * a_scale + (bias ? bias[n] : 0.f);
    }
  }
}

}  // namespace mambaq::MAMBAQ_CPU_NS
