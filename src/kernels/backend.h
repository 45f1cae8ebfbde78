// The device seam. Everything the forward pass, the scoring and the quantizers compute is reached
// through a Backend: a table of operations plus the instance's context (for a device: the device,
// its stream and library handles) and its memory (alloc, free, upload, download, copy, fill,
// synchronize). Every pointer an operation receives is backend memory (allocated by this
// backend, or — for backends whose memory is the host's, `host_memory` — any host pointer), with
// one stated exception: the few small host arrays that describe a call's shape (Batch::offs,
// StateView::seq) so that a device backend can size its launches; each of them comes with its
// copy in backend memory (`*_dev`).
//
// Backends are registered by name (kernels/registry.cc): `ref` (scalar, obviously right: the
// contracts of kernels/ref/ops.h), `cpu-v4` / `cpu-v3` / `cpu-v2` (kernels/cpu, vectorised and
// threaded, compiled for x86-64-v4 / v3 / v2) and `cpu` (the widest this CPU runs). A new backend
// is one folder, one `register_backend` call and one CMake option (docs/design.md).
//
// Activations are row-major {rows, cols} with a row stride `ld` (slices of a wider projection are
// used in place). Packed batches: sequence s holds rows offs[s] .. offs[s+1]-1; its state may be
// null (start from zeros, keep nothing).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mambaq/tensor.h"

