// Map a checkpoint's tensors onto ModelWeights (model/names.h), checking every name and shape
// against the config; a `mambaq quantize` folder adds int8 projections and scale tensors.
#include <cmath>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "mambaq/checkpoint.h"
#include "mambaq/error.h"
#include "mambaq/model.h"
#include "io/folder.h"
#include "model/exec.h"
#include "model/names.h"
#include "model/points.h"
#include "model/quant_state.h"

namespace mambaq {

namespace {

struct Binder {
  const TensorStore& store;
  const ModelConfig& cfg;
  std::set<std::string> used;
  std::vector<TensorInfo>& info;

  bool has(const std::string& n) const { return store.has(n); }

  const RawTensor& raw(const std::string& name, const std::vector<int64_t>& shape, const char* expect = nullptr) {
    auto it = store.tensors.find(name);
    if (it == store.tensors.end()) {
      if (expect)
        fail("{}: missing tensor '{}' (expected {} {} for this quantized model)", store.source, name, expect,
             shape_str(shape));
      fail("{}: missing tensor '{}' (expected shape {} for this {} config)", store.source, name, shape_str(shape),
           arch_name(cfg.arch));
    }
    const RawTensor& t = it->second;
    if (t.shape != shape)
      fail("{}: tensor '{}' has shape {} but the config ({}) implies {}", store.source, name, shape_str(t.shape),
           cfg.source, shape_str(shape));
    used.insert(name);
    info.push_back({name, dtype_name(t.dtype), t.shape});
    return t;
  }

  Weight take(const std::string& name, const std::vector<int64_t>& shape) {
    return to_f32(raw(name, shape), store.source + ": " + name);
  }

  const RawTensor& typed(const std::string& name, DType dt, const std::vector<int64_t>& shape) {
    auto it = store.tensors.find(name);
    if (it != store.tensors.end() && it->second.dtype != dt)
      fail("{}: tensor '{}' has dtype {} but a quantized model stores it as {}", store.source, name,
           dtype_name(it->second.dtype), dtype_name(dt));
    return raw(name, shape, dtype_name(dt));
  }

  std::vector<float> scales(const std::string& name, int64_t n) { return scales(name, std::vector<int64_t>{n}); }
  std::vector<float> scales(const std::string& name, const std::vector<int64_t>& shape) {
    const RawTensor& s = typed(name, DType::F32, shape);
    const int64_t n = numel(shape);
    std::vector<float> v(static_cast<size_t>(n));
    std::memcpy(v.data(), s.data, v.size() * 4);
    for (float x : v)
      if (!(x > 0) || !std::isfinite(x))
        fail("{}: scale '{}' {} {} (must be positive and finite)", store.source, name, n == 1 ? "is" : "holds", x);
    return v;
  }

