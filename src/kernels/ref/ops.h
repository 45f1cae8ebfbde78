// Reference kernels: scalar, obviously right, one sequence at a time. Each op's contract is
// stated here; kernels/cpu (and later kernels/cuda) implement the same contracts fast, and
// tests/test_kernels*.cc compare every backend with these on random data. Activations are
// row-major {T, C} with an explicit row stride (ld) so that slices of a wider projection can be
// used in place.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mambaq {

namespace ref {

// out {T, d} = x {T, d} * rsqrt(mean(x^2) + eps) * w {d}
void rmsnorm(const float* x, const float* w, float* out, int T, int d, float eps);
// out {T, d} = (x - mean(x)) * rsqrt(var(x) + eps) * w {d} + b {d} (biased variance, as torch)
void layernorm(const float* x, const float* w, const float* b, float* out, int T, int d, float eps);

// Causal depthwise conv1d + SiLU over one sequence.
// x {T, C} (row stride ldx), w {C, K}, b {C} or null, state {K-1, C} or null (= zeros; updated when given),
// out {T, C} (row stride ldo)
void conv1d_silu(const float* x, int ldx, int T, int C, int K, const float* w, const float* b, float* state,
                 float* out, int ldo);

// Mamba1 selective scan over one sequence.
// u, delta, z {T, D}; B, C {T, N}; A {D, N}; delta_bias, Dskip {D}; state {D, N} (in/out, null = zeros)
// dt = softplus(delta + delta_bias); h = exp(dt*A) h + dt*B*u; y = (C.h + Dskip*u) * silu(z)
void selective_scan(int T, int D, int N, const float* u, int ldu, const float* delta, int ldd,
                    const float* delta_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                    const float* Dskip, const float* z, int ldz, float* state, float* y, int ldy);

// Mamba2 SSD scan over one sequence, recurrent form (exactly equal to the chunked form).
// x {T, H*P}; dt {T, H} (raw, before dt_bias and softplus); B, C {T, G*N}; A, dt_bias, Dskip {H};
// state {H, N, P} (in/out, null = zeros; headdim innermost so the update is contiguous);
// y {T, H*P}. Head h uses group h / (H/G).
void ssd_scan(int T, int H, int P, int G, int N, const float* x, int ldx, const float* dt, int lddt,
              const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
              const float* Dskip, float* state, float* y, int ldy);

// Gated RMSNorm (Mamba2), in place on y {T, D}; z {T, D} (row stride ldz); w {D}; RMS over groups
// of `group` channels. norm_before_gate: y = norm(y)*w*silu(z), else y = norm(y*silu(z))*w.
void gated_rmsnorm(float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                   bool norm_before_gate);

// C {M, N} (row stride ldc) = A {M, K} (row stride lda) x W^T, W {N, K}; + bias {N} if given.
void gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc);

// For one row of logits {V}: log-softmax at `target`, and the first index of the maximum.
void log_softmax_at(const float* logits, int V, int target, double* logprob, int* argmax);

// ---- int8 kernels (Quamba W8A8). Codes q ~ x / scale, symmetric, [-127, 127]. ----

// q {rows, cols} (row stride ldq) = clamp(round_half_even(x / scale)) of x {rows, cols} (row stride ldx)
void quantize(const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq);

// x {rows, cols} (row stride ldx) = q * scale
void dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx);
// In place: x = clamp(round_half_even(x / scale), -qmax, qmax) * scale, qmax = 2^(bits-1) - 1
void fake_quantize(float* x, int rows, int cols, int ldx, float scale, int bits);
// x {n} += y {n}
void add(float* x, const float* y, size_t n);

// C {M, N} (row stride ldc) = (A {M, K} x W^T) * a_scale * w_scale[n or 0] (+ bias {N});
// A, W int8 ({N, K}), products accumulated exactly in int32.
void gemm_s8(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W, const float* w_scale,
             bool w_per_row, const float* bias, float* C, int ldc);

// Causal depthwise conv1d over int8 inputs x {T, C} (scale x_scale) with int8 weights w {C, K}
// (scale w_scale) and float bias, SiLU, requantized per channel: out = q(silu(acc*sx*sw + b), out_scale[c]).
// state {K-1, C} int8 codes of the carried inputs (null = zeros; updated when given).
void conv1d_s8_silu(const int8_t* x, int ldx, float x_scale, int T, int C, int K, const int8_t* w, float w_scale,
                    const float* b, int8_t* state, const float* out_scale, int8_t* out, int ldo);

// Selective scan reading int8 u, delta, B, C, z with their scales (dequantized, then FP32 math as
// the reference kernel does); state in float.
void selective_scan_s8(int T, int D, int N, const int8_t* u, int ldu, float su, const int8_t* delta, int ldd,
                       float sd, const float* delta_bias, const float* A, const int8_t* B, int ldb, float sB,
                       const int8_t* C, int ldc, float sC, const float* Dskip, const int8_t* z, int ldz, float sz,
                       float* state, float* y, int ldy);

// SSD scan reading int8 x, dt, B, C with their scales (x: one per channel {H*P}; B, C: one per
// column {G*N}, so that Quamba2's head-group and SSD-group scales fit; dt: one); state in float {H, N, P}.
void ssd_scan_s8(int T, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx, const int8_t* dt, int lddt,
                 float sdt, const float* dt_bias, const float* A, const int8_t* B, int ldb, const float* sB, const int8_t* C,
                 int ldc, const float* sC, const float* Dskip, float* state, float* y, int ldy);

// ---- the SSM state {H, N, P} with Quamba2's grouped scales: element (h, n, p) uses
// scale[(h * N + n) * ndg + j], j the dim group of p in head h (dim_end {H, ndg}: end of each
// group, the last = P). Rounding as quantize (half to even, clamp to +-qmax). ----
void state_quantize(const float* x, int8_t* q, int H, int N, int P, int ndg, const float* scale, const int* dim_end);
void state_dequantize(const int8_t* q, float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end);
void state_fake_quantize(float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end, int bits);

// ---- 4-bit weights (Quamba2 W4A16 / W4A8). W {N, K} packed S4 (include/mambaq/tensor.h:
// blocks of 32 columns, byte j = column j | column j+16 << 4, each code + 8), K % 32 == 0;
// scales ws {N, ceil(K / group)}, group % 32 == 0. ----

// The code of column k of a packed row.
inline int s4_at(const uint8_t* row, int k) {
  const uint8_t b = row[(k / 32) * 16 + (k % 16)];
  return int((k % 32) < 16 ? (b & 15) : (b >> 4)) - 8;
}

// W4A16: C {M, N} = A {M, K} (float) x dequant(W)^T (+ bias); dequant(W)[n, k] = code * ws[n, k / group].
void gemm_w4(int M, int N, int K, const float* A, int lda, const uint8_t* W, const float* ws, int group,
             const float* bias, float* C, int ldc);

// W4A8: C {M, N} = a_scale * sum_g ws[n, g] * (A_g . W_g) (+ bias), with A int8 codes and each
// group's dot product exact in int32.
void gemm_s8w4(int M, int N, int K, const int8_t* A, int lda, float a_scale, const uint8_t* W, const float* ws,
               int group, const float* bias, float* C, int ldc);

}  // namespace ref

}  // namespace mambaq
