#include "model/names.h"

namespace mambaq {

std::string layer_prefix(int l) { return "backbone.layers." + std::to_string(l) + "."; }

std::vector<TensorSpec> tensor_specs(const ModelConfig& cfg, Layout layout) {
  const int64_t V = cfg.padded_vocab, dm = cfg.d_model, di = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv;
  std::vector<TensorSpec> v;
  v.push_back({layout == Layout::HF ? "backbone.embeddings.weight" : "backbone.embedding.weight", {V, dm}, -1,
               nullptr, nullptr, kProjs, true});
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string p = layer_prefix(l), m = p + "mixer.";
    auto f = [&](const std::string& n, std::vector<int64_t> s, Weight LayerWeights::*fl) {
      v.push_back({n, std::move(s), l, nullptr, fl});
    };
    auto pr = [&](const std::string& n, std::vector<int64_t> s, Proj j) {
      v.push_back({n, std::move(s), l, nullptr, nullptr, j});
    };
    f(p + "norm.weight", {dm}, &LayerWeights::norm);
    if (!cfg.rms_norm) f(p + "norm.bias", {dm}, &LayerWeights::norm_b);
    pr(m + "in_proj.weight", {cfg.in_proj_dim(), dm}, kInProj);
    if (cfg.proj_bias) f(m + "in_proj.bias", {cfg.in_proj_dim()}, &LayerWeights::in_proj_b);
    pr(m + "conv1d.weight", {cfg.conv_dim(), 1, K}, kConv);
    if (cfg.conv_bias) f(m + "conv1d.bias", {cfg.conv_dim()}, &LayerWeights::conv_b);
    if (cfg.arch == Arch::Mamba1) {
      pr(m + "x_proj.weight", {cfg.dt_rank + 2 * N, di}, kXProj);
      pr(m + "dt_proj.weight", {di, cfg.dt_rank}, kDtProj);
      f(m + "dt_proj.bias", {di}, &LayerWeights::dt_proj_b);
      f(m + "A_log", {di, N}, &LayerWeights::A_log);
      f(m + "D", {di}, &LayerWeights::D);
    } else {
      f(m + "dt_bias", {cfg.nheads}, &LayerWeights::dt_bias);
      f(m + "A_log", {cfg.nheads}, &LayerWeights::A_log);
      f(m + "D", {cfg.nheads}, &LayerWeights::D);
      f(m + "norm.weight", {di}, &LayerWeights::gnorm);
    }
    pr(m + "out_proj.weight", {dm, di}, kOutProj);
    if (cfg.proj_bias) f(m + "out_proj.bias", {dm}, &LayerWeights::out_proj_b);
  }
  v.push_back({"backbone.norm_f.weight", {dm}, -1, &ModelWeights::norm_f});
  if (!cfg.rms_norm) v.push_back({"backbone.norm_f.bias", {dm}, -1, &ModelWeights::norm_f_b});
  return v;
}

}  // namespace mambaq
