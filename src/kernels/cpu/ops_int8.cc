// Fast int8 kernels (Quamba W8A8). GEMMs go to oneDNN's s8s8s32 GEMM, which picks its
// AVX-512 VNNI / AMX / AVX2 kernels from the CPU at run time; decode-sized products (M <= 4)
// use our own GEMV because oneDNN's GEMM leaves half the memory bandwidth unused there
// (BENCHMARKS.md). Conv and scans are OpenMP over (sequence, channel block), SIMD over channels.
#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vmath.h"
#include "mambaq/error.h"

namespace mambaq::MAMBAQ_CPU_NS {

namespace {
// Saturating; NaN (possible only from an overflow upstream) becomes 0 instead of an undefined
// float-to-int conversion. The forward pass's finiteness check reports overflows of the float parts.
// Written with selects rather than std::clamp (a reference, and fmin/fmax are libm calls): GCC
// vectorises this form in every quantizing loop (vrndscaleps, min/max, a blend for NaN).
inline int8_t code(float v) {
  float r = std::nearbyint(v);
  r = r < -127.0f ? -127.0f : r;
  r = r > 127.0f ? 127.0f : r;
  return v == v ? int8_t(r) : int8_t(0);
}

// Exact int8 dot product of length K with int32 accumulation. Two versions, one chosen at run
// time from the CPU's feature bits (Intel with or without AMX, AMD Zen 4: all have AVX-512 BW
// here, but a binary must not assume it).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline int32_t dot_s8_avx512(const int8_t* a, const int8_t* w,
                                                                                   int K) {
  __m512i acc = _mm512_setzero_si512();
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512i av = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)));
    const __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k)));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(av, wv));  // |a*w| <= 127^2: pairs fit int32
  }
  if (k < K) {
    const __mmask32 m = (__mmask32(1) << (K - k)) - 1;  // K - k < 32
    const __m512i av = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, a + k));
    const __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, w + k));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(av, wv));
  }
  // horizontal sum through memory: GCC 12 warns (-Wmaybe-uninitialized) inside the extract intrinsics
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, acc);
  int32_t sum = 0;
  for (int32_t v : lanes) sum += v;
  return sum;
}

inline int32_t dot_s8_portable(const int8_t* a, const int8_t* w, int K) {
  int32_t acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int k = 0; k < K; ++k) acc += int32_t(a[k]) * int32_t(w[k]);
  return acc;
}

// Decode-sized products (M <= 4): stream W once, rows split over threads.
template <int32_t (*Dot)(const int8_t*, const int8_t*, int)>
void gemv_s8(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W, const float* w_scale,
             bool w_per_row, const float* bias, float* C, int ldc) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const int8_t* wr = W + size_t(n) * K;
    const float s = a_scale * w_scale[w_per_row ? n : 0], b = bias ? bias[n] : 0.f;
    for (int m = 0; m < M; ++m) C[size_t(m) * ldc + n] = float(Dot(A + size_t(m) * lda, wr, K)) * s + b;
  }
}

using GemvFn = void (*)(int, int, int, const int8_t*, int, float, const int8_t*, const float*, bool, const float*,
                        float*, int);
bool has_avx512bw() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return yes;
}
GemvFn pick_gemv() { return has_avx512bw() ? gemv_s8<dot_s8_avx512> : gemv_s8<dot_s8_portable>; }
}  // namespace

void quantize(const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq) {
  const float inv = 1.0f / scale;
#pragma omp parallel for schedule(static) if (size_t(rows) * cols > 32768)
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + size_t(r) * ldx;
    int8_t* qr = q + size_t(r) * ldq;
#pragma omp simd
    for (int c = 0; c < cols; ++c) qr[c] = code(xr[c] * inv);
  }
}

void dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
#pragma omp parallel for schedule(static) if (size_t(rows) * cols > 32768)
  for (int r = 0; r < rows; ++r) {
    const int8_t* qr = q + size_t(r) * ldq;
    float* xr = x + size_t(r) * ldx;
#pragma omp simd
    for (int c = 0; c < cols; ++c) xr[c] = float(qr[c]) * scale;
  }
}

