// Mamba1 / Mamba2 language models: config, weights in their stored formats and the quantization
// record. A Model is data; running it is a Session's business (mambaq/session.h): one model,
// any number of sessions (backends, execution modes).
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

struct QuantState;   // src/model/quant_state.h: how it was quantized, its activation scales

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
  // For building derived models: copies share weight buffers until replaced. Sessions made
  // before a change keep what they uploaded; make new ones.
  ModelWeights& weights_mut() { return w_; }
  bool is_quantized() const { return bool(q_); }
  const QuantState* quantized() const { return q_.get(); }

  // The LM head is quantized (its plan may run it in int8).
  bool quantized_head() const;

  const std::vector<TensorInfo>& tensor_info() const { return info_; }
  int64_t num_params() const;

 private:
  ModelConfig cfg_;
  ModelWeights w_;
  std::vector<TensorInfo> info_;
  std::shared_ptr<const QuantState> q_;
};

// Parameter-count-exact configs of published checkpoints, for synthetic benchmarks:
// mamba-130m, mamba-370m, mamba-790m, mamba-1.4b, mamba-2.8b, mamba2-130m, mamba2-370m,
// mamba2-780m, mamba2-1.3b, mamba2-2.7b, mamba2-8b.
ModelConfig published_config(const std::string& name);
std::vector<std::string> published_config_names();

}  // namespace mambaq
