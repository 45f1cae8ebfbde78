// The cuda backend's operations (backend_cuda.cu), with the signatures of the Backend table
// (kernels/backend.h); kernels/cuda/table.cc assembles the table and registers it. The .cu file is
// compiled as C++17 by nvcc and keeps fmt out; errors go through cuda_fail.
#pragma once
#include <memory>
#include <string>

#include "kernels/backend.h"

namespace mambaq {

[[noreturn]] void cuda_fail(const std::string& message);  // a mambaq::Error (table.cc)

namespace cuda_impl {

int device_count();                       // 0 when there is no usable device (or no driver)
std::shared_ptr<void> make_ctx(int dev);  // device, stream, cuBLAS handle

void* c_alloc(void* ctx, size_t bytes);
void c_free(void* ctx, void* p);
void c_upload(void* ctx, void* dst, const void* src, size_t n);
void c_download(void* ctx, void* dst, const void* src, size_t n);
void c_copy(void* ctx, void* dst, const void* src, size_t n);
void c_copy2d(void* ctx, void* dst, size_t ldd, const void* src, size_t lds, size_t rb, size_t rows);
void c_fill(void* ctx, void* dst, int byte, size_t n);
void c_sync(void* ctx);
void prof_begin(void* ctx);                 // $MAMBAQ_CUDA_PROFILE: events around each op
void prof_end(void* ctx, const char* op);
void c_graph_begin(void* ctx);
void* c_graph_end(void* ctx);
void c_graph_launch(void* ctx, void* g);
void c_graph_free(void* ctx, void* g);
void c_add_norm(void* ctx, const AddNormArgs& a);
bool c_supports(void* ctx, Op op, OpFormats f);
void c_rmsnorm(void* ctx, const float* x, const float* w, float* out, int T, int d, float eps);
void c_layernorm(void* ctx, const float* x, const float* w, const float* b, float* out, int T, int d, float eps);
void c_conv(void* ctx, const ConvArgs& a);
void c_scan(void* ctx, const ScanArgs& a);
void c_ssd(void* ctx, const SsdArgs& a);
void c_gated(void* ctx, float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
             bool nbg);
void c_gemm(void* ctx, const GemmArgs& a);
void c_add(void* ctx, float* x, const float* y, size_t n);
void c_hadamard(void* ctx, float* x, int rows, int n, int ld, bool transpose);
void c_embed(void* ctx, const EmbedArgs& a);
void c_score(void* ctx, const ScoreArgs& a);
void c_finite(void* ctx, const float* x, int64_t n, int32_t tag, NonFinite* rec);
void c_gather(void* ctx, const float* src, int lds, const int32_t* idx, int n, int cols, float* dst, int ldd);
void c_quantize(void* ctx, const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq);
void c_dequantize(void* ctx, const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx);
void c_fake(void* ctx, float* x, int rows, int cols, int ldx, float scale, int bits);
void c_sq(void* ctx, const float* x, int8_t* q, int H, int N, int P, StateScalesView s);
void c_sdq(void* ctx, const int8_t* q, float* x, int H, int N, int P, StateScalesView s);
void c_sfq(void* ctx, float* x, int H, int N, int P, StateScalesView s, int bits);

}  // namespace cuda_impl
}  // namespace mambaq