void fake_quantize(float* x, int rows, int cols, int ldx, float scale, int bits) {
  if (!(scale > 0)) fail("internal error: fake_quantize with scale {}", scale);
  const float qmax = float((1 << (bits - 1)) - 1), inv = 1.0f / scale;
#pragma omp parallel for schedule(static) if (size_t(rows) * cols > 65536)
  for (int r = 0; r < rows; ++r) {
    float* xr = x + size_t(r) * ldx;
#pragma omp simd
    for (int c = 0; c < cols; ++c) {
      const float v = std::nearbyint(xr[c] * inv);  // round half to even, as torch.round
      xr[c] = v == v ? std::clamp(v, -qmax, qmax) * scale : 0.f;
    }
  }
}

void add(float* x, const float* y, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 8 * 4096)
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

void gemm_s8(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W, const float* w_scale,
             bool w_per_row, const float* bias, float* C, int ldc) {
  if (M == 0) return;
  if (M <= 4) {  // decode
    static const GemvFn gemv = pick_gemv();
    gemv(M, N, K, A, lda, a_scale, W, w_scale, w_per_row, bias, C, ldc);
    return;
  }
  // oneDNN's s8s8s32 GEMM is exact only with VNNI (vpdpbusd): on AVX2 / AVX-512 without it, it
  // multiplies with vpmaddubsw, whose 16-bit pair sums saturate (255 * 127 * 2 > 32767) and give
  // wrong products (measured: 19 % relative error on random codes, AMD EPYC with AVX2 only).
  // There, every int8 GEMM takes the exact float path below.
  static const bool vnni = __builtin_cpu_supports("avx512vnni");
  if ((K >= 32 && K < 512) || !vnni) {
    // float GEMMs over the codes in chunks of at most 1024 columns: each chunk's partial sums are
    // integers below 1024 * 127^2 < 2^24, exact in float; the chunks add up in int32.
    constexpr int kChunk = 1024;
    const int nch = (K + kChunk - 1) / kChunk;
    float* af = scratch(kSlotQGemmA, size_t(M) * K);
    float* wf = scratch(kSlotQGemmW, size_t(N) * K);  // chunk after chunk, each {N, kc}
#pragma omp parallel for schedule(static) if (size_t(M) * K > 65536)
    for (int m = 0; m < M; ++m)
#pragma omp simd
      for (int k = 0; k < K; ++k) af[size_t(m) * K + k] = float(A[size_t(m) * lda + k]);
    for (int c = 0; c < nch; ++c) {
      const int k0 = c * kChunk, kc = std::min(kChunk, K - k0);
      float* wc = wf + size_t(N) * k0;
#pragma omp parallel for schedule(static) if (size_t(N) * kc > 65536)
      for (int n = 0; n < N; ++n)
#pragma omp simd
        for (int k = 0; k < kc; ++k) wc[size_t(n) * kc + k] = float(W[size_t(n) * K + k0 + k]);
    }
    if (nch == 1) {
      gemm(M, N, K, af, K, wf, nullptr, C, ldc);  // C holds the exact integer sums
    } else {
      auto* acc = reinterpret_cast<int32_t*>(scratch(kSlotQAcc, size_t(M) * N));
      float* part = scratch(kSlotQDeq0, size_t(M) * N);
      std::fill(acc, acc + size_t(M) * N, 0);
      for (int c = 0; c < nch; ++c) {
        const int k0 = c * kChunk, kc = std::min(kChunk, K - k0);
        gemm(M, N, kc, af + k0, K, wf + size_t(N) * k0, nullptr, part, N);
#pragma omp parallel for simd schedule(static) if (size_t(M) * N > 65536)
        for (size_t i = 0; i < size_t(M) * N; ++i) acc[i] += int32_t(part[i]);
      }
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) C[size_t(m) * ldc + n] = float(acc[size_t(m) * N + n]);
    }
#pragma omp parallel for schedule(static) if (M > 16)
    for (int m = 0; m < M; ++m) {
      float* c = C + size_t(m) * ldc;
#pragma omp simd
      for (int n = 0; n < N; ++n) c[n] = c[n] * (a_scale * w_scale[w_per_row ? n : 0]) + (bias ? bias[n] : 0.f);
    }
    return;
  }
  auto* acc = reinterpret_cast<int32_t*>(scratch(kSlotQAcc, size_t(M) * N));
  const int32_t co = 0;
  const dnnl_status_t st = dnnl_gemm_s8s8s32('N', 'T', 'F', M, N, K, 1.0f, A, lda, 0, W, K, 0, 0.0f, acc, N, &co);
  if (st != dnnl_success)
    fail("internal error: dnnl_gemm_s8s8s32 failed (status {}) for M={} N={} K={}", int(st), M, N, K);
