// The backend tables. `ref` wraps the one-sequence reference kernels for packed batches (a loop
// over the sequences); `cpu` points at the fast kernels.
#include "kernels/backend.h"

#include <cstdlib>

#include "kernels/cpu/ops.h"
#include "kernels/hadamard.h"
#include "kernels/ref/ops.h"
#include "mambaq/error.h"

namespace mambaq {

namespace {

// ---- ref: packed batches by looping over the sequences ----
void r_conv1d_silu(int nseq, const int* offs, const float* x, int ldx, int C, int K, const float* w, const float* b,
                   float* const* states, float* out, int ldo) {
  for (int s = 0; s < nseq; ++s)
    ref::conv1d_silu(x + size_t(offs[s]) * ldx, ldx, offs[s + 1] - offs[s], C, K, w, b, states ? states[s] : nullptr,
                     out + size_t(offs[s]) * ldo, ldo);
}

void r_selective_scan(int nseq, const int* offs, int D, int N, const float* u, int ldu, const float* delta, int ldd,
                      const float* delta_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                      const float* Dskip, const float* z, int ldz, float* const* states, float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::selective_scan(offs[s + 1] - offs[s], D, N, u + o * ldu, ldu, delta + o * ldd, ldd, delta_bias, A, B + o * ldb,
                        ldb, C + o * ldc, ldc, Dskip, z + o * ldz, ldz, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}

void r_ssd_scan(int nseq, const int* offs, int H, int P, int G, int N, const float* x, int ldx, const float* dt,
                int lddt, const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                const float* Dskip, float* const* states, float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::ssd_scan(offs[s + 1] - offs[s], H, P, G, N, x + o * ldx, ldx, dt + o * lddt, lddt, dt_bias, A, B + o * ldb,
                  ldb, C + o * ldc, ldc, Dskip, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}

void r_conv1d_s8_silu(int nseq, const int* offs, const int8_t* x, int ldx, float x_scale, int C, int K,
                      const int8_t* w, float w_scale, const float* b, int8_t* const* states, const float* out_scale,
                      int8_t* out, int ldo) {
  for (int s = 0; s < nseq; ++s)
    ref::conv1d_s8_silu(x + size_t(offs[s]) * ldx, ldx, x_scale, offs[s + 1] - offs[s], C, K, w, w_scale, b,
                        states ? states[s] : nullptr, out_scale, out + size_t(offs[s]) * ldo, ldo);
}

void r_selective_scan_s8(int nseq, const int* offs, int D, int N, const int8_t* u, int ldu, float su,
                         const int8_t* delta, int ldd, float sd, const float* delta_bias, const float* A,
                         const int8_t* B, int ldb, float sB, const int8_t* C, int ldc, float sC, const float* Dskip,
                         const int8_t* z, int ldz, float sz, float* const* states, float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::selective_scan_s8(offs[s + 1] - offs[s], D, N, u + o * ldu, ldu, su, delta + o * ldd, ldd, sd, delta_bias, A,
                           B + o * ldb, ldb, sB, C + o * ldc, ldc, sC, Dskip, z + o * ldz, ldz, sz,
                           states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}

void r_ssd_scan_s8(int nseq, const int* offs, int H, int P, int G, int N, const int8_t* x, int ldx, float sx,
                   const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B,
                   int ldb, float sB, const int8_t* C, int ldc, float sC, const float* Dskip, float* const* states,
                   float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::ssd_scan_s8(offs[s + 1] - offs[s], H, P, G, N, x + o * ldx, ldx, sx, dt + o * lddt, lddt, sdt, dt_bias, A,
                     B + o * ldb, ldb, sB, C + o * ldc, ldc, sC, Dskip, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}

// The dense orthonormal H_n times each row, in double: O(n^2) per row, obviously right.
void r_hadamard(float* x, int rows, int n, int ld, bool transpose) {
  const std::vector<double> H = ref::hadamard_dense(n);
  std::vector<double> y(static_cast<size_t>(n));
  for (int r = 0; r < rows; ++r) {
    float* xr = x + size_t(r) * ld;
    for (int i = 0; i < n; ++i) {
      double acc = 0;
      for (int j = 0; j < n; ++j) acc += (transpose ? H[size_t(j) * n + i] : H[size_t(i) * n + j]) * xr[j];
      y[size_t(i)] = acc;
    }
    for (int i = 0; i < n; ++i) xr[i] = float(y[size_t(i)]);
  }
}

const Backend kRef = {
    "ref",           "scalar",
    ref::rmsnorm,    ref::layernorm,         r_conv1d_silu,  r_selective_scan, r_ssd_scan,
    ref::gated_rmsnorm, ref::gemm,           ref::log_softmax_at, ref::add,   r_hadamard,
    ref::quantize,   ref::dequantize,        ref::fake_quantize, ref::gemm_s8, r_conv1d_s8_silu,
    r_selective_scan_s8, r_ssd_scan_s8,
};

const Backend& cpu_backend() {
  static const Backend b = {
      "cpu",          cpu::isa(),
      cpu::rmsnorm,   cpu::layernorm,         cpu::conv1d_silu, cpu::selective_scan, cpu::ssd_scan,
      cpu::gated_rmsnorm, cpu::gemm,          cpu::log_softmax_at, cpu::add,       hadamard_transform,
      cpu::quantize,  cpu::dequantize,        cpu::fake_quantize, cpu::gemm_s8,   cpu::conv1d_s8_silu,
      cpu::selective_scan_s8, cpu::ssd_scan_s8,
  };
  return b;
}

}  // namespace

const Backend& backend(const std::string& name) {
  if (name == "ref") return kRef;
  if (name == "cpu") return cpu_backend();
  fail("backend '{}' is not in this build (ref, cpu)", name);
}

std::vector<std::string> backend_names() { return {"ref", "cpu"}; }

const Backend& default_backend() {
  static const Backend& b = [&]() -> const Backend& {
    const char* e = std::getenv("MAMBAQ_BACKEND");
    return e && *e ? backend(e) : cpu_backend();
  }();
  return b;
}

}  // namespace mambaq
