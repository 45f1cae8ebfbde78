// Running a plan: what the forward passes (mamba1.cc, mamba2.cc) call. They name ops and
// points; Exec decides, from the prepared plan, the weights' formats and the backend, which
// kernel runs and in which format each activation travels. Nothing here names a device.
#pragma once
#include <array>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kernels/backend.h"
#include "mambaq/model.h"
#include "model/plan.h"
#include "model/points.h"

namespace mambaq {

// An activation between two ops: float values, or int8 codes with one scale per column.
struct Act {
  float* f = nullptr;
  int8_t* q = nullptr;
  const float* scale = nullptr;  // codes: {cols} (value ~ q * scale[c])
  int rows = 0, cols = 0, ld = 0;
  bool codes() const { return q != nullptr; }
  float s() const { return scale[0]; }  // a slice quantized with one scale
  Act slice(int c0, int c1) const {
    Act a = *this;
    if (f) a.f = f + c0;
    if (q) a.q = q + c0, a.scale = scale + c0;
    a.cols = c1 - c0;
    return a;
  }
  static Act floats(float* f, int rows, int cols, int ld) { return {f, nullptr, nullptr, rows, cols, ld}; }
};

// One use of a tap resolved for one layer: columns, scale, and what the plan does there.
struct UseExec {
  int c0, c1;
  float scale;  // 0 when the plan does not quantize it
  Prec prec;
};
// Quamba2's grouped SSM-state scales {G, nhg, ndg, N} laid out per head for the state kernels
// (kernels/backend.h state_quantize): scale {H, N, ndg}, dim_end {H, ndg}.
struct StateScales {
  int H = 0, N = 0, P = 0, ndg = 0;
  std::vector<float> scale;
  std::vector<int> dim_end;
};

struct TapExec {
  std::string_view tap;
  std::vector<UseExec> uses;  // a grouped scale (Quamba2) is one use per run of columns sharing a scale
  std::vector<float> col_scale;  // int8: the scale of every column of the tap (codes' scales)
  bool int8 = false, fake = false;
  std::shared_ptr<const StateScales> state;  // the ssm_state tap with grouped scales
};
struct LayerExec {
  std::vector<TapExec> taps;
  std::array<Prec, kOpKinds> prec{};
  bool fake = false;                   // some op kind of the layer runs fake-quantized
  bool rotate = false;                 // the online Hadamard on out_proj's input
  std::array<Weight, kProjs> fw;       // the float weights float ops read (views, dequantized, or --fp-ops)
  const TapExec* tap(std::string_view name) const {
    for (const auto& t : taps)
      if (t.tap == name) return &t;
    return nullptr;
  }
};
struct PreparedPlan {
  std::unique_ptr<ExecPlan> plan;
  std::vector<LayerExec> layers;
  LayerExec head;                      // layer -1
  Weight head_fw;                      // a quantized LM head's float weights, when its plan runs float
  Weight emb_fw;                       // --fp-ops head: the FP model's embedding
  int a_bits = 8;
};

// Resolve a plan against a model's weights and scales (fails naming a missing scale).
// `fp`: the FP model --fp-ops takes float weights from (or null).
std::shared_ptr<PreparedPlan> prepare_plan(const ModelConfig& cfg, const ModelWeights& w, const QuantState* q,
                                           ExecPlan plan, const Model* fp);

// One forward call, one layer at a time: the ops of the mixers.
class Exec {
 public:
  Exec(const ModelConfig& cfg, const PreparedPlan& p, const Backend& k, Tap* tap, std::span<const int> offs);
  void set_layer(int l, const LayerWeights* L, float* const* conv_f, int8_t* const* conv_q, float* const* ssm_f,
                 int8_t* const* ssm_q);

  // Sequences whose kept SSM state stays exact float between calls (SeqState::exact): no
  // (fake) quantization at the call boundary. Null: none.
  void set_exact(const char* exact) { exact_ = exact; }

  const Backend& k;
  const int T, nseq;

  // The tap `name` carries `a`: the plan's action at every use (keep, quantize-dequantize in place,
  // or int8 codes written to scratch `slot`), then the caller's tap. Returns `a` as its readers
  // take it.
  Act point(const char* name, Act a, int slot);
  // The scan's own copy of a tensor that two op kinds read (Mamba1's u), when they may differ.
  Act fork(Act a, int slot);
  // out {T, rows of W} = in W^T (+ bias): float GEMM, or int8 GEMM on codes with S8 weights.
  Act linear(Proj p, Act in, const Weight& bias, float* out);
  // SiLU(causal conv1d(in)) with the layer's conv states, into scratch `slot` (floats) or
  // `qslot` (int8 codes in give codes out, at the scales of tap `out_tap`: conv + SiLU +
  // requantize fused).
  Act conv1d_silu(Act in, const Weight& bias, const char* out_tap, int slot, int qslot);
  // Mamba1: y = selective_scan(u, delta, A, B, C, D) * SiLU(z); then the kept state's point.
  void selective_scan(Act u, Act delta, Act B, Act C, Act z, float* y);
  // Mamba2: y = SSD(x, dt, A, B, C) + D x; then the kept state's point.
  void ssd_scan(Act x, Act dt, Act B, Act C, float* y);
  // Mamba2: y = RMSNorm_grouped(y * SiLU(z)) * w, z read as float.
  void gated_rmsnorm(float* y, Act z);
  // H y in place when the plan rotates out_proj's input.
  void rotate(float* y, int cols);

 private:
  const ModelConfig& cfg_;
  const PreparedPlan& p_;
  Tap* tap_;
  std::span<const int> offs_;
  int l_ = 0;
  const LayerWeights* L_ = nullptr;
  const LayerExec* le_ = nullptr;
  float* const* conv_f_ = nullptr;
  int8_t* const* conv_q_ = nullptr;
  float* const* ssm_f_ = nullptr;
  int8_t* const* ssm_q_ = nullptr;
  const char* exact_ = nullptr;
  void call_tap(std::string_view name, const Act& a);
  void state_point(const TapExec* te);
  std::vector<float*> states_as_float(const TapExec& te);
  void states_store(const std::vector<float*>& f, const TapExec& te);
};

}  // namespace mambaq
