// FP32 projections through oneDNN's sgemm: C = A W^T (+ bias).
#include <oneapi/dnnl/dnnl.h>

#include "kernels/cpu/ops.h"
#include "mambaq/error.h"

namespace mambaq {

void MAMBAQ_CPU_NS::gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc) {
  if (M == 0) return;
  const dnnl_status_t st = dnnl_sgemm('N', 'T', M, N, K, 1.0f, A, lda, W, K, 0.0f, C, ldc);
  if (st != dnnl_success) fail("internal error: dnnl_sgemm failed (status {}) for M={} N={} K={}", int(st), M, N, K);
  if (bias) {
#pragma omp parallel for schedule(static) if (M > 16)
    for (int m = 0; m < M; ++m) {
      float* c = C + size_t(m) * ldc;
#pragma omp simd
      for (int n = 0; n < N; ++n) c[n] += bias[n];
    }
  }
}

}  // namespace mambaq
