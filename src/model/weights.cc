// Map a checkpoint's tensors onto ModelWeights, checking every name and shape against the config.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "mambaq/checkpoint.h"
#include "mambaq/error.h"
#include "mambaq/model.h"
#include "quant/quantized.h"

namespace mambaq {

namespace {

struct Binder {
  const TensorStore& store;
  const ModelConfig& cfg;
  std::set<std::string> used;
  std::vector<TensorInfo>& info;

  bool has(const std::string& n) const { return store.has(n); }

  Weight take(const std::string& name, std::vector<int64_t> shape, bool optional = false) {
    auto it = store.tensors.find(name);
    if (it == store.tensors.end()) {
      if (optional) return {};
      fail("{}: missing tensor '{}' (expected shape {} for this {} config)", store.source, name, shape_str(shape),
           arch_name(cfg.arch));
    }
    const RawTensor& t = it->second;
    if (t.shape != shape)
      fail("{}: tensor '{}' has shape {} but the config ({}) implies {}", store.source, name, shape_str(t.shape),
           cfg.source, shape_str(shape));
    used.insert(name);
    info.push_back({name, dtype_name(t.dtype), t.shape});
    return to_f32(t, store.source + ": " + name);
  }
};

}  // namespace

std::unique_ptr<Model> Model::from_store(const ModelConfig& cfg, const TensorStore& store) {
  auto m = std::unique_ptr<Model>(new Model());
  m->cfg_ = cfg;
  Binder b{store, cfg, {}, m->info_};
  // A `mambaq quantize` folder: the projections are int8 with scales (quant/quantized_io.cc).
  const bool quant = cfg.raw.is_object() && cfg.raw.contains("quantization");
  const int64_t V = cfg.padded_vocab, dm = cfg.d_model, di = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv;
  // Embedding: state-spaces "backbone.embedding", HF "backbone.embeddings".
  std::string emb = b.has("backbone.embeddings.weight") ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  if (!b.has(emb)) fail("{}: missing tensor 'backbone.embedding.weight' (or 'backbone.embeddings.weight')", store.source);
  const auto& es = store.tensors.at(emb).shape;
  if (es.size() == 2 && es[1] == dm && es[0] != V)
    fail("{}: tensor '{}' has {} rows but the config ({}) implies a vocabulary of {} (vocab_size {} padded)",
         store.source, emb, es[0], cfg.source, V, cfg.vocab_size);
  m->w_.embedding = b.take(emb, {V, dm});
  for (int i = 0; i < cfg.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    LayerWeights L;
    L.norm = b.take(p + "norm.weight", {dm});
    if (!cfg.rms_norm) L.norm_b = b.take(p + "norm.bias", {dm});
    if (!quant) L.in_proj = b.take(p + "mixer.in_proj.weight", {cfg.in_proj_dim(), dm});
    if (cfg.proj_bias) L.in_proj_b = b.take(p + "mixer.in_proj.bias", {cfg.in_proj_dim()});
    if (!quant) {
      Weight cw = b.take(p + "mixer.conv1d.weight", {cfg.conv_dim(), 1, K});
      cw.shape = {cfg.conv_dim(), K};
      L.conv_w = cw;
    }
    if (cfg.conv_bias) L.conv_b = b.take(p + "mixer.conv1d.bias", {cfg.conv_dim()});
    if (cfg.arch == Arch::Mamba1) {
      if (!quant) {
        L.x_proj = b.take(p + "mixer.x_proj.weight", {cfg.dt_rank + 2 * N, di});
        L.dt_proj_w = b.take(p + "mixer.dt_proj.weight", {di, cfg.dt_rank});
      }
      L.dt_proj_b = b.take(p + "mixer.dt_proj.bias", {di});
      L.A_log = b.take(p + "mixer.A_log", {di, N});
      L.D = b.take(p + "mixer.D", {di});
    } else {
      L.dt_bias = b.take(p + "mixer.dt_bias", {cfg.nheads});
      L.A_log = b.take(p + "mixer.A_log", {cfg.nheads});
      L.D = b.take(p + "mixer.D", {cfg.nheads});
      L.gnorm = b.take(p + "mixer.norm.weight", {di});
    }
    if (!quant) L.out_proj = b.take(p + "mixer.out_proj.weight", {dm, di});
    if (cfg.proj_bias) L.out_proj_b = b.take(p + "mixer.out_proj.bias", {dm});
    L.A.resize(size_t(L.A_log.size()));
    for (size_t k = 0; k < L.A.size(); ++k) L.A[k] = -std::exp(L.A_log.data[k]);
    m->w_.layers.push_back(std::move(L));
  }
  m->w_.norm_f = b.take("backbone.norm_f.weight", {dm});
  if (!cfg.rms_norm) m->w_.norm_f_b = b.take("backbone.norm_f.bias", {dm});
  // A tied head saved beside the embedding (state-spaces checkpoints store both names over one
  // storage) is the same tensor: held, counted and saved once.
  const auto same_as_embedding = [&](const std::string& n) {
    const RawTensor& a = store.tensors.at(n);
    const RawTensor& e = store.tensors.at(emb);
    return a.dtype == e.dtype && a.shape == e.shape && (a.data == e.data || std::memcmp(a.data, e.data, a.nbytes()) == 0);
  };
  if (b.has("lm_head.weight") && cfg.tie_embeddings && same_as_embedding("lm_head.weight")) {
    b.used.insert("lm_head.weight");
    m->w_.lm_head = m->w_.embedding;
  } else if (b.has("lm_head.weight")) {
    m->w_.lm_head = b.take("lm_head.weight", {V, dm});
  } else if (cfg.tie_embeddings) {
    m->w_.lm_head = m->w_.embedding;
  } else {
    fail("{}: missing tensor 'lm_head.weight' (the config does not tie embeddings)", store.source);
  }
  if (quant) {
    m->set_quantized(load_quantized(cfg, store, b.used));
    for (const auto& name : b.used)
      if (store.tensors.at(name).dtype == DType::I8 || name.ends_with("_scale"))
        m->info_.push_back({name, dtype_name(store.tensors.at(name).dtype), store.tensors.at(name).shape});
  }
  for (const auto& [name, t] : store.tensors)
    if (!b.used.count(name))
      fail("{}: unexpected tensor '{}' {} for a {} model with this config ({})", store.source, name,
           shape_str(t.shape), arch_name(cfg.arch), cfg.source);
  return m;
}

std::unique_ptr<Model> Model::load(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(dir))
    fail("{}: is a file; a model is the folder holding config.json and the weights (here: '{}')", dir,
         fs::path(dir).parent_path().empty() ? "." : fs::path(dir).parent_path().string());
  ModelConfig cfg = load_config(dir);
  TensorStore store = load_checkpoint(dir);
  return from_store(cfg, store);
}

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const auto& t : info_) n += numel(t.shape);
  return n;
}