namespace mambaq {

// ---- typed views (the arguments every backend reads) ----

// A packed batch: nseq sequences, offs {nseq + 1} on the host (launch shapes) and in backend memory.
struct Batch {
  int nseq = 0;
  const int* offs = nullptr;      // host
  const int* offs_dev = nullptr;  // backend memory, the same values
  int rows() const { return offs[nseq]; }
  int len(int s) const { return offs[s + 1] - offs[s]; }
};

// An activation operand {rows, cols}: F32 values (F16/BF16 where `supports` says so), or I8
// codes with value ~ code * scale: one scale for the operand (`scale`) or one per column
// (`col_scale`, backend memory; Quamba2's grouped scales).
struct ActView {
  const void* data = nullptr;
  int ld = 0;
  DType dtype = DType::F32;
  float scale = 0;                    // I8 with one scale
  const float* col_scale = nullptr;   // I8 with a scale per column (overrides `scale`)
  const float* f() const { return static_cast<const float*>(data); }
  const int8_t* q() const { return static_cast<const int8_t*>(data); }
};

// A weight in its stored format (include/mambaq/tensor.h QTensor), data and scales in backend memory.
struct WeightView {
  const void* data = nullptr;
  WFormat format = WFormat::F32;
  int rows = 0, cols = 0;
  Granularity granularity = Granularity::Tensor;
  int group = 0;                      // S4: columns per scale
  const float* scales = nullptr;      // Tensor {1} (also `scale`), Channel {rows}, Group {rows, cols / group}
  float scale = 0;                    // the tensor's scale (Tensor granularity), readable by the host
  const float* f() const { return static_cast<const float*>(data); }
  const int8_t* s8() const { return static_cast<const int8_t*>(data); }
  const uint8_t* s4() const { return static_cast<const uint8_t*>(data); }
};

// The kept states of a packed batch: seq[s] is sequence s's state (backend memory) or null.
// `seq` is a host array (the backend decides per sequence what to launch); `seq_dev` is the same
// array of pointers in backend memory.
struct StateView {
  void* const* seq = nullptr;
  void* const* seq_dev = nullptr;
  DType dtype = DType::F32;  // F32 states, or I8 codes (conv: at the conv input's scale; SSD: grouped, below)
};

// Quamba2's grouped SSM-state scales, per head: scale {H, N, ndg}, dim_end {H, ndg} (backend memory).
struct StateScalesView {
  int ndg = 0;
  const float* scale = nullptr;
  const int* dim_end = nullptr;
};

// Views in one line (tests, benchmarks, host procedures).
inline ActView act_f32(const float* p, int ld) { return {p, ld, DType::F32, 0.f, nullptr}; }
inline ActView act_s8(const int8_t* p, int ld, float scale, const float* col_scale = nullptr) {
  return {p, ld, DType::I8, scale, col_scale};
}
inline WeightView w_f32(const float* p, int rows, int cols) { return {p, WFormat::F32, rows, cols, Granularity::Tensor, 0, nullptr, 0.f}; }
// S8 codes with one scale (`scales` {1}) or one per row (Channel, `scales` {rows}); `scale` = scales[0].
inline WeightView w_s8(const int8_t* p, int rows, int cols, const float* scales, bool per_row, float scale0) {
  return {p, WFormat::S8, rows, cols, per_row ? Granularity::Channel : Granularity::Tensor, 0, scales, scale0};
}
inline WeightView w_s4(const uint8_t* p, int rows, int cols, int group, const float* scales) {
  return {p, WFormat::S4, rows, cols, Granularity::Group, group, scales, 0.f};
}
// A batch whose offsets are readable by the backend as they are (host-memory backends).
inline Batch host_batch(int nseq, const int* offs) { return {nseq, offs, offs}; }

// ---- one argument struct per operation with many operands ----

// out = SiLU(causal depthwise conv1d(x) + bias): x {T, C}; w {C, K}; states {K-1, C} per sequence.
// F32: x, w, out and states float. I8: x codes (one scale), w S8 (tensor scale), states int8 codes
// at x's scale, out int8 codes at out.col_scale (conv + SiLU + requantize fused).
struct ConvArgs {
  Batch b;
  int C = 0, K = 0;
  ActView x;
  WeightView w;
  const float* bias = nullptr;  // {C} or null
  StateView st;
  void* out = nullptr;
  int ldo = 0;
  const float* out_scale = nullptr;  // I8: {C}
};

// Mamba1 selective scan (ref::selective_scan): u, delta, z {T, D}; B, C {T, N}; A {D, N};
// delta_bias, Dskip {D}; states {D, N} float. All five operands F32, or all I8 (one scale each).
struct ScanArgs {
  Batch b;
  int D = 0, N = 0;
  ActView u, delta, B, C, z;
  const float *delta_bias = nullptr, *A = nullptr, *Dskip = nullptr;
  StateView st;
  float* y = nullptr;
  int ldy = 0;
};

// Mamba2 SSD (ref::ssd_scan): x {T, H*P}; dt {T, H}; B, C {T, G*N}; A, dt_bias, Dskip {H};
// states {H, N, P}. F32 operands, or I8 (x, B, C with per-column scales, dt with one scale).
// I8 states (st.dtype) are Quamba2's grouped codes (`qs`): only for decode (every sequence one
// token, every state given): dequantize, one step, requantize, in registers.
struct SsdArgs {
  Batch b;
  int H = 0, P = 0, G = 0, N = 0;
  ActView x, dt, B, C;
  const float *dt_bias = nullptr, *A = nullptr, *Dskip = nullptr;
  StateView st;
  StateScalesView qs;
  float* y = nullptr;
  int ldy = 0;
};

// C {M, N} (row stride ldc) = A {M, K} x W^T (+ bias {N}). A F32 with W F32 (sgemm) or S4 (W4A16);
// A I8 (one scale) with W S8 (W8A8: Tensor or Channel scales) or S4 (W4A8); A F32 with W F16 /
// BF16 (--dtype): A rounded to W's type (to nearest even), products summed in float.
struct GemmArgs {
  int M = 0, N = 0, K = 0;
  ActView A;
  WeightView W;
  const float* bias = nullptr;
  float* C = nullptr;
  int ldc = 0;
};

// out {T, cols} (row stride ldo) = rows `ids` {T} (backend memory, each in [0, rows)) of table
// (F32, or S8/S4 with per-row or per-group scales: a quantized embedding, dequantized per row).
struct EmbedArgs {
  int T = 0;
  const int32_t* ids = nullptr;
  WeightView table;
  float* out = nullptr;
  int ldo = 0;
};

// Per row r of logits {rows, V} (row stride ld): logprob[r] = log_softmax(row)[target[r]] and
// argmax[r] = the first index of the row's maximum (torch/numpy argmax). All backend memory.
struct ScoreArgs {
  int rows = 0, V = 0, ld = 0;
  const float* logits = nullptr;
  const int32_t* targets = nullptr;
  double* logprob = nullptr;
  int32_t* argmax = nullptr;
};

// The first non-finite element of x {n}: if `rec` (backend memory) holds no record yet
// (rec->index < 0) and x has a NaN or Inf, store {tag, its index, its value}.
struct NonFinite {
  int64_t index = -1;
  int32_t tag = 0;
  float value = 0;
};

// The boundary between two blocks (or the last block and the final norm): r {T, d} += y {T, d}
// (y null: nothing added); then r is checked as check_finite(r, T * d, tag, rec); then out {T, d}
// = rmsnorm(r) * w, or layernorm(r) * w + b when `layer_norm` (ref/ops.h). The same numbers as
// add, check_finite and the norm one after the other (which is what a backend without it runs).
struct AddNormArgs {
  float* r = nullptr;
  const float* y = nullptr;
  const float *w = nullptr, *b = nullptr;
  float* out = nullptr;
  int T = 0, d = 0;
  float eps = 0;
  bool layer_norm = false;
  int32_t tag = 0;
  NonFinite* rec = nullptr;
};

// Operations a backend may decline (Backend::supports): the op and the formats of its operands.
enum class Op : uint8_t {
  RmsNorm, LayerNorm, Conv1dSilu, SelectiveScan, SsdScan, GatedRmsNorm, Gemm, Add, Hadamard, Quantize, Dequantize,
  FakeQuantize, StateQuantize, StateDequantize, StateFakeQuantize, Embed, ScoreRows, CheckFinite, GatherRows, kCount
};
const char* op_name(Op op);
// What an op is asked to run on: the activation dtype, the weight format and (states) the state dtype.
struct OpFormats {
  DType act = DType::F32;
  WFormat weight = WFormat::F32;
  DType state = DType::F32;
};

struct Backend {
  const char* name = nullptr;
  const char* isa = nullptr;  // what the table's hand-written kernels use, e.g. "x86-64-v4 (AVX-512)"
  const char* device = nullptr;  // "host", or the device's name
  // The backend's memory is host memory: any host pointer may be passed, and its buffers are
  // readable by the host (ref, cpu). A device backend, or the test-only checked backend, says false.
  bool host_memory = true;
  void* ctx = nullptr;  // the instance's context (owned by its BackendHandle)

