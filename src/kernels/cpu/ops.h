// CPU kernels: the fast versions (vectorised, threaded, packed sequences) of the op contracts
// stated in kernels/ref/ops.h. Reached through the backend table (kernels/backend.h); the tests
// compare each with the reference on random data.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/workspace.h"

namespace mambaq {

namespace cpu {

// Packed sequences: sequence s holds rows offs[s] .. offs[s+1]-1; states[s] may be null.
void rmsnorm(const float* x, const float* w, float* out, int T, int d, float eps);
void layernorm(const float* x, const float* w, const float* b, float* out, int T, int d, float eps);
void conv1d_silu(int nseq, const int* offs, const float* x, int ldx, int C, int K, const float* w, const float* b,
                 float* const* states, float* out, int ldo);
void selective_scan(int nseq, const int* offs, int D, int N, const float* u, int ldu, const float* delta, int ldd,
                    const float* delta_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                    const float* Dskip, const float* z, int ldz, float* const* states, float* y, int ldy);
void ssd_scan(int nseq, const int* offs, int H, int P, int G, int N, const float* x, int ldx, const float* dt,
              int lddt, const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
              const float* Dskip, float* const* states, float* y, int ldy);
void gated_rmsnorm(float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                   bool norm_before_gate);
void log_softmax_at(const float* logits, int V, int target, double* logprob, int* argmax);
// oneDNN sgemm: C = A W^T (+ bias)
void gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc);

// int8 kernels: same contracts as ref:: (packed sequences for conv and scans).
void quantize(const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq);
void dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx);
void fake_quantize(float* x, int rows, int cols, int ldx, float scale, int bits);
void add(float* x, const float* y, size_t n);
// The instruction set of the hand-written int8 dot products, chosen once from the CPU's
// feature bits: "avx512-bw" or "portable" (oneDNN chooses its own for the GEMMs, AMX included).
const char* isa();
// oneDNN s8s8s32 GEMM (VNNI/AMX chosen by oneDNN at run time); for M <= 4 an AVX-512 GEMV;
// for 32 <= K < 512 (dt_proj, small in_proj) oneDNN's int8 kernels were 1.2-3x slower than its
// sgemm (BENCHMARKS.md), so those run as an fp32 GEMM over the int8 codes, which is exact: every
// partial sum is an integer below K * 127^2 < 2^24.
void gemm_s8(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W, const float* w_scale,
             bool w_per_row, const float* bias, float* C, int ldc);
void conv1d_s8_silu(int nseq, const int* offs, const int8_t* x, int ldx, float x_scale, int C, int K, const int8_t* w,
                    float w_scale, const float* b, int8_t* const* states, const float* out_scale, int8_t* out, int ldo);
void selective_scan_s8(int nseq, const int* offs, int D, int N, const int8_t* u, int ldu, float su, const int8_t* delta,
                       int ldd, float sd, const float* delta_bias, const float* A, const int8_t* B, int ldb, float sB,
                       const int8_t* C, int ldc, float sC, const float* Dskip, const int8_t* z, int ldz, float sz,
                       float* const* states, float* y, int ldy);
void ssd_scan_s8(int nseq, const int* offs, int H, int P, int G, int N, const int8_t* x, int ldx, float sx,
                 const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B, int ldb,
                 float sB, const int8_t* C, int ldc, float sC, const float* Dskip, float* const* states, float* y,
                 int ldy);

}  // namespace cpu

}  // namespace mambaq
