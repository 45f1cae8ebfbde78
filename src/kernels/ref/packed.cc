// The `ref` backend: the one-sequence reference kernels (kernels/ref/ops.h) wrapped for packed
// batches by looping over the sequences, under the typed contract (kernels/host_table.inc).
#include <cmath>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "kernels/backend.h"
#include "kernels/hadamard.h"
#include "kernels/host_memory.h"
#include "kernels/ref/ops.h"
#include "kernels/registry.h"
#include "mambaq/error.h"

namespace mambaq {
namespace refpk {

#include "kernels/packed_ops.inc"

void rmsnorm(const float* x, const float* w, float* out, int T, int d, float eps) {
  ref::rmsnorm(x, w, out, T, d, eps);
}
void layernorm(const float* x, const float* w, const float* b, float* out, int T, int d, float eps) {
  ref::layernorm(x, w, b, out, T, d, eps);
}
void conv1d_silu(int nseq, const int* offs, const float* x, int ldx, int C, int K, const float* w, const float* b,
                 float* const* states, float* out, int ldo) {
  for (int s = 0; s < nseq; ++s)
    ref::conv1d_silu(x + size_t(offs[s]) * ldx, ldx, offs[s + 1] - offs[s], C, K, w, b, states ? states[s] : nullptr,
                     out + size_t(offs[s]) * ldo, ldo);
}
void selective_scan(int nseq, const int* offs, int D, int N, const float* u, int ldu, const float* delta, int ldd,
                    const float* delta_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                    const float* Dskip, const float* z, int ldz, float* const* states, float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::selective_scan(offs[s + 1] - offs[s], D, N, u + o * ldu, ldu, delta + o * ldd, ldd, delta_bias, A, B + o * ldb,
                        ldb, C + o * ldc, ldc, Dskip, z + o * ldz, ldz, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}
void ssd_scan(int nseq, const int* offs, int H, int P, int G, int N, const float* x, int ldx, const float* dt, int lddt,
              const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
              const float* Dskip, float* const* states, float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::ssd_scan(offs[s + 1] - offs[s], H, P, G, N, x + o * ldx, ldx, dt + o * lddt, lddt, dt_bias, A, B + o * ldb,
                  ldb, C + o * ldc, ldc, Dskip, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}
void gated_rmsnorm(float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                   bool norm_before_gate) {
  ref::gated_rmsnorm(y, z, ldz, w, T, D, group, eps, norm_before_gate);
}
void log_softmax_at(const float* logits, int V, int target, double* logprob, int* argmax) {
  ref::log_softmax_at(logits, V, target, logprob, argmax);
}
void gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc) {
  ref::gemm(M, N, K, A, lda, W, bias, C, ldc);
}
void quantize(const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq) {
  ref::quantize(x, rows, cols, ldx, scale, q, ldq);
}
void dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
  ref::dequantize(q, rows, cols, ldq, scale, x, ldx);
}
void fake_quantize(float* x, int rows, int cols, int ldx, float scale, int bits) {
  ref::fake_quantize(x, rows, cols, ldx, scale, bits);
}
void add(float* x, const float* y, size_t n) { ref::add(x, y, n); }
void gemm_s8(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W, const float* w_scale,
             bool w_per_row, const float* bias, float* C, int ldc) {
  ref::gemm_s8(M, N, K, A, lda, a_scale, W, w_scale, w_per_row, bias, C, ldc);
}
void conv1d_s8_silu(int nseq, const int* offs, const int8_t* x, int ldx, float x_scale, int C, int K, const int8_t* w,
                    float w_scale, const float* b, int8_t* const* states, const float* out_scale, int8_t* out,
                    int ldo) {
  for (int s = 0; s < nseq; ++s)
    ref::conv1d_s8_silu(x + size_t(offs[s]) * ldx, ldx, x_scale, offs[s + 1] - offs[s], C, K, w, w_scale, b,
                        states ? states[s] : nullptr, out_scale, out + size_t(offs[s]) * ldo, ldo);
}
void selective_scan_s8(int nseq, const int* offs, int D, int N, const int8_t* u, int ldu, float su, const int8_t* delta,
                       int ldd, float sd, const float* delta_bias, const float* A, const int8_t* B, int ldb, float sB,
                       const int8_t* C, int ldc, float sC, const float* Dskip, const int8_t* z, int ldz, float sz,
                       float* const* states, float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::selective_scan_s8(offs[s + 1] - offs[s], D, N, u + o * ldu, ldu, su, delta + o * ldd, ldd, sd, delta_bias, A,
                           B + o * ldb, ldb, sB, C + o * ldc, ldc, sC, Dskip, z + o * ldz, ldz, sz,
                           states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}
void ssd_scan_s8(int nseq, const int* offs, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                 const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B, int ldb,
                 const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip, float* const* states,
                 float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::ssd_scan_s8(offs[s + 1] - offs[s], H, P, G, N, x + o * ldx, ldx, sx, dt + o * lddt, lddt, sdt, dt_bias, A,
                     B + o * ldb, ldb, sB, C + o * ldc, ldc, sC, Dskip, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}
void state_quantize(const float* x, int8_t* q, int H, int N, int P, int ndg, const float* scale, const int* dim_end) {
  ref::state_quantize(x, q, H, N, P, ndg, scale, dim_end);
}
void state_dequantize(const int8_t* q, float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end) {
  ref::state_dequantize(q, x, H, N, P, ndg, scale, dim_end);
}
void state_fake_quantize(float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end, int bits) {
  ref::state_fake_quantize(x, H, N, P, ndg, scale, dim_end, bits);
}
// The decode step as its definition: dequantize the state, one step of the scan, quantize it.
void ssd_step_s8_qstate(int nseq, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                        const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B,
                        int ldb, const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip,
                        int8_t* const* qstates, int ndg, const float* state_scale, const int* dim_end, float* y,
                        int ldy) {
  std::vector<float> st(size_t(H) * N * P);
  for (int s = 0; s < nseq; ++s) {
    ref::state_dequantize(qstates[s], st.data(), H, N, P, ndg, state_scale, dim_end);
    ref::ssd_scan_s8(1, H, P, G, N, x + size_t(s) * ldx, ldx, sx, dt + size_t(s) * lddt, lddt, sdt, dt_bias, A,
                     B + size_t(s) * ldb, ldb, sB, C + size_t(s) * ldc, ldc, sC, Dskip, st.data(), y + size_t(s) * ldy,
                     ldy);
    ref::state_quantize(st.data(), qstates[s], H, N, P, ndg, state_scale, dim_end);
  }
}
void gemm_w4(int M, int N, int K, const float* A, int lda, const uint8_t* W, const float* ws, int group,
             const float* bias, float* C, int ldc) {
  ref::gemm_w4(M, N, K, A, lda, W, ws, group, bias, C, ldc);
}
void gemm_s8w4(int M, int N, int K, const int8_t* A, int lda, float a_scale, const uint8_t* W, const float* ws,
               int group, const float* bias, float* C, int ldc) {
  ref::gemm_s8w4(M, N, K, A, lda, a_scale, W, ws, group, bias, C, ldc);
}
// The dense orthonormal H_n times each row, in double: O(n^2) per row, obviously right.
void hadamard(float* x, int rows, int n, int ld, bool transpose) {
  const std::vector<double> Hd = ref::hadamard_dense(n);
  std::vector<double> y(static_cast<size_t>(n));
  for (int r = 0; r < rows; ++r) {
    float* xr = x + size_t(r) * ld;
    for (int i = 0; i < n; ++i) {
      double acc = 0;
      for (int j = 0; j < n; ++j) acc += (transpose ? Hd[size_t(j) * n + i] : Hd[size_t(i) * n + j]) * xr[j];
      y[size_t(i)] = acc;
    }
    for (int i = 0; i < n; ++i) xr[i] = float(y[size_t(i)]);
  }
}

#include "kernels/host_table.inc"

}  // namespace refpk

void register_ref_backend() {
  register_backend(
      {.name = "ref",
       .description = "scalar reference kernels (kernels/ref), one sequence at a time: slow, obviously right",
       .available = [] { return std::string(); },
       .open = [](const std::string&) -> BackendRef {
         static const BackendRef b = std::make_shared<BackendHandle>(refpk::host_table("ref", "scalar"), nullptr);
         return b;
       },
       .rank = 0});
}

}  // namespace mambaq
