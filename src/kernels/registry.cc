// The backend registry, the host memory functions and Buffer.
#include "kernels/registry.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "kernels/backend.h"
#include "kernels/host_memory.h"
#include "mambaq/error.h"

namespace mambaq {

const char* op_name(Op op) {
  static const char* const names[] = {"rmsnorm",
                                      "layernorm",
                                      "conv1d_silu",
                                      "selective_scan",
                                      "ssd_scan",
                                      "gated_rmsnorm",
                                      "gemm",
                                      "add",
                                      "hadamard",
                                      "quantize",
                                      "dequantize",
                                      "fake_quantize",
                                      "state_quantize",
                                      "state_dequantize",
                                      "state_fake_quantize",
                                      "embed",
                                      "score_rows",
                                      "check_finite",
                                      "gather_rows"};
  static_assert(sizeof(names) / sizeof(names[0]) == size_t(Op::kCount));
  return names[size_t(op)];
}

namespace host_memory {

void* alloc(void*, size_t bytes) {
  if (bytes == 0) bytes = 64;
  void* p = ::operator new(bytes, std::align_val_t(64), std::nothrow);
  if (!p) fail("out of memory: could not allocate {} MiB", bytes >> 20);
  return p;
}
void release(void*, void* p) { ::operator delete(p, std::align_val_t(64)); }
void copy(void*, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}
void copy2d(void*, void* dst, size_t ldd, const void* src, size_t lds, size_t row_bytes, size_t rows) {
  for (size_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<char*>(dst) + r * ldd, static_cast<const char*>(src) + r * lds, row_bytes);
}
void fill(void*, void* dst, int byte, size_t bytes) { std::memset(dst, byte, bytes); }
void synchronize(void*) {}
bool supports(void*, Op, OpFormats f) {
  const bool act = f.act == DType::F32 || f.act == DType::I8;
  const bool w = f.weight == WFormat::F32 || f.weight == WFormat::S8 || f.weight == WFormat::S4 ||
                 (f.act == DType::F32 && (f.weight == WFormat::F16 || f.weight == WFormat::BF16));
  const bool st = f.state == DType::F32 || f.state == DType::I8;
  return act && w && st;
}

}  // namespace host_memory

// ---- Buffer ----
Buffer::Buffer(BackendRef b, size_t bytes) : b_(std::move(b)), n_(bytes) {
  MQ_ASSERT(b_);
  p_ = (*b_)->alloc((*b_)->ctx, bytes);
}
Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    b_ = std::move(o.b_);
    p_ = o.p_, n_ = o.n_;
    o.p_ = nullptr, o.n_ = 0;
  }
  return *this;
}
void Buffer::reset() {
  if (p_) (*b_)->free((*b_)->ctx, p_);
  p_ = nullptr, n_ = 0;
}
Buffer Buffer::from_host(BackendRef b, const void* src, size_t bytes) {
  Buffer r(std::move(b), bytes);
  if (bytes) (*r.b_)->upload((*r.b_)->ctx, r.p_, src, bytes);
  return r;
}

// ---- registry ----
namespace {

struct Registry {
  std::mutex mu;
  std::vector<BackendInfo> list;
  bool builtins = false;
};
Registry& registry() {
  static Registry r;
  return r;
}
// The built-in backends, registered on first use (static registration objects in a static
// library are dropped by the linker when nothing references them).
void ensure_builtins() {
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> g(r.mu);
    if (r.builtins) return;
    r.builtins = true;
  }
  register_ref_backend();
  register_cpu_backends();
#ifdef MAMBAQ_WITH_CUDA
  register_cuda_backends();
#endif
}

// A table with an op left out is refused when it is opened, not found as a null at the call.
void check_table(const Backend& b) {
  const void* const fns[] = {(void*)b.alloc,
                             (void*)b.free,
                             (void*)b.upload,
                             (void*)b.download,
                             (void*)b.copy,
                             (void*)b.copy2d,
                             (void*)b.fill,
                             (void*)b.synchronize,
                             (void*)b.supports,
                             (void*)b.rmsnorm,
                             (void*)b.layernorm,
                             (void*)b.conv1d_silu,
                             (void*)b.selective_scan,
                             (void*)b.ssd_scan,
                             (void*)b.gated_rmsnorm,
                             (void*)b.gemm,
                             (void*)b.add,
                             (void*)b.hadamard,
                             (void*)b.embed,
                             (void*)b.score_rows,
                             (void*)b.check_finite,
                             (void*)b.gather_rows,
                             (void*)b.quantize,
                             (void*)b.dequantize,
                             (void*)b.fake_quantize,
                             (void*)b.state_quantize,
                             (void*)b.state_dequantize,
                             (void*)b.state_fake_quantize};
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); ++i)
    if (!fns[i]) fail("internal error: backend '{}' leaves entry {} of its table empty", b.name ? b.name : "?", i);
  if (!b.name || !b.isa || !b.device) fail("internal error: a backend table without name, isa or device");
}

std::string names_list(const std::vector<BackendInfo>& v) {
  std::string s;
  for (const auto& i : v) {
    if (!s.empty()) s += ", ";
    s += i.name;
    if (const std::string why = i.available(); !why.empty()) s += " (not here: " + why + ")";
  }
  return s;
}

}  // namespace

void register_backend(BackendInfo info) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  for (const auto& i : r.list)
    if (i.name == info.name) fail("internal error: backend '{}' registered twice", info.name);
  r.list.push_back(std::move(info));
}

std::vector<BackendInfo> registered_backends() {
  ensure_builtins();
  std::lock_guard<std::mutex> g(registry().mu);
  return registry().list;
}

std::vector<std::string> backend_names() {
  std::vector<std::string> v;
  for (const auto& i : registered_backends())
    if (i.available().empty()) v.push_back(i.name);
  return v;
}

BackendRef open_backend(const std::string& spec) {
  const auto list = registered_backends();
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon), arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  for (const auto& i : list) {
    if (i.name != name) continue;
    if (const std::string why = i.available(); !why.empty()) fail("backend '{}' cannot run here: {}", spec, why);
    BackendRef b = i.open(arg);
    check_table(b->get());
    return b;
  }
  fail("backend '{}' is not in this build (registered: {})", spec, names_list(list));
}

std::string default_backend_name() {
  const char* e = std::getenv("MAMBAQ_BACKEND");
  return e && *e ? std::string(e) : std::string("cpu");
}

BackendRef default_backend() { return open_backend(default_backend_name()); }

const Backend& host_backend() {
  static const BackendRef b = open_backend("cpu");
  return b->get();
}

}  // namespace mambaq
