// The backend seam: every kernel the forward pass, the scoring and the quantizers run is reached
// through a table of functions. `ref` is scalar and obviously right (one sequence at a time,
// wrapped for packed batches); `cpu-v4`, `cpu-v3`, `cpu-v2` are the vectorised, threaded kernels
// compiled for x86-64-v4 (AVX-512), v3 (AVX2 + FMA) and v2 (SSE4.2), and `cpu` is the widest one
// this CPU runs, chosen at run time from its feature bits; a `cuda` table can be added beside them. Contracts of
// each op: kernels/ref/ops.h. Packed batches: sequence s holds rows offs[s] .. offs[s+1]-1;
// states[s] may be null (start from zeros, keep nothing).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mambaq {

struct Backend {
  const char* name;
  const char* isa;  // the instruction set the table's hand-written kernels use, e.g. "avx512-vnni"

  // ---- float ----
  void (*rmsnorm)(const float* x, const float* w, float* out, int T, int d, float eps);
  void (*layernorm)(const float* x, const float* w, const float* b, float* out, int T, int d, float eps);
  void (*conv1d_silu)(int nseq, const int* offs, const float* x, int ldx, int C, int K, const float* w,
                      const float* b, float* const* states, float* out, int ldo);
  void (*selective_scan)(int nseq, const int* offs, int D, int N, const float* u, int ldu, const float* delta,
                         int ldd, const float* delta_bias, const float* A, const float* B, int ldb, const float* C,
                         int ldc, const float* Dskip, const float* z, int ldz, float* const* states, float* y,
                         int ldy);
  void (*ssd_scan)(int nseq, const int* offs, int H, int P, int G, int N, const float* x, int ldx, const float* dt,
                   int lddt, const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                   const float* Dskip, float* const* states, float* y, int ldy);
  void (*gated_rmsnorm)(float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                        bool norm_before_gate);
  void (*gemm)(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc);
  void (*log_softmax_at)(const float* logits, int V, int target, double* logprob, int* argmax);
  // x {n} += y {n}
  void (*add)(float* x, const float* y, size_t n);
  // Orthonormal Hadamard transform of each row of x {rows, n} (row stride ld), or its inverse.
  void (*hadamard)(float* x, int rows, int n, int ld, bool transpose);

  // ---- int8 (symmetric codes, value ~ code * scale) ----
  void (*quantize)(const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq);
  void (*dequantize)(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx);
  // In place quantize-dequantize (the fake-quant simulation), `bits` wide codes.
  void (*fake_quantize)(float* x, int rows, int cols, int ldx, float scale, int bits);
  void (*gemm_s8)(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W,
                  const float* w_scale, bool w_per_row, const float* bias, float* C, int ldc);
  void (*conv1d_s8_silu)(int nseq, const int* offs, const int8_t* x, int ldx, float x_scale, int C, int K,
                         const int8_t* w, float w_scale, const float* b, int8_t* const* states,
                         const float* out_scale, int8_t* out, int ldo);
  void (*selective_scan_s8)(int nseq, const int* offs, int D, int N, const int8_t* u, int ldu, float su,
                            const int8_t* delta, int ldd, float sd, const float* delta_bias, const float* A,
                            const int8_t* B, int ldb, float sB, const int8_t* C, int ldc, float sC,
                            const float* Dskip, const int8_t* z, int ldz, float sz, float* const* states, float* y,
                            int ldy);
  // x's scales one per channel {H*P}, B's and C's one per column {G*N} (Quamba2's grouped scales)
  void (*ssd_scan_s8)(int nseq, const int* offs, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                      const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B,
                      int ldb, const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip,
                      float* const* states, float* y, int ldy);

  // The SSM state {H, N, P} with Quamba2's grouped scales {H, N, ndg} (dim_end {H, ndg}).
  void (*state_quantize)(const float* x, int8_t* q, int H, int N, int P, int ndg, const float* scale, const int* dim_end);
  void (*state_dequantize)(const int8_t* q, float* x, int H, int N, int P, int ndg, const float* scale,
                           const int* dim_end);
  void (*state_fake_quantize)(float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end, int bits);
  // One decode step of ssd_scan_s8 (row s is sequence s's one token) on states kept as int8 codes
  // with the grouped scales (qstates[s] {H, N, P}, none null): the same numbers as state_dequantize,
  // ssd_scan_s8 with T = 1 and state_quantize, without a float state (1 byte an element read and
  // written instead of 1 + 4 + 4 + 4 + 4 + 1).
  void (*ssd_step_s8_qstate)(int nseq, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                             const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A,
                             const int8_t* B, int ldb, const float* sB, const int8_t* C, int ldc, const float* sC,
                             const float* Dskip, int8_t* const* qstates, int ndg, const float* state_scale,
                             const int* dim_end, float* y, int ldy);

  // ---- 4-bit weights, packed S4 (include/mambaq/tensor.h), scales {N, ceil(K / group)} ----
  // W4A16: float activations.
  void (*gemm_w4)(int M, int N, int K, const float* A, int lda, const uint8_t* W, const float* ws, int group,
                  const float* bias, float* C, int ldc);
  // W4A8: int8 activation codes, each group's dot product exact in int32.
  void (*gemm_s8w4)(int M, int N, int K, const int8_t* A, int lda, float a_scale, const uint8_t* W, const float* ws,
                    int group, const float* bias, float* C, int ldc);
};

// "ref", "cpu" or a cpu variant (an error names the backend, or the instruction set the CPU lacks).
const Backend& backend(const std::string& name);
// The backends this CPU can run: ref and every cpu variant it supports.
std::vector<std::string> backend_names();
// The backend runs use unless told otherwise: cpu. $MAMBAQ_BACKEND=ref (or cpu-v3, ...) selects
// another (ref is slow; for checking a result end to end).
const Backend& default_backend();

}  // namespace mambaq
