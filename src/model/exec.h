// Running a plan: what the forward passes (mamba1.cc, mamba2.cc) call. They name ops and
// points; Exec decides, from the prepared plan, the weights' formats and the backend, which
// kernel runs and in which format each activation travels. Nothing here names a device: every
// pointer Exec hands a kernel is the backend's memory (weights uploaded by prepare_plan,
// activations in the session's Workspace, states in SeqState buffers).
#pragma once
#include <array>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kernels/backend.h"
#include "mambaq/session.h"
#include "model/plan.h"
#include "model/points.h"

namespace mambaq {

// The forward's buffers, one per slot, in the backend's memory (contents undefined between uses;
// each slot has one owner, so two live buffers never share one).
enum WsSlot {
  kSlotResidual, kSlotNormed, kSlotMixerOut, kSlotHidden,                      // model/session.cc
  kSlotInProj, kSlotConvOut, kSlotXProj, kSlotDelta, kSlotScanOut, kSlotUssm,  // model/mamba{1,2}.cc
  kSlotQIn, kSlotQInProj, kSlotQConv, kSlotQXProj, kSlotQDelta, kSlotQOut,     // model/exec.cc: int8 codes
  kSlotQState, kSlotGateZ, kSlotQHead, kSlotTapView,                                       // model/exec.cc
  kSlotTokens, kSlotOffs, kSlotStatePtrs, kSlotStatePtrsF, kSlotFinite, kSlotTapUp,  // per call
  kSlotScoreIdx, kSlotScoreRows, kSlotLogits, kSlotScores, kSlotArgmax,        // model/session.cc: scoring
  kSlotDecodeIn, kSlotDecodeOut,                                               // model/session.cc: decode
  kWsSlots
};

class Workspace {
 public:
  explicit Workspace(BackendRef b) : b_(std::move(b)), slots_(kWsSlots) {}
  void* bytes(int slot, size_t n);
  float* f(int slot, size_t n) { return static_cast<float*>(bytes(slot, n * sizeof(float))); }
  int8_t* q(int slot, size_t n) { return static_cast<int8_t*>(bytes(slot, n)); }
  size_t held() const;
  // Counts the slots' (re)allocations: a captured graph holds the slots' pointers, valid while
  // this is unchanged.
  uint64_t generation() const { return gen_; }

 private:
  BackendRef b_;
  std::vector<Buffer> slots_;
  uint64_t gen_ = 0;
};

// An activation between two ops: float values, or int8 codes with one scale per column (host
// values for the host's decisions, and the same scales in backend memory for the kernels).
struct Act {
  float* f = nullptr;
  int8_t* q = nullptr;
  const float* hscale = nullptr;  // codes: {cols} on the host
  const float* dscale = nullptr;  // codes: {cols} in backend memory
  int rows = 0, cols = 0, ld = 0;
  bool codes() const { return q != nullptr; }
  float s() const { return hscale[0]; }  // a slice quantized with one scale
  Act slice(int c0, int c1) const {
    Act a = *this;
    if (f) a.f = f + c0;
    if (q) a.q = q + c0, a.hscale = hscale + c0, a.dscale = dscale + c0;
    a.cols = c1 - c0;
    return a;
  }
  // The view a kernel reads: float, or codes with one scale (and the per-column scales).
  ActView view() const {
    if (!q) return {f, ld, DType::F32, 0.f, nullptr};
    return {q, ld, DType::I8, hscale[0], dscale};
  }
  static Act floats(float* f, int rows, int cols, int ld) { return {f, nullptr, nullptr, nullptr, rows, cols, ld}; }
};

// One use of a tap resolved for one layer: columns, scale, and what the plan does there.
struct UseExec {
  int c0, c1;
  float scale;  // 0 when the plan does not quantize it
  Prec prec;
};
// Quamba2's grouped SSM-state scales {G, nhg, ndg, N} laid out per head for the state kernels:
// scale {H, N, ndg}, dim_end {H, ndg}; `dev` views them in the backend's memory.
struct StateScales {
  int H = 0, N = 0, P = 0, ndg = 0;
  std::vector<float> scale;
  std::vector<int> dim_end;
  StateScalesView dev;
};

struct TapExec {
  std::string_view tap;
  std::vector<UseExec> uses;  // a grouped scale (Quamba2) is one use per run of columns sharing a scale
  std::vector<float> col_scale;  // int8: the scale of every column of the tap (codes' scales)
  const float* col_scale_dev = nullptr;
  bool int8 = false, fake = false;
  std::shared_ptr<StateScales> state;  // the ssm_state tap with grouped scales
};

// A projection as the plan runs it: the stored weight (`q`: S8/S4 codes, or F32) and, where the
// plan reads float weights (fp32 / fake plans, float layers, --fp-ops), those (`f`). Backend memory.
struct LinW {
  WeightView q, f;
  int N = 0, K = 0;
};
// A layer's weights as the backend reads them (null where the architecture has none).
struct LayerDev {
  const float *norm = nullptr, *norm_b = nullptr, *in_proj_b = nullptr, *conv_b = nullptr, *dt_proj_b = nullptr,
              *dt_bias = nullptr, *A = nullptr, *D = nullptr, *gnorm = nullptr, *out_proj_b = nullptr;
  std::array<LinW, kProjs> proj;
};

struct LayerExec {
  std::vector<TapExec> taps;
  std::array<Prec, kOpKinds> prec{};
  bool fake = false;                   // some op kind of the layer runs fake-quantized
  bool rotate = false;                 // the online Hadamard on out_proj's input
  std::array<Weight, kProjs> fw;       // the float weights float ops read, on the host (views, dequantized, or --fp-ops)
  LayerDev dev;
  const TapExec* tap(std::string_view name) const {
    for (const auto& t : taps)
      if (t.tap == name) return &t;
    return nullptr;
  }
};

struct PreparedPlan {
  std::unique_ptr<ExecPlan> plan;
  BackendRef backend;
  ModelWeights w;                      // shares the model's buffers (keeps them alive)
  std::vector<LayerExec> layers;
  LayerExec head;                      // layer -1
  Weight head_fw;                      // a quantized LM head's float weights, when its plan runs float
  Weight emb_fw;                       // --fp-ops head: the FP model's embedding
  LinW head_w;                         // the LM head as the backend reads it
  WeightView emb;                      // the embedding as the backend reads it
  const float *norm_f = nullptr, *norm_f_b = nullptr;
  int a_bits = 8;
  WFormat wdt = WFormat::F32;          // the float GEMM weights' type (SessionOptions::dtype)
  std::vector<Buffer> owned;           // what was uploaded
  size_t uploaded_bytes = 0;
};

// Resolve a plan against a model's weights and scales for a backend (fails naming a missing
// scale), uploading what that backend's kernels read. `fp`: the FP model --fp-ops takes float
// weights from (or null).
// `wdt`: the type the float GEMM weights (projections, LM head) take on the backend (F32, F16, BF16).
std::shared_ptr<PreparedPlan> prepare_plan(const ModelConfig& cfg, const ModelWeights& w, const QuantState* q,
                                           ExecPlan plan, const Model* fp, BackendRef backend,
                                           WFormat wdt = WFormat::F32);

// Per-layer pointers to each sequence's states (host arrays and their backend copies).
struct LayerStates {
  void* const* conv_f = nullptr;  // host {nseq}
  void* const* conv_q = nullptr;
  void* const* ssm_f = nullptr;
  void* const* ssm_q = nullptr;
  void* const* conv_f_dev = nullptr;  // the same arrays in backend memory
  void* const* conv_q_dev = nullptr;
  void* const* ssm_f_dev = nullptr;
  void* const* ssm_q_dev = nullptr;
};

// One forward call, one layer at a time: the ops of the mixers.
class Exec {
 public:
  Exec(const ModelConfig& cfg, const PreparedPlan& p, Workspace& ws, Tap* tap, Batch batch);
  void set_layer(int l, const LayerStates& st);

