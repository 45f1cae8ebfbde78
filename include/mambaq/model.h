// Mamba1 / Mamba2 language models: weights in their stored formats, recurrent state, and one
// forward pass per architecture that runs any execution plan (fp32, fake quantization, int8).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mambaq/config.h"
#include "mambaq/tensor.h"

namespace mambaq {

// The projections of a layer, in the order of LayerWeights::proj().
enum Proj { kInProj, kConv, kXProj, kDtProj, kOutProj, kProjs };
const char* proj_name(Proj p);  // "in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"

struct LayerWeights {
  Weight norm, norm_b;           // {d_model}; the bias only for LayerNorm (state-spaces "rms_norm": false)
  QTensor in_proj;  Weight in_proj_b;  // {in_proj_dim, d_model}, {in_proj_dim} or empty
  QTensor conv_w;   Weight conv_b;     // {conv_dim, d_conv} (published as {conv_dim, 1, d_conv}), {conv_dim} or empty
  QTensor x_proj;                      // Mamba1: {dt_rank + 2*d_state, d_inner}
  QTensor dt_proj_w; Weight dt_proj_b; // Mamba1: {d_inner, dt_rank}, {d_inner}
  Weight dt_bias;                // Mamba2: {nheads}
  Weight A_log;                  // Mamba1: {d_inner, d_state}; Mamba2: {nheads}
  Weight D;                      // Mamba1: {d_inner}; Mamba2: {nheads}
  Weight gnorm;                  // Mamba2 gated RMSNorm: {d_inner}
  QTensor out_proj; Weight out_proj_b; // {d_model, d_inner}, {d_model} or empty
  // out_proj holds W H^T (Quamba's Hadamard fusion): its input is rotated online (H y).
  bool out_proj_rotated = false;
  std::vector<float> A;          // -exp(A_log), same shape as A_log

  QTensor& proj(Proj p);
  const QTensor& proj(Proj p) const { return const_cast<LayerWeights*>(this)->proj(p); }
};

struct ModelWeights {
  QTensor embedding;  // {padded_vocab, d_model}; quantized: one scale per row (Quamba2)
  std::vector<LayerWeights> layers;
  Weight norm_f, norm_f_b;  // {d_model}; the bias only for LayerNorm
  QTensor lm_head;    // {padded_vocab, d_model} (the embedding's buffer when tied)
  bool tied() const { return lm_head.data == embedding.data; }
};

// Recurrent state of one sequence: per layer the last d_conv-1 conv inputs and the SSM state,
// as float or as int8 codes (when the plan runs that layer's conv / scan in int8: the codes of
// the in_proj output scale and of the state scale). Make states with Model::new_state after
// choosing the plan.
struct SeqState {
  std::vector<std::vector<float>> conv;  // per layer {d_conv-1, conv_dim} (empty when int8)
  std::vector<std::vector<float>> ssm;   // per layer Mamba1 {d_inner, d_state}; Mamba2 {nheads, d_state, headdim}
  std::vector<std::vector<int8_t>> conv_q, ssm_q;  // the same shapes, int8 (empty when float)
  int64_t pos = 0;                       // tokens consumed
  // The SSM state stays float between calls, with no (fake) quantization at call boundaries:
  // running a sequence in several calls then gives what one call gives (shared-prefix scoring).
  // Decoding as deployed keeps it false (the state is stored as the plan says).
  bool exact = false;
};

// How a model computes: fp32 ignores quantization (a quantized model runs its dequantized
// weights on float activations); fake quantize-dequantizes activations at every calibrated
// point in float arithmetic (the simulation); int8 runs the integer kernels. Each builds an
// execution plan (src/model/plan.h).
enum class ExecMode { FP32, Fake, Int8 };
const char* mode_name(ExecMode m);
ExecMode parse_mode(const std::string& s);  // "fp32" | "fake" | "int8"

// Op kinds a fake-mode run can keep in FP32 to attribute quantization error (--fp-ops):
// no activation quantization at the inputs this kind consumes and, for linear and conv, the FP
// model's own weights instead of the dequantized int8 ones.
enum FpOps : unsigned {
  kFpLinear = 1,    // in_proj, x_proj, dt_proj, out_proj: their inputs and weights
  kFpConv = 2,      // conv1d: its input (x / xBC) and weights
  kFpSsm = 4,       // the scan: u / x, dt, B, C, the gate z (Mamba1) and the state kept between calls
  kFpNorm = 8,      // Mamba2's gated RMSNorm: its gate z (Mamba1 has no quantized norm input: an error)
  kFpHadamard = 16, // no online rotation: out_proj reads y as is, with unfused weights (W, quantized
                    // as the recipe does unless linear is kept too); its input stays float, since
                    // its calibrated scale belongs to the rotated values
  kFpHead = 32,     // the LM head and its input, and the embedding (the FP model's weights when given;
                    // an error for models whose head and embedding are not quantized)
};
// "linear,ssm" -> mask; errors name --fp-ops.
unsigned parse_fp_ops(const std::string& list);
std::string fp_ops_str(unsigned mask);

struct QuantState;   // src/model/quant_state.h: how it was quantized, its activation scales
struct ExecPlan;     // src/model/plan.h
struct PreparedPlan; // src/model/exec.h: the plan resolved against this model's weights and scales

// A hook at a named point of the forward pass (see DESIGN.md: one forward, many uses).
// `data` is {rows, cols} row-major and may be modified in place in float plans (in int8 plans
// the hook sees the dequantized codes, and changes are not read back); sequence s of the packed
// batch holds rows offs[s] .. offs[s+1]-1. Layer -1 is the model's head (e.g. "lm_head:input").
// Mamba1 points: in_proj:input, in_proj:output, x_proj:input, ssm:input, x_proj:output,
// dt_proj:output, out_proj:input; Mamba2: in_proj:input, in_proj:output, xBC_conv_out,
// out_proj:input; both: ssm_state (each sequence's state after the call, rows = 1), mixer_out,
// block_out, and lm_head:input (layer -1). The points are tabled in src/model/points.h.
struct Tap {
  virtual ~Tap() = default;
  virtual void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) = 0;
};