  // A weight of a quantized folder in the format it was saved in (docs/format.md): float
  // values, int8 codes (I8, `shape`), or packed 4-bit codes (U8 {rows, cols / 2}); codes are
  // zero-copy over the mapped file, with `<base>.weight_scale` {1} (per tensor), {rows} (per
  // channel) or {rows, groups} (groups of meta.group_size columns; one group: the whole row).
  QTensor stored(const std::string& name, const std::vector<int64_t>& shape, const QuantMeta& meta) {
    auto it = store.tensors.find(name);
    const int64_t rows = shape.front(), cols = shape.back();
    if (it == store.tensors.end() || (it->second.dtype != DType::I8 && it->second.dtype != DType::U8)) {
      QTensor t = QTensor::from_weight(take(name, shape));
      t.shape = {rows, cols};
      return t;
    }
    const bool s4 = it->second.dtype == DType::U8;
    const RawTensor& t = s4 ? typed(name, DType::U8, {rows, cols / 2}) : typed(name, DType::I8, shape);
    if (s4 && cols % 32) fail("{}: tensor '{}' is packed 4-bit but has {} columns (needs a multiple of 32)", store.source, name, cols);
    QTensor q;
    q.format = s4 ? WFormat::S4 : WFormat::S8;
    q.shape = {rows, cols};
    q.data = t.data;
    q.owner = t.owner;
    q.bits = s4 ? 4 : 8;
    const std::string base = name.substr(0, name.size() - std::string(".weight").size()), sn = base + ".weight_scale";
    auto si = store.tensors.find(sn);
    const std::vector<int64_t> ss = si == store.tensors.end() ? std::vector<int64_t>{} : si->second.shape;
    if (s4) {
      const int64_t ng = ss.size() == 2 && ss[0] == rows ? ss[1] : (cols + meta.group_size - 1) / meta.group_size;
      q.granularity = Granularity::Group;
      q.group = ng == 1 ? int(cols) : meta.group_size;
      if (ng != 1 && ng != (cols + q.group - 1) / q.group)
        fail("{}: scale '{}' has {} groups per row; {} columns in groups of {} (quantization.group_size) need {}",
             store.source, sn, ng, cols, q.group, (cols + q.group - 1) / q.group);
      q.scales = scales(sn, {rows, ng});
    } else {
      const bool per_row = ss.size() == 1 && ss[0] == rows && rows != 1;
      q.granularity = per_row ? Granularity::Channel : Granularity::Tensor;
      q.scales = scales(sn, per_row ? rows : 1);
    }
    return q;
  }
};

}  // namespace

QTensor& LayerWeights::proj(Proj p) {
  switch (p) {
    case kInProj: return in_proj;
    case kConv: return conv_w;
    case kXProj: return x_proj;
    case kDtProj: return dt_proj_w;
    case kOutProj: break;
    case kProjs: MQ_ASSERT(false);
  }
  return out_proj;
}

const char* proj_name(Proj p) {
  static const char* n[] = {"in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"};
  return n[p];
}

// config.json and the weights of a mambaq folder come from one save (io/folder.h); folders saved
// before the id existed have it in neither file.
static void check_save_id(const std::string& cfg_id, const TensorStore& store, const std::string& cfg_src) {
  const auto it = store.metadata.find(kSaveIdKey);
  const std::string w = it == store.metadata.end() ? "" : it->second;
  if (w == cfg_id) return;
  fail("{} and {} are from different saves (save id '{}' vs '{}'): a save or edit was interrupted between the two "
       "files; quantize or copy the model again", cfg_src, store.source, cfg_id, w);
}

// What the quantization section says each stored weight is, against what the tensors are: a
// layer's in_proj and out_proj follow its precision (layer_precision, else w_bits) in every
// recipe; the embedding and the LM head are quantized exactly when the section says so.
static void check_formats(const ModelConfig& cfg, const QuantMeta& m, const ModelWeights& w, const std::string& emb,
                          bool own_head, const TensorStore& store) {
  const auto kind = [](WFormat f) {
    return f == WFormat::S4 ? "packed 4-bit" : f == WFormat::S8 ? "int8" : "float";
  };
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerPrecision lp = m.layer(l);
    const WFormat want = lp.fp() ? WFormat::F32 : lp.w_bits == 4 ? WFormat::S4 : WFormat::S8;
    for (Proj p : {kInProj, kOutProj}) {
      const WFormat got = w.layers[size_t(l)].proj(p).format;
      if (got != want)
        fail("{}: the quantization section makes layer {} {} ({}), but tensor '{}' holds {} weights", cfg.source, l,
             lp.name(), m.layers.empty() ? "w_bits" : "layer_precision", layer_prefix(l) + "mixer." + proj_name(p) + ".weight",
             kind(got));
    }
  }
  const bool emb_q = w.embedding.format != WFormat::F32, head_q = w.lm_head.format != WFormat::F32;
  if (emb_q != m.quantize_embedding)
    fail("{}: quantization.quantize_embedding is {} but tensor '{}' holds {} weights ({})", cfg.source,
         m.quantize_embedding, emb, kind(w.embedding.format), store.source);
  if (head_q != m.quantize_lm_head)
    fail("{}: quantization.quantize_lm_head is {} but the LM head ('{}') holds {} weights ({})", cfg.source,
         m.quantize_lm_head, own_head ? std::string("lm_head.weight") : emb + ", tied", kind(w.lm_head.format),
         store.source);
}