  // ---- memory (bytes; synchronous unless the backend says otherwise) ----
  void* (*alloc)(void* ctx, size_t bytes) = nullptr;
  void (*free)(void* ctx, void* p) = nullptr;
  void (*upload)(void* ctx, void* dst, const void* src, size_t bytes) = nullptr;     // host -> backend
  void (*download)(void* ctx, void* dst, const void* src, size_t bytes) = nullptr;   // backend -> host
  void (*copy)(void* ctx, void* dst, const void* src, size_t bytes) = nullptr;       // backend -> backend
  // rows x bytes_per_row from src (row stride lds bytes) to dst (row stride ldd bytes), in backend memory
  void (*copy2d)(void* ctx, void* dst, size_t ldd, const void* src, size_t lds, size_t row_bytes, size_t rows) = nullptr;
  void (*fill)(void* ctx, void* dst, int byte, size_t bytes) = nullptr;
  void (*synchronize)(void* ctx) = nullptr;
  // Whether the op runs on these formats here (callers refuse cleanly, tests skip).
  bool (*supports)(void* ctx, Op op, OpFormats f) = nullptr;

  // ---- float ----
  // out {T, d} = rmsnorm(x) * w; layernorm(x) * w + b (ref/ops.h)
  void (*rmsnorm)(void* ctx, const float* x, const float* w, float* out, int T, int d, float eps) = nullptr;
  void (*layernorm)(void* ctx, const float* x, const float* w, const float* b, float* out, int T, int d,
                    float eps) = nullptr;
  void (*conv1d_silu)(void* ctx, const ConvArgs& a) = nullptr;
  void (*selective_scan)(void* ctx, const ScanArgs& a) = nullptr;
  void (*ssd_scan)(void* ctx, const SsdArgs& a) = nullptr;
  // Mamba2's gated RMSNorm in place on y {T, D}; z float {T, D} (row stride ldz)
  void (*gated_rmsnorm)(void* ctx, float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                        bool norm_before_gate) = nullptr;
  void (*gemm)(void* ctx, const GemmArgs& a) = nullptr;
  // x {n} += y {n}
  void (*add)(void* ctx, float* x, const float* y, size_t n) = nullptr;
  // Orthonormal Hadamard transform of each row of x {rows, n} (row stride ld), or its inverse.
  void (*hadamard)(void* ctx, float* x, int rows, int n, int ld, bool transpose) = nullptr;
  void (*embed)(void* ctx, const EmbedArgs& a) = nullptr;
  void (*score_rows)(void* ctx, const ScoreArgs& a) = nullptr;
  void (*check_finite)(void* ctx, const float* x, int64_t n, int32_t tag, NonFinite* rec) = nullptr;
  // Optional (null: the session runs add, check_finite and the norm): AddNormArgs above.
  void (*add_norm)(void* ctx, const AddNormArgs& a) = nullptr;
  // dst row i {cols} = src row idx[i] (idx {n} in backend memory; row strides lds, ldd)
  void (*gather_rows)(void* ctx, const float* src, int lds, const int32_t* idx, int n, int cols, float* dst,
                      int ldd) = nullptr;