#pragma omp parallel for schedule(static) if (M > 16)
  for (int m = 0; m < M; ++m) {
    const int32_t* a = acc + size_t(m) * N;
    float* c = C + size_t(m) * ldc;
    if (w_per_row) {
#pragma omp simd
      for (int n = 0; n < N; ++n) c[n] = float(a[n]) * (a_scale * w_scale[n]) + (bias ? bias[n] : 0.f);
    } else {
      const float s = a_scale * w_scale[0];
#pragma omp simd
      for (int n = 0; n < N; ++n) c[n] = float(a[n]) * s + (bias ? bias[n] : 0.f);
    }
  }
}

namespace {
constexpr int kBlock = 64;  // channels per work item
}

void conv1d_s8_silu(int nseq, const int* offs, const int8_t* x, int ldx, float x_scale, int C, int K, const int8_t* w,
                    float w_scale, const float* b, int8_t* const* states, const float* out_scale, int8_t* out,
                    int ldo) {
  MQ_ASSERT(K >= 1 && K <= 8);
  const int nblk = (C + kBlock - 1) / kBlock;
  const float sxw = x_scale * w_scale;
#pragma omp parallel for collapse(2) schedule(static)
  for (int s = 0; s < nseq; ++s)
    for (int blk = 0; blk < nblk; ++blk) {
      const int c0 = blk * kBlock, nc = std::min(C, c0 + kBlock) - c0;
      const int T = offs[s + 1] - offs[s];
      const int8_t* xs = x + size_t(offs[s]) * ldx + c0;
      int8_t* os = out + size_t(offs[s]) * ldo + c0;
      int8_t* st = states ? states[s] : nullptr;
      int8_t head[8][kBlock] = {};  // {K-1, nc}: the carried inputs (zeros without a state)
      if (st)
        for (int k = 0; k < K - 1; ++k) std::memcpy(head[k], st + size_t(k) * C + c0, size_t(nc));
      int32_t wt[8][kBlock];
      float bias[kBlock], inv[kBlock];
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < nc; ++j) wt[k][j] = w[size_t(c0 + j) * K + k];
      for (int j = 0; j < nc; ++j) {
        bias[j] = b ? b[c0 + j] : 0.f;
        inv[j] = 1.0f / out_scale[c0 + j];
      }
      for (int t = 0; t < T; ++t) {
        int32_t acc[kBlock] = {};
        for (int k = 0; k < K; ++k) {
          const int src = t - (K - 1) + k;  // input row feeding tap k
          const int8_t* xr = src >= 0 ? xs + size_t(src) * ldx : head[K - 1 + src];
#pragma omp simd
          for (int j = 0; j < nc; ++j) acc[j] += wt[k][j] * int32_t(xr[j]);
        }
        int8_t* o = os + size_t(t) * ldo;
#pragma omp simd
        for (int j = 0; j < nc; ++j) o[j] = code(fast_silu(float(acc[j]) * sxw + bias[j]) * inv[j]);
      }
      if (st)  // new state: the last K-1 inputs of (state ++ x)
        for (int k = 0; k < K - 1; ++k) {
          const int src = T - (K - 1) + k;
          const int8_t* xr = src >= 0 ? xs + size_t(src) * ldx : head[K - 1 + src];
          std::memcpy(st + size_t(k) * C + c0, xr, size_t(nc));
        }
    }
}

