// Running a model: a Session is one Model (immutable data) + one backend instance + the execution
// plan prepared for that backend (weights uploaded once, in the formats its kernels read) + a
// workspace in the backend's memory. Several sessions may share one model (compare's reference
// and candidates, a cpu and a cuda session in one test). Sequence states (SeqState) belong to the
// session that made them.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mambaq/model.h"

namespace mambaq {

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


struct ExecPlan;     // src/model/plan.h
struct PreparedPlan; // src/model/exec.h: the plan resolved against a model's weights and scales for a backend
struct SessionCore;  // src/model/session.cc
struct StateData;    // src/model/session.cc

// Recurrent state of one sequence: per layer the last d_conv-1 conv inputs and the SSM state, in
// the session's backend memory, as float or as int8 codes (where the plan runs that layer's conv /
// scan in int8: the codes of the in_proj output scale and of the state scale). Move-only; copy with
// Session::clone_state / copy_state. Made by Session::new_state for that session's plan.
class SeqState {
 public:
  SeqState();
  ~SeqState();
  SeqState(SeqState&&) noexcept;
  SeqState& operator=(SeqState&&) noexcept;
  int64_t pos = 0;  // tokens consumed
  // The SSM state stays float between calls, with no (fake) quantization at call boundaries:
  // running a sequence in several calls then gives what one call gives (shared-prefix scoring).
  // Decoding as deployed keeps it false (the state is stored as the plan says).
  bool exact() const;
  bool empty() const { return !d_; }
  int layers() const;
  bool conv_int8(int layer) const;
  bool ssm_int8(int layer) const;
  size_t bytes() const;  // backend memory it holds
  // Layer l's SSM state downloaded as floats (int8 codes as their integer values), for inspection.
  std::vector<float> ssm_values(int layer) const;

 private:
  friend class Session;
  friend struct SessionCore;
  std::unique_ptr<StateData> d_;
};

// Log-softmax of the target over the model's whole (padded) output row, and whether the target is
// its argmax (the first maximum, as torch/numpy argmax).
struct RowScore {
  double logprob;
  bool greedy;
};

// Hidden states {rows, d_model} kept in a session's backend memory (Session::forward_hidden).
class Hidden {
 public:
  Hidden();
  ~Hidden();
  Hidden(Hidden&&) noexcept;
  Hidden& operator=(Hidden&&) noexcept;
  int rows() const { return rows_; }

 private:
  friend class Session;
  std::shared_ptr<void> buf_;  // a Buffer
  int rows_ = 0;
};

struct SessionOptions {
  std::string backend = {};  // a registered backend ("cpu", "ref", "cuda:0", ...); empty: default_backend_name()
  // fp32 ignores quantization; fake and int8 need a quantized model. Default: int8 for a
  // quantized model, fp32 otherwise.
  std::optional<ExecMode> mode = {};
  unsigned fp_ops = 0;      // fake mode only: FpOps kept in FP32
  const Model* fp = nullptr;  // the FP model --fp-ops linear/conv/hadamard/head take weights from
  // The float GEMM weights' type on the backend (--dtype): F32, or F16 / BF16 (mode fp32 only: the
  // projections and the LM head stored in 16 bits, each GEMM's activations rounded to that type,
  // sums in float; everything else stays fp32).
  DType dtype = DType::F32;
};

// "fp32", "fp16", "bf16" (SessionOptions::dtype as --dtype spells it; other types: their dtype_name).
const char* float_type_name(DType d);

// The rules for what a session may run, written once (Session's constructor applies them): fails
// naming the option (mode, fp_ops) when the model cannot run this way.
void check_session_options(const Model& m, const SessionOptions& o);

// Bytes of weights a decoded token reads when `m` runs in `mode` (default: its own).
size_t decode_weight_bytes(const Model& m, std::optional<ExecMode> mode = {});

class Session {
 public:
  // Fails (one line naming the option) when the model cannot run this way: fake/int8 on an FP
  // model, fp_ops outside fake mode or without the FP weights they need, an unknown backend.
  explicit Session(const Model& m, const SessionOptions& o = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  const Model& model() const;
  const ModelConfig& config() const;
  ExecMode mode() const;
  unsigned fp_ops() const;
  const ExecPlan& plan() const;
  std::string backend_name() const;
  std::string backend_isa() const;
  bool host_memory() const;  // the backend's memory is the host's
  size_t weight_bytes() const;  // bytes of weights the plan reads per decoded token
  size_t device_bytes() const;  // backend memory this session holds (uploads, workspace)

  SeqState new_state(bool exact = false);
  SeqState clone_state(const SeqState& s);
  void copy_state(SeqState& dst, const SeqState& src);  // dst made by new_state with the same `exact`

  // Run the backbone over `lens.size()` sequences packed back to back in `tokens` (sum(lens)
  // tokens). states[i] (if `states` is non-null and states[i] non-null) is the state of sequence
  // i before its tokens, updated in place; otherwise sequences start empty. Writes the
  // final-normed hidden states {sum(lens), d_model} to `hidden` (host memory; may be null).
  void forward(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states, float* hidden,
               Tap* tap = nullptr);
  // The same, keeping the hidden states in backend memory for scoring.
  Hidden forward_hidden(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                        Tap* tap = nullptr);
  void download(const Hidden& h, float* out);  // {rows, d_model}
  // logits {rows.size(), padded_vocab} of the kept rows h[rows[i]] (host memory): the rows are
  // gathered and multiplied in the backend; only the logits come back.
  void logits_rows(const Hidden& h, std::span<const int> rows, float* logits);

  // One decoding step of tokens.size() sequences: tokens[i] follows sequence i, whose state
  // states[i] (every one given) is updated; writes the next-token logits {tokens.size(),
  // padded_vocab} to `logits` (host memory; may be null). The same numbers as forward + lm_head
  // of those tokens. On a backend with graphs the step's ops run as one captured graph, made on
  // the second step with the same states and replayed from then on.
  void decode(std::span<const int32_t> tokens, SeqState* const* states, float* logits);

  // logits {rows, padded_vocab} = hidden {rows, d_model} x lm_head^T (host memory in and out)
  void lm_head(const float* hidden, int rows, float* logits);
  // Logits of the last position of one sequence (full prefill).
  std::vector<float> last_logits(std::span<const int32_t> tokens);

  // Score rows of kept hidden states: rows[i] = (h, row) predicts targets[i]. The LM head, the
  // log-softmax and the greedy check run in the backend; only the scores come back. Fails on a
  // target outside the vocabulary or a non-finite log-likelihood (never reported as a result).
  struct RowRef {
    const Hidden* h;
    int row;
  };
  void score_rows(const std::vector<RowRef>& rows, const std::vector<int32_t>& targets, std::vector<RowScore>& out);

  // The parts of forward, for layer-by-layer procedures (GPTQ), on host buffers: the embedding
  // rows of `tokens` {T, d_model}; layers [l0, l1) in place on a residual stream {sum(lens),
  // d_model} (no recurrent state); the final norm.
  void embed(std::span<const int32_t> tokens, float* residual);
  void forward_layers(float* residual, std::span<const int> lens, int l0, int l1, Tap* tap = nullptr);
  void final_norm(const float* residual, int T, float* hidden);

 private:
  std::unique_ptr<SessionCore> c_;
};

}  // namespace mambaq