  // ---- int8 (symmetric codes, value ~ code * scale) ----
  void (*quantize)(void* ctx, const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq) = nullptr;
  void (*dequantize)(void* ctx, const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) = nullptr;
  // In place quantize-dequantize (the fake-quant simulation), `bits` wide codes.
  void (*fake_quantize)(void* ctx, float* x, int rows, int cols, int ldx, float scale, int bits) = nullptr;
  // The SSM state {H, N, P} of one sequence with Quamba2's grouped scales.
  void (*state_quantize)(void* ctx, const float* x, int8_t* q, int H, int N, int P, StateScalesView s) = nullptr;
  void (*state_dequantize)(void* ctx, const int8_t* q, float* x, int H, int N, int P, StateScalesView s) = nullptr;
  void (*state_fake_quantize)(void* ctx, float* x, int H, int N, int P, StateScalesView s, int bits) = nullptr;

  // ---- graphs (optional: null where the backend has none) ----
  // graph_begin .. graph_end records the ops queued in between (they do not run) into a graph
  // that graph_launch replays, reading and writing the same pointers each time. No host copy,
  // allocation or synchronization may happen in between; graph_end returns null (and the backend
  // is usable again) when the capture failed.
  void (*graph_begin)(void* ctx) = nullptr;
  void* (*graph_end)(void* ctx) = nullptr;
  void (*graph_launch)(void* ctx, void* graph) = nullptr;
  void (*graph_free)(void* ctx, void* graph) = nullptr;

  bool can(Op op, OpFormats f = {}) const { return supports(ctx, op, f); }
  bool has_graphs() const { return graph_begin != nullptr; }
};

// An instance: the table and the context it owns. Sessions, states and buffers hold a
// shared_ptr to it, so it outlives them.
class BackendHandle {
 public:
  BackendHandle(Backend table, std::shared_ptr<void> ctx) : b_(table), ctx_(std::move(ctx)) { b_.ctx = ctx_.get(); }
  const Backend& operator*() const { return b_; }
  const Backend* operator->() const { return &b_; }
  const Backend& get() const { return b_; }

 private:
  Backend b_;
  std::shared_ptr<void> ctx_;
};
using BackendRef = std::shared_ptr<const BackendHandle>;

// A buffer in a backend's memory (move-only; freed through its backend).
class Buffer {
 public:
  Buffer() = default;
  Buffer(BackendRef b, size_t bytes);
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }
  void reset();
  void* data() const { return p_; }
  template <class T> T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return n_; }
  bool empty() const { return p_ == nullptr; }
  const BackendRef& backend() const { return b_; }
  // A buffer holding a copy of host bytes.
  static Buffer from_host(BackendRef b, const void* src, size_t bytes);
  template <class T> static Buffer from_vector(BackendRef b, const std::vector<T>& v) {
    return from_host(std::move(b), v.data(), v.size() * sizeof(T));
  }
  template <class T> std::vector<T> to_vector(size_t n) const {
    std::vector<T> v(n);
    if (n) (*b_)->download((*b_)->ctx, v.data(), p_, n * sizeof(T));
    return v;
  }

 private:
  BackendRef b_;
  void* p_ = nullptr;
  size_t n_ = 0;
};

// ---- the registry ----
struct BackendInfo {
  std::string name;        // "cuda", "cpu-v4", ...: `--backend` matches it, or its prefix before ':'
  std::string description;
  // Whether this machine can run it (an empty string) or why not.
  std::string (*available)() = nullptr;
  // A new instance; `arg` is what followed "name:" (e.g. the device index), or empty.
  BackendRef (*open)(const std::string& arg) = nullptr;
  int rank = 0;            // the default backend is the available one with the highest rank
};
void register_backend(BackendInfo info);
// Every registered backend, and whether it runs here.
std::vector<BackendInfo> registered_backends();
// The names of the backends this machine runs (ref, cpu, the cpu variants the CPU supports, ...).
std::vector<std::string> backend_names();
// An instance by name (`cpu`, `cpu-v3`, `ref`, `cuda:1`, ...); an unknown or unavailable name is
// one error listing the registered ones. Instances of host backends are shared.
BackendRef open_backend(const std::string& name);
// The backend runs use unless told otherwise: $MAMBAQ_BACKEND if set, else `cpu`.
std::string default_backend_name();
BackendRef default_backend();
// The host backend procedures with host arithmetic use (cpu): its pointers are host pointers.
const Backend& host_backend();

}  // namespace mambaq
