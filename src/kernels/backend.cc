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

void r_ssd_scan_s8(int nseq, const int* offs, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                   const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B,
                   int ldb, const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip, float* const* states,
                   float* y, int ldy) {
  for (int s = 0; s < nseq; ++s) {
    const size_t o = size_t(offs[s]);
    ref::ssd_scan_s8(offs[s + 1] - offs[s], H, P, G, N, x + o * ldx, ldx, sx, dt + o * lddt, lddt, sdt, dt_bias, A,
                     B + o * ldb, ldb, sB, C + o * ldc, ldc, sC, Dskip, states ? states[s] : nullptr, y + o * ldy, ldy);
  }
}

// The decode step as its definition: dequantize the state, one step of the scan, quantize it.
void r_ssd_step_s8_qstate(int nseq, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx,
                          const int8_t* dt, int lddt, float sdt, const float* dt_bias, const float* A, const int8_t* B,
                          int ldb, const float* sB, const int8_t* C, int ldc, const float* sC, const float* Dskip,
                          int8_t* const* qstates, int ndg, const float* state_scale, const int* dim_end, float* y,
                          int ldy) {
  std::vector<float> st(size_t(H) * N * P);
  for (int s = 0; s < nseq; ++s) {
    ref::state_dequantize(qstates[s], st.data(), H, N, P, ndg, state_scale, dim_end);
    ref::ssd_scan_s8(1, H, P, G, N, x + size_t(s) * ldx, ldx, sx, dt + size_t(s) * lddt, lddt, sdt, dt_bias, A,
                     B + size_t(s) * ldb, ldb, sB, C + size_t(s) * ldc, ldc, sC, Dskip, st.data(), y + size_t(s) * ldy, ldy);
    ref::state_quantize(st.data(), qstates[s], H, N, P, ndg, state_scale, dim_end);
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
    r_selective_scan_s8, r_ssd_scan_s8, ref::state_quantize, ref::state_dequantize, ref::state_fake_quantize,
    r_ssd_step_s8_qstate, ref::gemm_w4, ref::gemm_s8w4,
};

// One table per instruction-set variant of the cpu kernels (same sources, compiled for
// x86-64-v4 / v3 / v2: see kernels/cpu/ops.h).
#define MAMBAQ_CPU_TABLE(NS, NAME, ISA)                                                                      \
  Backend {                                                                                                \
    NAME, ISA, NS::rmsnorm, NS::layernorm, NS::conv1d_silu, NS::selective_scan, NS::ssd_scan,               \
        NS::gated_rmsnorm, NS::gemm, NS::log_softmax_at, NS::add, hadamard_transform, NS::quantize,        \
        NS::dequantize, NS::fake_quantize, NS::gemm_s8, NS::conv1d_s8_silu, NS::selective_scan_s8,         \
        NS::ssd_scan_s8, NS::state_quantize, NS::state_dequantize, NS::state_fake_quantize,                \
        NS::ssd_step_s8_qstate, NS::gemm_w4, NS::gemm_s8w4                                                 \
  }

const Backend kCpuV4 = MAMBAQ_CPU_TABLE(cpu_v4, "cpu-v4", "x86-64-v4 (AVX-512)");
const Backend kCpuV3 = MAMBAQ_CPU_TABLE(cpu_v3, "cpu-v3", "x86-64-v3 (AVX2, FMA)");
const Backend kCpuV2 = MAMBAQ_CPU_TABLE(cpu_v2, "cpu-v2", "x86-64-v2 (SSE4.2)");

// Feature by feature (clang 14 does not know the level names GCC 12 accepts); every CPU with
// these also has the level's remaining features (F16C, LZCNT, MOVBE come with AVX2 + BMI2).
bool cpu_has(const Backend& b) {
  __builtin_cpu_init();
  const bool v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("sse4.1") &&
                  __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("popcnt");
  const bool v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  if (&b == &kCpuV4) return v4;
  if (&b == &kCpuV3) return v3;
  return v2;
}

// The widest variant this CPU runs.
const Backend& cpu_best() {
  for (const Backend* b : {&kCpuV4, &kCpuV3, &kCpuV2})
    if (cpu_has(*b)) return *b;
  return kCpuV2;
}

}  // namespace

const Backend& backend(const std::string& name) {
  if (name == "ref") return kRef;
  if (name == "cpu") return cpu_best();
  for (const Backend* b : {&kCpuV4, &kCpuV3, &kCpuV2})
    if (name == b->name) {
      if (!cpu_has(*b)) fail("backend '{}' needs {}, which this CPU lacks", name, b->isa);
      return *b;
    }
  fail("backend '{}' is not in this build (ref, cpu, cpu-v4, cpu-v3, cpu-v2)", name);
}

std::vector<std::string> backend_names() {
  std::vector<std::string> v = {"ref"};
  for (const Backend* b : {&kCpuV4, &kCpuV3, &kCpuV2})
    if (cpu_has(*b)) v.push_back(b->name);
  return v;
}

const Backend& default_backend() {
  static const Backend& b = [&]() -> const Backend& {
    const char* e = std::getenv("MAMBAQ_BACKEND");
    return e && *e ? backend(e) : cpu_best();
  }();
  return b;
}

}  // namespace mambaq