namespace {
// codes {rows, cols} (stride ld) * s -> float {rows, cols} dense, in a scratch slot
float* dequant(int slot, const int8_t* q, int rows, int cols, int ld, float s) {
  float* v = scratch(slot, size_t(rows) * cols);
#pragma omp parallel for schedule(static) if (size_t(rows) * cols > 32768)
  for (int r = 0; r < rows; ++r) {
#pragma omp simd
    for (int c = 0; c < cols; ++c) v[size_t(r) * cols + c] = float(q[size_t(r) * ld + c]) * s;
  }
  return v;
}
float* dequant(int slot, const int8_t* q, int rows, int cols, int ld, const float* s) {  // per column
  float* v = scratch(slot, size_t(rows) * cols);
#pragma omp parallel for schedule(static) if (size_t(rows) * cols > 32768)
  for (int r = 0; r < rows; ++r) {
#pragma omp simd
    for (int c = 0; c < cols; ++c) v[size_t(r) * cols + c] = float(q[size_t(r) * ld + c]) * s[c];
  }
  return v;
}
}  // namespace

void selective_scan_s8(int nseq, const int* offs, int D, int N, const int8_t* u, int ldu, float su, const int8_t* delta,
                       int ldd, float sd, const float* delta_bias, const float* A, const int8_t* B, int ldb, float sB,
                       const int8_t* C, int ldc, float sC, const float* Dskip, const int8_t* z, int ldz, float sz,
                       float* const* states, float* y, int ldy) {
  const int T = offs[nseq];
  const float* uf = dequant(kSlotQDeq0, u, T, D, ldu, su);
  const float* df = dequant(kSlotQDeq1, delta, T, D, ldd, sd);
  const float* bf = dequant(kSlotQDeq2, B, T, N, ldb, sB);
  const float* cf = dequant(kSlotQDeq3, C, T, N, ldc, sC);
  const float* zf = dequant(kSlotQDeq4, z, T, D, ldz, sz);
  selective_scan(nseq, offs, D, N, uf, D, df, D, delta_bias, A, bf, N, cf, N, Dskip, zf, D, states, y, ldy);
}

void ssd_scan_s8(int nseq, const int* offs, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                 const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B, int ldb,
                 const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip, float* const* states, float* y,
                 int ldy) {
  const int T = offs[nseq];
  const float* xf = dequant(kSlotQDeq0, x, T, H * P, ldx, sx);
  const float* df = dequant(kSlotQDeq1, dt, T, H, lddt, sdt);
  const float* bf = dequant(kSlotQDeq2, B, T, G * N, ldb, sB);
  const float* cf = dequant(kSlotQDeq3, C, T, G * N, ldc, sC);
  ssd_scan(nseq, offs, H, P, G, N, xf, H * P, df, H, dt_bias, A, bf, G * N, cf, G * N, Dskip, states, y, ldy);
}

namespace {
// f(offset, length, scale) for each run of state elements sharing a scale; threads over heads
template <class F>
void state_runs(int H, int N, int P, int ndg, const float* scale, const int* dim_end, F f) {
#pragma omp parallel for schedule(static) if (size_t(H) * N * P > 32768)
  for (int h = 0; h < H; ++h)
    for (int n = 0; n < N; ++n) {
      const size_t o = (size_t(h) * N + n) * P;
      const float* s = scale + (size_t(h) * N + n) * ndg;
      for (int j = 0, p0 = 0; j < ndg; ++j) {
        const int p1 = dim_end[h * ndg + j];
        f(o + size_t(p0), p1 - p0, s[j]);
        p0 = p1;
      }
    }
}
}  // namespace

void state_quantize(const float* x, int8_t* q, int H, int N, int P, int ndg, const float* scale, const int* dim_end) {
  state_runs(H, N, P, ndg, scale, dim_end, [&](size_t o, int len, float s) {
    const float inv = 1.0f / s;
#pragma omp simd
    for (int i = 0; i < len; ++i) q[o + size_t(i)] = code(x[o + size_t(i)] * inv);
  });
}
void state_dequantize(const int8_t* q, float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end) {
  state_runs(H, N, P, ndg, scale, dim_end, [&](size_t o, int len, float s) {
#pragma omp simd
    for (int i = 0; i < len; ++i) x[o + size_t(i)] = float(q[o + size_t(i)]) * s;
  });
}
void state_fake_quantize(float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end, int bits) {
  const float qmax = float((1 << (bits - 1)) - 1);
  state_runs(H, N, P, ndg, scale, dim_end, [&](size_t o, int len, float s) {
    const float inv = 1.0f / s;
#pragma omp simd
    for (int i = 0; i < len; ++i) {
      const float v = std::nearbyint(x[o + size_t(i)] * inv);
      x[o + size_t(i)] = v == v ? std::clamp(v, -qmax, qmax) * s : 0.f;
    }
  });
}

