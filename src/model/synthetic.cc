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
  // Build a TensorStore of fp32 tensors, then bind it like a real checkpoint. Each tensor is made
  // in blocks of 64Ki values, block b of tensor t from its own generator seeded by (seed, t, b),
  // in parallel: the same weights whatever the thread count (a 2.8b shape takes seconds, not
  // minutes).
  TensorStore store;
  store.source = cfg.source;
  store.format = "synthetic";
  uint64_t ordinal = 0;
  using Gen = std::function<float(std::mt19937_64&, int64_t)>;  // (block's generator, element index)
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const Gen& gen) {
    auto buf = std::make_shared<std::vector<float>>(size_t(numel(shape)));
    constexpr int64_t kBlock = int64_t(1) << 16;
    const int64_t n = int64_t(buf->size()), nb = (n + kBlock - 1) / kBlock, t = int64_t(ordinal++);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t blk = 0; blk < nb; ++blk) {
      uint64_t z = seed * 0x9e3779b97f4a7c15ull + uint64_t(t) * 0xbf58476d1ce4e5b9ull + uint64_t(blk);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      std::mt19937_64 rng(z ^ (z >> 31));
      for (int64_t i = blk * kBlock; i < std::min(n, (blk + 1) * kBlock); ++i) (*buf)[size_t(i)] = gen(rng, i);
    }
    RawTensor rt;
    rt.dtype = DType::F32;
    rt.shape = std::move(shape);
    rt.data = reinterpret_cast<const uint8_t*>(buf->data());
    rt.owner = buf;
    store.tensors[name] = std::move(rt);
  };
  // std::normal_distribution keeps state between calls: one per call keeps blocks independent
  auto nrm = [](std::mt19937_64& r, float sd) {
    const double u1 = (double(r() >> 11) + 0.5) * (1.0 / 9007199254740992.0), u2 = double(r() >> 11) * (1.0 / 9007199254740992.0);
    return float(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  };
  auto uni = [](std::mt19937_64& r) { return float(double(r() >> 11) * (1.0 / 9007199254740992.0)); };
  const Gen normal = [&](std::mt19937_64& r, int64_t) { return nrm(r, 0.02f); };
  const Gen one = [](std::mt19937_64&, int64_t) { return 1.f; };
  const Gen inv_softplus_dt = [&](std::mt19937_64& r, int64_t) {  // dt in [1e-3, 1e-1], log-uniform, as softplus^-1
    const float dt = std::exp(std::log(1e-3f) + uni(r) * (std::log(1e-1f) - std::log(1e-3f)));
    return dt + std::log(-std::expm1(-dt));
  };
  // every tensor of the layout's table, each with its kind of values
  const int64_t N = cfg.d_state;
  for (const auto& t : tensor_specs(cfg, Layout::StateSpaces)) {
    const auto f = t.field;
    if (t.embedding) {
      add(t.name, t.shape, normal);
    } else if (t.model || f == &LayerWeights::norm || f == &LayerWeights::gnorm || f == &LayerWeights::D) {
      add(t.name, t.shape, t.name.ends_with(".bias") ? normal : one);
    } else if (t.proj == kConv) {
      add(t.name, t.shape, [&](std::mt19937_64& r, int64_t) { return nrm(r, 0.2f); });
    } else if (f == &LayerWeights::dt_proj_b || f == &LayerWeights::dt_bias) {
      add(t.name, t.shape, inv_softplus_dt);
    } else if (f == &LayerWeights::A_log && cfg.arch == Arch::Mamba1) {
      add(t.name, t.shape, [&](std::mt19937_64&, int64_t i) { return std::log(float(1 + (i % N))); });
    } else if (f == &LayerWeights::A_log) {
      add(t.name, t.shape, [&](std::mt19937_64& r, int64_t) { return std::log(1.f + 15.f * uni(r)); });
    } else {
      add(t.name, t.shape, normal);  // projections, biases
    }
  }
  return from_store(cfg, store);
}

}  // namespace mambaq
