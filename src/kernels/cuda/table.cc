// The cuda backend's table and registration (C++20, compiled by the host compiler); the
// operations are in backend_cuda.cu.
#include <cstdlib>
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
    .add_norm = c_add_norm,
    .gather_rows = c_gather,
    .quantize = c_quantize,
    .dequantize = c_dequantize,
    .fake_quantize = c_fake,
    .state_quantize = c_sq,
    .state_dequantize = c_sdq,
    .state_fake_quantize = c_sfq,
    .graph_begin = c_graph_begin,
    .graph_end = c_graph_end,
    .graph_launch = c_graph_launch,
    .graph_free = c_graph_free,
};

// $MAMBAQ_CUDA_PROFILE=1: the same table with every compute op between two CUDA events (their
// GPU time, summed by op, goes to stderr when the instance closes); no graphs then, so that each
// op is timed where it runs.
template <const char* Name, auto F>
struct Prof;
template <const char* Name, class... A, void (*F)(void*, A...)>
struct Prof<Name, F> {
  static void call(void* ctx, A... a) {
    prof_begin(ctx);
    F(ctx, a...);
    prof_end(ctx, Name);
  }
};
#define MQ_PROF(op, fn)                                 \
  static constexpr char k_##op[] = #op;                \
  t.op = Prof<k_##op, fn>::call
Backend profiled() {
  Backend t = kCuda;
  MQ_PROF(rmsnorm, c_rmsnorm);
  MQ_PROF(layernorm, c_layernorm);
  MQ_PROF(conv1d_silu, c_conv);
  MQ_PROF(selective_scan, c_scan);
  MQ_PROF(ssd_scan, c_ssd);
  MQ_PROF(gated_rmsnorm, c_gated);
  MQ_PROF(gemm, c_gemm);
  MQ_PROF(add, c_add);
  MQ_PROF(hadamard, c_hadamard);
  MQ_PROF(embed, c_embed);
  MQ_PROF(score_rows, c_score);
  MQ_PROF(check_finite, c_finite);
  MQ_PROF(gather_rows, c_gather);
  MQ_PROF(add_norm, c_add_norm);
  MQ_PROF(fake_quantize, c_fake);
  MQ_PROF(state_fake_quantize, c_sfq);
  t.graph_begin = nullptr, t.graph_end = nullptr, t.graph_launch = nullptr, t.graph_free = nullptr;
  return t;
}
#undef MQ_PROF

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
  const char* prof = std::getenv("MAMBAQ_CUDA_PROFILE");
  const bool profile = prof && *prof && std::string(prof) != "0";
  return std::make_shared<BackendHandle>(profile ? profiled() : kCuda, make_ctx(dev));
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