// The float arithmetic of ssd_scan (ops_cpu.cc) for T = 1, element by element in the same order
// and statement shapes, with the state row dequantized before and requantized after in local
// buffers: the same values as state_dequantize -> ssd_scan_s8 -> state_quantize (tested equal).
void ssd_step_s8_qstate(int nseq, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx, const int8_t* dt,
                        int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B, int ldb,
                        const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip,
                        int8_t* const* qstates, int ndg, const float* state_scale, const int* dim_end, float* y, int ldy) {
  constexpr int kMaxHeadDim = 512, kMaxGroups = 64;
  MQ_ASSERT(P <= kMaxHeadDim && G > 0 && H % G == 0 && ndg > 0 && ndg <= kMaxGroups);
  const int hpg = H / G;
  // the token rows dequantized as ssd_scan_s8 does (small: nseq rows)
  const float* xf = dequant(kSlotQDeq0, x, nseq, H * P, ldx, sx);
  const float* df = dequant(kSlotQDeq1, dt, nseq, H, lddt, sdt);
  const float* bf = dequant(kSlotQDeq2, B, nseq, G * N, ldb, sB);
  const float* cf = dequant(kSlotQDeq3, C, nseq, G * N, ldc, sC);
#pragma omp parallel for collapse(2) schedule(static)
  for (int s = 0; s < nseq; ++s)
    for (int hd = 0; hd < H; ++hd) {
      const int g = hd / hpg;
      int8_t* q = qstates[s] + size_t(hd) * N * P;
      const float* sc = state_scale + size_t(hd) * N * ndg;
      const int* de = dim_end + size_t(hd) * ndg;
      float acc[kMaxHeadDim], dx[kMaxHeadDim], hn[kMaxHeadDim];
      const float Ah = A[hd], Dh = Dskip[hd], bh = dt_bias[hd];
      const float d = softplus(df[size_t(s) * H + hd] + bh);
      const float dA = std::exp(d * Ah);
      const float* xr = xf + size_t(s) * H * P + size_t(hd) * P;
      const float* Br = bf + size_t(s) * G * N + size_t(g) * N;
      const float* Cr = cf + size_t(s) * G * N + size_t(g) * N;
#pragma omp simd
      for (int p = 0; p < P; ++p) {
        dx[p] = d * xr[p];
        acc[p] = 0.f;
      }
      int grp[kMaxHeadDim];  // the scale group of each column of this head's state rows
      for (int j = 0, p0 = 0; j < ndg; ++j) {
        for (int p = p0; p < de[j]; ++p) grp[p] = j;
        p0 = de[j];
      }
      float inv[kMaxGroups];
      for (int n = 0; n < N; ++n) {
        const float bn = Br[n], cn = Cr[n];
        int8_t* qn = q + size_t(n) * P;
        const float* sn = sc + size_t(n) * ndg;
        for (int j = 0; j < ndg; ++j) inv[j] = 1.0f / sn[j];  // as state_quantize: x * (1 / s)
        // dequantize (state_dequantize), the step (ssd_scan's statements), requantize (state_quantize)
#pragma omp simd
        for (int p = 0; p < P; ++p) hn[p] = float(qn[p]) * sn[grp[p]];
#pragma omp simd
        for (int p = 0; p < P; ++p) {
          hn[p] = dA * hn[p] + dx[p] * bn;
          acc[p] += hn[p] * cn;
        }
#pragma omp simd
        for (int p = 0; p < P; ++p) qn[p] = code(hn[p] * inv[grp[p]]);
      }
      float* yr = y + size_t(s) * ldy + size_t(hd) * P;
#pragma omp simd
      for (int p = 0; p < P; ++p) yr[p] = acc[p] + Dh * xr[p];
    }
}

}  // namespace mambaq::MAMBAQ_CPU_NS