std::unique_ptr<Model> Model::from_store(const ModelConfig& cfg, const TensorStore& store) {
  std::vector<TensorInfo> info;
  Binder b{store, cfg, {}, info};
  // A `mambaq quantize` folder: the projections are int8 with scales (docs/format.md).
  std::shared_ptr<QuantState> q;
  if (cfg.raw.is_object() && cfg.raw.contains("quantization")) {
    q = std::make_shared<QuantState>();
    q->meta = QuantMeta::from_json(cfg.raw.at("quantization"), cfg.source);
    if (!q->meta.layers.empty() && int(q->meta.layers.size()) != cfg.n_layer)
      fail("{}: quantization.layer_precision lists {} layers but the model has {} (n_layer)", cfg.source,
           q->meta.layers.size(), cfg.n_layer);
    check_save_id(q->meta.save_id, store, cfg.source);
  }
  const int64_t V = cfg.padded_vocab, dm = cfg.d_model;
  // Embedding: state-spaces "backbone.embedding", HF "backbone.embeddings".
  const Layout layout = q ? Layout::Quantized : b.has("backbone.embeddings.weight") ? Layout::HF : Layout::StateSpaces;
  const auto specs = tensor_specs(cfg, layout);
  const std::string emb = specs.front().name;
  if (!b.has(emb)) fail("{}: missing tensor 'backbone.embedding.weight' (or 'backbone.embeddings.weight')", store.source);
  const auto& es = store.tensors.at(emb).shape;
  if (es.size() == 2 && es[1] == dm && es[0] != V)
    fail("{}: tensor '{}' has {} rows but the config ({}) implies a vocabulary of {} (vocab_size {} padded)",
         store.source, emb, es[0], cfg.source, V, cfg.vocab_size);
  ModelWeights w;
  w.layers.resize(size_t(cfg.n_layer));
  // conv1d {conv_dim, 1, d_conv} is held as {conv_dim, d_conv}
  const auto qt = [&](const TensorSpec& s) {
    if (q) return b.stored(s.name, s.shape, q->meta);
    QTensor t = QTensor::from_weight(b.take(s.name, s.shape));
    t.shape = {s.shape.front(), s.shape.back()};
    return t;
  };
  for (const auto& s : specs) {
    if (s.embedding) {
      w.embedding = qt(s);
    } else if (s.model) {
      w.*(s.model) = b.take(s.name, s.shape);
    } else if (s.field) {
      w.layers[size_t(s.layer)].*(s.field) = b.take(s.name, s.shape);
    } else {
      w.layers[size_t(s.layer)].proj(s.proj) = qt(s);
    }
  }
  for (int l = 0; l < cfg.n_layer; ++l) {
    LayerWeights& L = w.layers[size_t(l)];
    L.A.resize(size_t(L.A_log.size()));
    for (size_t k = 0; k < L.A.size(); ++k) L.A[k] = -std::exp(L.A_log.data[k]);
    L.out_proj_rotated = q && !q->meta.layer(l).fp();  // Quamba fuses H^T into out_proj
  }
  // A tied head saved beside the embedding (state-spaces checkpoints store both names over one
  // storage) is the same tensor: held, counted and saved once.
  const auto same_as_embedding = [&](const std::string& n) {
    const RawTensor& a = store.tensors.at(n);
    const RawTensor& e = store.tensors.at(emb);
    return a.dtype == e.dtype && a.shape == e.shape && (a.data == e.data || std::memcmp(a.data, e.data, a.nbytes()) == 0);
  };
  if (b.has("lm_head.weight") && cfg.tie_embeddings && same_as_embedding("lm_head.weight")) {
    b.used.insert("lm_head.weight");
    w.lm_head = w.embedding;
  } else if (b.has("lm_head.weight")) {
    w.lm_head = q ? b.stored("lm_head.weight", {V, dm}, q->meta) : QTensor::from_weight(b.take("lm_head.weight", {V, dm}));
  } else if (cfg.tie_embeddings) {
    w.lm_head = w.embedding;
  } else {
    fail("{}: missing tensor 'lm_head.weight' (the config does not tie embeddings)", store.source);
  }
  if (q) check_formats(cfg, q->meta, w, emb, b.has("lm_head.weight") && w.lm_head.data != w.embedding.data, store);
  if (q && q->meta.group_heads) {  // Quamba2's head groups: end indices per SSD group and head group
    if (cfg.arch != Arch::Mamba2) fail("{}: quantization.group_heads is set but the model is not Mamba2", cfg.source);
    const int Hg = cfg.nheads / cfg.ngroups, P = cfg.headdim;
    for (int l = 0; l < cfg.n_layer; ++l) {
      const std::string hn = layer_prefix(l) + "mixer.conv1d.x_head_group_range",
                        dn = layer_prefix(l) + "mixer.conv1d.x_dim_group_range";
      auto it = store.tensors.find(hn);
      if (it == store.tensors.end()) fail("{}: missing tensor '{}' (quantization.group_heads is set)", store.source, hn);
      HeadGroups g;
      g.G = cfg.ngroups;
      g.nhg = it->second.shape.size() == 2 ? int(it->second.shape[1]) : 0;
      auto jt = store.tensors.find(dn);
      g.ndg = jt != store.tensors.end() && jt->second.shape.size() == 3 ? int(jt->second.shape[2]) : 0;
      if (g.nhg < 1 || g.nhg > Hg || g.ndg < 1 || g.ndg > P)
        fail("{}: tensor '{}' {} does not describe head groups of {} heads per SSD group", store.source, hn,
             shape_str(it->second.shape), Hg);
      const RawTensor& h = b.typed(hn, DType::I32, {g.G, g.nhg});
      const RawTensor& d = b.typed(dn, DType::I32, {g.G, g.nhg, g.ndg});
      g.head_end.resize(size_t(g.G) * g.nhg);
      g.dim_end.resize(size_t(g.G) * g.nhg * g.ndg);
      std::memcpy(g.head_end.data(), h.data, g.head_end.size() * 4);
      std::memcpy(g.dim_end.data(), d.data, g.dim_end.size() * 4);
      const auto increasing_to = [](const int32_t* v, int n, int end) {
        for (int i = 0; i < n; ++i)
          if (v[i] <= (i ? v[i - 1] : 0) || v[i] > end) return false;
        return v[n - 1] == end;
      };
      for (int gi = 0; gi < g.G; ++gi) {
        if (!increasing_to(g.head_end.data() + gi * g.nhg, g.nhg, Hg))
          fail("{}: tensor '{}': the head-group ends of SSD group {} must increase to {}", store.source, hn, gi, Hg);
        for (int k = 0; k < g.nhg; ++k)
          if (!increasing_to(g.dim_end.data() + (gi * g.nhg + k) * g.ndg, g.ndg, P))
            fail("{}: tensor '{}': the dim-group ends of SSD group {} head group {} must increase to {}", store.source,
                 dn, gi, k, P);
      }
      const auto order = [&](const std::string& n, int len) {  // a permutation of 0..len-1
        const RawTensor& t = b.typed(n, DType::I32, {len});
        std::vector<int32_t> v(static_cast<size_t>(len));
        std::memcpy(v.data(), t.data, v.size() * 4);
        std::vector<char> seen(static_cast<size_t>(len), 0);
        for (int32_t x : v) {
          if (x < 0 || x >= len || seen[size_t(x)]) fail("{}: tensor '{}' is not a permutation of 0..{}", store.source, n, len - 1);
          seen[size_t(x)] = 1;
        }
        return v;
      };
      const std::string cn = layer_prefix(l) + "mixer.conv1d.x_channel_order", on = layer_prefix(l) + "mixer.conv1d.x_head_order";
      g.channel = order(cn, cfg.d_inner);
      g.head = order(on, cfg.nheads);
      // the channel order moves whole heads: position h*P+p holds a channel of head head[h]
      for (int hd = 0; hd < cfg.nheads; ++hd)
        for (int p = 0; p < P; ++p)
          if (g.channel[size_t(hd * P + p)] / P != g.head[size_t(hd)])
            fail("{}: tensors '{}' and '{}' disagree: position {} (head {}, dim {}) holds channel {}, which is not in "
                 "head {}", store.source, cn, on, hd * P + p, hd, p, g.channel[size_t(hd * P + p)], g.head[size_t(hd)]);
      q->groups.push_back(std::move(g));
    }
  }
  if (q) {  // every activation scale of the points table (the head's only if saved)
    for (int i = 0; i <= cfg.n_layer; ++i)
      for (const auto& sp : scale_points(cfg.arch)) {
        const int l = i < cfg.n_layer ? i : -1;  // the head's last
        if (sp.head != (l < 0)) continue;
        if (l >= 0 && q->meta.layer(l).a_bits != 8) continue;  // a layer with float activations has none
        const std::string name = scale_tensor_name(cfg.arch, l, sp.name);
        if (l < 0 && !b.has(name)) {
          if (q->meta.head_int8())
            fail("{}: missing tensor '{}' (quantization.quantize_lm_head with {}-bit activations reads it)", store.source,
                 name, q->meta.a_bits);
          continue;
        }
        auto mit = store.metadata.find("observer:" + name);
        const std::string obs = mit != store.metadata.end() ? mit->second : "unknown";
        const float qmax = float((1 << (q->meta.a_bits - 1)) - 1);
        const Grouping gk = point_grouping(cfg.arch, sp.name);
        if (!q->groups.empty() && l >= 0 && gk != Grouping::None) {  // a grouped scale
          const auto shape = grouped_scale_shape(cfg, q->groups[size_t(l)], gk);
          PointScale p{l, sp.name, obs, 0.f, 0.f, shape, b.scales(name, shape)};
          p.scale = *std::max_element(p.values.begin(), p.values.end());
          p.amax = p.scale * qmax;
          q->scales.points.push_back(std::move(p));
          continue;
        }
        const float v = b.scales(name, 1)[0];
        q->scales.points.push_back({l, sp.name, obs, v * qmax, v});
      }
  }
  for (const auto& [name, t] : store.tensors)
    if (!b.used.count(name))
      fail("{}: unexpected tensor '{}' {} for a {} model with this config ({})", store.source, name,
           shape_str(t.shape), arch_name(cfg.arch), cfg.source);
  return from_weights(cfg, std::move(w), std::move(info), std::move(q));
}

std::unique_ptr<Model> Model::load(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(dir))
    fail("{}: is a file; a model is the folder holding config.json and the weights (here: '{}')", dir,
         fs::path(dir).parent_path().empty() ? "." : fs::path(dir).parent_path().string());
  check_no_pending_edit(dir);
  ModelConfig cfg = load_config(dir);
  TensorStore store = load_checkpoint(dir);
  return from_store(cfg, store);
}

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const auto& t : info_) n += numel(t.shape) * (t.dtype == "U8" ? 2 : 1);  // U8: packed 4-bit codes
  return n;
}

}  // namespace mambaq
