// Configs of published checkpoints (exact shapes) and seeded random weights for them.
#include <cmath>
#include <map>
#include <functional>
#include <random>

#include "mambaq/error.h"
#include "mambaq/model.h"
#include "model/names.h"

namespace mambaq {

namespace {
struct Pub {
  bool m2;
  int d_model, n_layer, vocab, pad, ngroups;
};
const std::map<std::string, Pub>& pubs() {
  static const std::map<std::string, Pub> m = {
      {"mamba-130m", {false, 768, 24, 50277, 8, 1}},   {"mamba-370m", {false, 1024, 48, 50277, 8, 1}},
      {"mamba-790m", {false, 1536, 48, 50277, 8, 1}},  {"mamba-1.4b", {false, 2048, 48, 50277, 8, 1}},
      {"mamba-2.8b", {false, 2560, 64, 50277, 8, 1}},  {"mamba2-130m", {true, 768, 24, 50277, 16, 1}},
      {"mamba2-370m", {true, 1024, 48, 50277, 16, 1}}, {"mamba2-780m", {true, 1536, 48, 50277, 16, 1}},
      {"mamba2-1.3b", {true, 2048, 48, 50277, 16, 1}}, {"mamba2-2.7b", {true, 2560, 64, 50277, 16, 1}},
      {"mamba2-8b", {true, 4096, 56, 256000, 16, 8}},
  };
  return m;
}
}  // namespace

std::vector<std::string> published_config_names() {
  std::vector<std::string> v;
  for (auto& [k, _] : pubs()) v.push_back(k);
  return v;
}

ModelConfig published_config(const std::string& name) {
  auto it = pubs().find(name);
  if (it == pubs().end()) {
    std::string all;
    for (auto& n : published_config_names()) all += (all.empty() ? "" : ", ") + n;
    fail_option("synthetic", "synthetic: unknown model '{}' (known: {})", name, all);
  }
  const Pub& p = it->second;
  nlohmann::json j = {{"d_model", p.d_model},
                      {"n_layer", p.n_layer},
                      {"vocab_size", p.vocab},
                      {"pad_vocab_size_multiple", p.pad},
                      {"rms_norm", true},
                      {"residual_in_fp32", true},
                      {"tie_embeddings", true}};
  j["ssm_cfg"] = p.m2 ? nlohmann::json{{"layer", "Mamba2"}, {"d_state", 128}, {"headdim", 64},
                                       {"ngroups", p.ngroups}, {"chunk_size", 256}}
                      : nlohmann::json::object();
  return parse_config(j, "synthetic:" + name);
}

std::unique_ptr<Model> Model::random(const ModelConfig& cfg, uint64_t seed) {
  // Build a TensorStore of fp32 tensors, then bind it like a real checkpoint.
  std::mt19937_64 rng(seed);
  TensorStore store;
  store.source = cfg.source;
  store.format = "synthetic";
  auto add = [&](const std::string& name, std::vector<int64_t> shape, auto gen) {
    auto buf = std::make_shared<std::vector<float>>(size_t(numel(shape)));
    for (auto& v : *buf) v = gen();
    RawTensor t;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.data = reinterpret_cast<const uint8_t*>(buf->data());
    t.owner = buf;
    store.tensors[name] = std::move(t);
  };
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  auto normal = [&] { return nd(rng); };
  auto one = [] { return 1.f; };
  auto inv_softplus_dt = [&] {  // dt in [1e-3, 1e-1], log-uniform, stored as softplus^-1
    const float dt = std::exp(std::log(1e-3f) + ud(rng) * (std::log(1e-1f) - std::log(1e-3f)));
    return dt + std::log(-std::expm1(-dt));
  };
  // every tensor of the layout's table, each with its kind of values
  const int64_t N = cfg.d_state;
  for (const auto& t : tensor_specs(cfg, Layout::StateSpaces)) {
    const auto f = t.field;
    if (t.embedding) {
      add(t.name, t.shape, normal);
    } else if (t.model || f == &LayerWeights::norm || f == &LayerWeights::gnorm || f == &LayerWeights::D) {
      add(t.name, t.shape, t.name.ends_with(".bias") ? std::function<float()>(normal) : one);
    } else if (t.proj == kConv) {
      add(t.name, t.shape, [&] { return nd(rng) * 10.f; });
    } else if (f == &LayerWeights::dt_proj_b || f == &LayerWeights::dt_bias) {
      add(t.name, t.shape, inv_softplus_dt);
    } else if (f == &LayerWeights::A_log && cfg.arch == Arch::Mamba1) {
      int64_t k = 0;
      add(t.name, t.shape, [&] { return std::log(float(1 + (k++ % N))); });
    } else if (f == &LayerWeights::A_log) {
      add(t.name, t.shape, [&] { return std::log(1.f + 15.f * ud(rng)); });
    } else {
      add(t.name, t.shape, normal);  // projections, biases
    }
  }
  return from_store(cfg, store);
}

}  // namespace mambaq