// Two taps in order (either may be null).
struct TapPair final : Tap {
  Tap* first;
  Tap* second;
  TapPair(Tap* a, Tap* b) : first(a), second(b) {}
  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) override {
    if (first) first->on(layer, point, data, rows, cols, offs);
    if (second) second->on(layer, point, data, rows, cols, offs);
  }
};

struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
};

class Model {
 public:
  // Load a checkpoint folder (either layout, or a `mambaq quantize` folder); every missing,
  // unexpected or misshapen tensor is an error naming the file and tensor.
  static std::unique_ptr<Model> load(const std::string& dir);
  // Build a model from a config and a tensor store (used by load and by tests).
  static std::unique_ptr<Model> from_store(const ModelConfig& cfg, const TensorStore& store);
  // Random weights (seeded) with the exact shapes of a config.
  static std::unique_ptr<Model> random(const ModelConfig& cfg, uint64_t seed);
  // A model from weights in any formats, plus the quantization record when some are quantized
  // (used by the recipes). Runs fp32, or int8 when quantized.
  static std::unique_ptr<Model> from_weights(const ModelConfig& cfg, ModelWeights w, std::vector<TensorInfo> info,
                                             std::shared_ptr<const QuantState> q);

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  // For building derived models: copies share weight buffers until replaced. Call set_mode
  // afterwards (the plan is resolved against the weights).
  ModelWeights& weights_mut();
  bool is_quantized() const { return bool(q_); }
  const QuantState* quantized() const { return q_.get(); }

  // The execution plan. fake and int8 need a quantized model (error otherwise).
  ExecMode mode() const;
  void set_mode(ExecMode m);
  // Fake mode only: keep the op kinds of `mask` in FP32 (see FpOps); linear and conv (and
  // hadamard) take their weights from `fp`, the FP model this one was quantized from.
  void set_fp_ops(unsigned mask, const Model* fp);
  unsigned fp_ops() const;
  const ExecPlan& plan() const;

  const std::vector<TensorInfo>& tensor_info() const { return info_; }
  int64_t num_params() const;
  size_t weight_bytes() const;  // bytes of weights the plan reads per decoded token

  SeqState new_state(bool exact = false) const;

  // Run the backbone over `lens.size()` sequences packed back to back in `tokens`
  // (sum(lens) tokens). If `states` is non-null, states[i] is the state of sequence i
  // before its tokens (updated in place); otherwise every sequence starts empty.
  // Writes the final-normed hidden states {sum(lens), d_model} to `hidden`.
  void forward(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states, float* hidden,
               Tap* tap = nullptr) const;

  // The parts of forward, for layer-by-layer procedures (GPTQ): the embedding rows of `tokens`
  // {T, d_model}; layers [l0, l1) run in place on a residual stream {sum(lens), d_model} (no
  // recurrent state); the final norm.
  void embed(std::span<const int32_t> tokens, float* residual) const;
  void forward_layers(float* residual, std::span<const int> lens, int l0, int l1, Tap* tap = nullptr) const;
  void final_norm(const float* residual, int T, float* hidden) const;

  // logits {rows, padded_vocab} = hidden {rows, d_model} x lm_head^T
  void lm_head(const float* hidden, int rows, float* logits) const;

  // Convenience: logits of the last position of one sequence (full prefill).
  std::vector<float> last_logits(std::span<const int32_t> tokens) const;

 private:
  ModelConfig cfg_;
  ModelWeights w_;
  std::vector<TensorInfo> info_;
  std::shared_ptr<const QuantState> q_;
  std::shared_ptr<const PreparedPlan> plan_;
  bool quantized_head() const;
  void set_plan(ExecPlan plan, const Model* fp);
  void block_norm(const float* x, const Weight& w, const Weight& b, float* out, int T) const;
  void run_layers(float* r, std::span<const int> offs, int l0, int l1, SeqState* const* states, Tap* tap) const;
  void check_finite(const float* x, int T, int layer, const char* what) const;
};

// Parameter-count-exact configs of published checkpoints, for synthetic benchmarks:
// mamba-130m, mamba-370m, mamba-790m, mamba-1.4b, mamba-2.8b, mamba2-130m, mamba2-370m,
// mamba2-780m, mamba2-1.3b, mamba2-2.7b, mamba2-8b.
ModelConfig published_config(const std::string& name);
std::vector<std::string> published_config_names();

}  // namespace mambaq