  // Sequences whose kept SSM state stays exact float between calls (SeqState::exact): no
  // (fake) quantization at the call boundary. Null: none.
  void set_exact(const char* exact) { exact_ = exact; }

  const Backend& k;
  void* const ctx;
  const int T, nseq;
  float* scratch(int slot, size_t n) { return ws_.f(slot, n); }

  // The tap `name` carries `a`: the plan's action at every use (keep, quantize-dequantize in place,
  // or int8 codes written to scratch `slot`), then the caller's tap. Returns `a` as its readers
  // take it.
  Act point(const char* name, Act a, int slot);
  // The plan's action at tap `name` without calling the caller's tap (the LM head's input).
  Act quantize_at(const char* name, Act a, int slot);
  // The scan's own copy of a tensor that two op kinds read (Mamba1's u), when they may differ.
  Act fork(Act a, int slot);
  // out {T, rows of W} = in W^T (+ bias): float GEMM, or int8 GEMM on codes with S8 weights.
  Act linear(Proj p, Act in, const float* bias, float* out);
  Act linear(const LinW& W, Act in, const float* bias, float* out);
  // SiLU(causal conv1d(in)) with the layer's conv states, into scratch `slot` (floats) or
  // `qslot` (int8 codes in give codes out, at the scales of tap `out_tap`: conv + SiLU +
  // requantize fused).
  Act conv1d_silu(Act in, const float* bias, const char* out_tap, int slot, int qslot);
  // Mamba1: y = selective_scan(u, delta, A, B, C, D) * SiLU(z); then the kept state's point.
  void selective_scan(Act u, Act delta, Act B, Act C, Act z, float* y);
  // Mamba2: y = SSD(x, dt, A, B, C) + D x; then the kept state's point.
  void ssd_scan(Act x, Act dt, Act B, Act C, float* y);
  // Mamba2: y = RMSNorm_grouped(y * SiLU(z)) * w, z read as float.
  void gated_rmsnorm(float* y, Act z);
  // H y in place when the plan rotates out_proj's input.
  void rotate(float* y, int cols);
  // The caller's tap on float values in backend memory {rows, cols} (downloaded and, edited in
  // place, uploaded again when the backend's memory is not the host's).
  void tap_floats(std::string_view name, float* data, int rows, int cols, std::span<const int> offs);

 private:
  const ModelConfig& cfg_;
  const PreparedPlan& p_;
  Workspace& ws_;
  Tap* tap_;
  Batch b_;
  std::span<const int> offs_;
  int l_ = 0;
  const LayerDev* L_ = nullptr;
  const LayerExec* le_ = nullptr;
  LayerStates st_;
  const char* exact_ = nullptr;
  void call_tap(std::string_view name, const Act& a);
  void state_point(const TapExec* te);
  void states_as_float(const TapExec& te, std::vector<void*>& f);
  void states_store(const std::vector<void*>& f, const TapExec& te);
  StateView float_states(const std::vector<void*>& f, int slot);
};

}  // namespace mambaq
