// The cuda backend's table and registration (C++20, compiled by the host compiler); the
// operations are in backend_cuda.cu.
#include <string>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/registry.h"
#include "mambaq/error.h"

namespace mambaq {

[[noreturn]] void cuda_fail(const std::string& message) { fail("{}", message); }

namespace {

using namespace cuda_impl;

const Backend kCuda{
    .name = "cuda",
    .isa = "CUDA sm_80 / sm_90 (float kernels; cuBLAS fp32, bf16/fp16 weights on the tensor cores)",
    .device = "cuda",
    .host_memory = false,
    .alloc = c_alloc,
    .free = c_free,
    .upload = c_upload,
    .download = c_download,
    .copy = c_copy,
    .copy2d = c_copy2d,
    .fill = c_fill,
    .synchronize = c_sync,
    .supports = c_supports,
    .rmsnorm = c_rmsnorm,
    .layernorm = c_layernorm,
    .conv1d_silu = c_conv,
    .selective_scan = c_scan,
    .ssd_scan = c_ssd,
    .gated_rmsnorm = c_gated,
    .gemm = c_gemm,
    .add = c_add,
    .hadamard = c_hadamard,
    .embed = c_embed,
    .score_rows = c_score,
    .check_finite = c_finite,
    .gather_rows = c_gather,
    .quantize = c_quantize,
    .dequantize = c_dequantize,
    .fake_quantize = c_fake,
    .state_quantize = c_sq,
    .state_dequantize = c_sdq,
    .state_fake_quantize = c_sfq,
};

BackendRef open_cuda(const std::string& arg) {
  int dev = 0;
  if (!arg.empty()) {
    size_t used = 0;
    try {
      dev = std::stoi(arg, &used);
    } catch (...) {
      used = 0;
    }
    if (used != arg.size() || dev < 0)
      fail("backend 'cuda:{}': the device must be a number (cuda:0, cuda:1, ...)", arg);
  }
  return std::make_shared<BackendHandle>(kCuda, make_ctx(dev));
}

}  // namespace

void register_cuda_backends() {
  register_backend({.name = "cuda",
                    .description = "NVIDIA GPUs (cuda:N picks the device); fp32 (--dtype bf16/fp16 weights) and fake-quant plans",
                    .available = [] { return device_count() > 0 ? std::string() : std::string("no CUDA device"); },
                    .open = open_cuda,
                    .rank = 20});
}

}  // namespace mambaq