size_t Model::weight_bytes() const {
  // What a decoded token reads: fp32 weights (a float mode of a quantized model reads its
  // dequantized projections), int8 projections in int8 mode; the embedding once (tied LM head).
  size_t n = 0;
  auto f = [&](const Weight& w) { n += w.data ? size_t(w.size()) * 4 : 0; };
  f(w_.embedding), f(w_.norm_f), f(w_.norm_f_b);
  if (w_.lm_head.data != w_.embedding.data) f(w_.lm_head);
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const auto& L = w_.layers[l];
    for (const Weight* x : {&L.norm, &L.norm_b, &L.in_proj_b, &L.conv_b, &L.dt_proj_b, &L.dt_bias, &L.A_log, &L.D, &L.gnorm,
                            &L.out_proj_b})
      f(*x);
    if (q_ && mode_ == ExecMode::Int8) {
      const auto& Q = q_->layers[l];
      for (const QuantizedWeight* x : {&Q.in_proj, &Q.conv, &Q.x_proj, &Q.dt_proj, &Q.out_proj})
        n += x->size() + x->scales.size() * 4;
    } else {
      for (const Weight* x : {&L.in_proj, &L.conv_w, &L.x_proj, &L.dt_proj_w, &L.out_proj}) f(*x);
    }
  }
  return n;
}

SeqState Model::new_state() const {
  SeqState s;
  if (mode_ == ExecMode::Int8) {
    s.conv_q.assign(size_t(cfg_.n_layer), std::vector<int8_t>(size_t(cfg_.d_conv - 1) * cfg_.conv_dim(), 0));
    s.ssm_q.assign(size_t(cfg_.n_layer), std::vector<int8_t>(cfg_.ssm_state_size(), 0));
    return s;
  }
  s.conv.assign(size_t(cfg_.n_layer), std::vector<float>(size_t(cfg_.d_conv - 1) * cfg_.conv_dim(), 0.f));
  s.ssm.assign(size_t(cfg_.n_layer), std::vector<float>(cfg_.ssm_state_size(), 0.f));
  return s;
}

}  // namespace mambaq
