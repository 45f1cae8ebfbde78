// FP32 projections through OpenBLAS (Debian's OpenMP build): C = A W^T (+ bias).
#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/ops.h"

namespace mambaq {

void cpu::gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc) {
  if (M == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, W, K, 0.0f, C, ldc);
  if (bias) {
#pragma omp parallel for schedule(static) if (M > 16)
    for (int m = 0; m < M; ++m) {
      float* c = C + size_t(m) * ldc;
#pragma omp simd
      for (int n = 0; n < N; ++n) c[n] += bias[n];
    }
  }
}

static int g_threads = 0;

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

}  // namespace mambaq
