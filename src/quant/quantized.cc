// Building a quantized model from an FP model and a calibration, through a recipe; saving it.
#include "quant/quantized.h"
#include "quant/scale_rules.h"

#include <chrono>
#include <filesystem>
#include <set>

#include "io/folder.h"
#include "io/mmap_file.h"
#include "io/safetensors.h"
#include "mambaq/error.h"
#include "model/names.h"
#include "model/points.h"
#include "quant/head_groups.h"

namespace mambaq {

namespace fs = std::filesystem;

namespace {

// How a weight is saved (docs/format.md): F32 values; S8 codes (I8, `shape`) or S4 packed codes
// (U8 {rows, cols / 2}), with `<base>.weight_scale` beside them: {1}, {rows} or {rows, groups}.
struct Stored {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};
std::vector<Stored> stored_tensors(const std::string& name, const std::vector<int64_t>& shape, const QTensor& t) {
  if (t.format == WFormat::F32) return {{name, DType::F32, shape, t.data}};
  const std::string base = name.substr(0, name.size() - std::string(".weight").size());
  std::vector<int64_t> ss;
  switch (t.granularity) {
    case Granularity::Tensor: ss = {1}; break;
    case Granularity::Channel: ss = {t.rows()}; break;
    case Granularity::Group: ss = {t.rows(), t.ngroups()}; break;
  }
  MQ_ASSERT(size_t(numel(ss)) == t.scales.size());
  const bool s4 = t.format == WFormat::S4;
  return {{name, s4 ? DType::U8 : DType::I8, s4 ? std::vector<int64_t>{t.rows(), t.cols() / 2} : shape, t.data},
          {base + ".weight_scale", DType::F32, ss, t.scales.data()}};
}

}  // namespace

std::unique_ptr<Model> quantize_model(const Model& fp, const Calibration& cal, const QuantMeta& meta,
                                      const ModelWeights* quantized, const std::vector<HeadGroups>* groups) {
  const Recipe& r = recipe(meta.recipe);
  if (fp.is_quantized()) fail("the model is already quantized");
  const auto& cfg = fp.config();
  r.validate(cfg, meta);
  auto q = std::make_shared<QuantState>();
  q->meta = meta;
  if (meta.group_heads) {
    if (!groups || int(groups->size()) != cfg.n_layer) fail("internal error: grouped heads without head groups");
    q->groups = *groups;
  }
  const bool head_a8 = meta.quantize_lm_head && meta.a_bits == 8;
  for (int l = -1; l < cfg.n_layer; ++l) {  // every point the plan reads must be calibrated
    if (l >= 0 && meta.layer(l).a_bits != 8) continue;
    for (const auto& sp : scale_points(cfg.arch)) {
      if (sp.head != (l < 0)) continue;
      const PointScale* p = cal.find(l, sp.name);
      if (!p) {
        if (l < 0 && !head_a8) continue;  // the head's input scale is recorded when observed
        fail("quantization: no scale for layer {} point '{}'", l, sp.name);
      }
      if (!(p->scale > 0)) fail("quantization: scale of layer {} point '{}' is {} (must be positive)", l, sp.name, p->scale);
    }
  }
  for (const auto& p : cal.points)  // only the scales of layers that quantize activations are kept
    if (p.layer < 0 || meta.layer(p.layer).a_bits == 8) q->scales.points.push_back(p);
  ModelWeights w = fp.weights();
  if (quantized) {
    w = *quantized;
  } else {
    const WeightQuantizer rtn = [](Proj, const float* W, int rows, int cols, const WeightSpec& s) {
      return quantize_rtn(W, rows, cols, s);
    };
    for (int l = 0; l < cfg.n_layer; ++l)
      r.quantize_layer(cfg, meta, l, fp.weights().layers[size_t(l)], w.layers[size_t(l)], rtn);
    r.quantize_ends(cfg, meta, fp.weights(), w, rtn);
  }
  // what the folder will hold (the same table save_quantized walks): float tensors, the
  // quantized projections with their scales, an untied head, every activation scale
  std::vector<TensorInfo> info;
  const auto add_info = [&](const std::string& name, const std::vector<int64_t>& shape, const QTensor& t) {
    for (const auto& st : stored_tensors(name, shape, t)) info.push_back({st.name, dtype_name(st.dtype), st.shape});
  };
  for (const auto& s : tensor_specs(cfg, Layout::Quantized)) {
    if (s.embedding)
      add_info(s.name, s.shape, w.embedding);
    else if (s.proj == kProjs)
      info.push_back({s.name, "F32", s.shape});
    else
      add_info(s.name, s.shape, w.layers[size_t(s.layer)].proj(s.proj));
  }
  if (!w.tied()) add_info("lm_head.weight", w.lm_head.shape, w.lm_head);
  for (const auto& ps : q->scales.points)
    info.push_back({scale_tensor_name(cfg.arch, ps.layer, ps.point), "F32", ps.shape.empty() ? std::vector<int64_t>{1} : ps.shape});
  for (size_t l = 0; l < q->groups.size(); ++l) {
    const HeadGroups& g = q->groups[l];
    info.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_head_group_range", "I32", {g.G, g.nhg}});
    info.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_dim_group_range", "I32", {g.G, g.nhg, g.ndg}});
    info.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_channel_order", "I32", {int64_t(g.channel.size())}});
    info.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_head_order", "I32", {int64_t(g.head.size())}});
  }
  return Model::from_weights(cfg, std::move(w), std::move(info), std::move(q));
}

std::unique_ptr<Model> fp_in_quantized_basis(const Model& fp, const QuantState& q) {
  if (fp.is_quantized()) fail("internal error: fp_in_quantized_basis on a quantized model");
  const ModelConfig& cfg = fp.config();
  ModelWeights w = fp.weights();
  recipe(q.meta.recipe).transform(cfg, q.meta, w);
  if (q.meta.group_heads) {
    if (q.groups.size() != size_t(cfg.n_layer)) fail("internal error: grouped heads without head groups");
    for (int l = 0; l < cfg.n_layer; ++l) {
      const HeadGroups& g = q.groups[size_t(l)];
      HeadOrder o{std::vector<int>(g.channel.begin(), g.channel.end()), std::vector<int>(g.head.begin(), g.head.end()), g};
      reorder_layer(cfg, o, w.layers[size_t(l)]);
    }
  }
  return Model::from_weights(cfg, std::move(w), fp.tensor_info(), nullptr);
}

QuantizeResult quantize(const Model& fp, const QuantMeta& meta, const QuantizeInputs& in) {
  const Recipe& r = recipe(meta.recipe);
  if (fp.is_quantized()) fail("the model is already quantized");
  const ModelConfig& cfg = fp.config();
  r.validate(cfg, meta);
  ModelWeights tw = fp.weights();
  r.transform(cfg, meta, tw);
  std::vector<HeadGroups> groups;
  if (meta.group_heads) {  // statistics on the transformed model, then its heads reordered
    if (!in.calib) fail("internal error: head grouping without calibration samples");
    const auto tm0 = Model::from_weights(cfg, tw, fp.tensor_info(), nullptr);
    const auto stats = channel_stats(*tm0, in.calib->samples, in.progress);
    for (int l = 0; l < cfg.n_layer; ++l) {
      const HeadOrder o = group_heads(cfg, stats[size_t(l)]);
      reorder_layer(cfg, o, tw.layers[size_t(l)]);
      groups.push_back(o.groups);
    }
  }
  const auto tm = Model::from_weights(cfg, std::move(tw), fp.tensor_info(), nullptr);
  QuantizeResult res;
  using clock = std::chrono::steady_clock;
  if (!meta.scale_overrides.empty() && !meta.any_a8())
    fail_option("scale_override", "scale_override: this precision keeps activations in float: there is no activation "
                "scale to override");
  if (meta.any_a8()) {
    if (!in.calib) fail("internal error: quantize without calibration samples");
    const auto t0 = clock::now();
    CalibOptions co = in.calib_opts;
    if (meta.group_heads) co.groups = &groups, co.grouped_percentile = meta.grouped_percentile;
    std::vector<ScaleRule> rules;
    for (const auto& t : meta.scale_overrides) rules.push_back(parse_scale_rule(t, cfg, "--scale-override"));
    co.point_alpha = rule_alphas(rules, cfg);
    res.calibration = calibrate(*tm, *in.calib, co);
    res.overrides = apply_scale_rules(res.calibration, rules, "--scale-override");
    res.calibrate_s = std::chrono::duration<double>(clock::now() - t0).count();
  }
  std::unique_ptr<ModelWeights> gw;
  if (meta.gptq) {
    const auto t0 = clock::now();
    gw = std::make_unique<ModelWeights>(tm->weights());
    gptq_model(*tm, r, meta, in.gptq_samples, in.gptq, in.progress, *gw);
    res.gptq_s = std::chrono::duration<double>(clock::now() - t0).count();
  }
  res.model = quantize_model(*tm, res.calibration, meta, gw.get(), meta.group_heads ? &groups : nullptr);
  res.groups = std::move(groups);
  return res;
}

void save_quantized(const Model& m, const std::string& dir, const std::string& tokenizer_file) {
  const QuantState* q = m.quantized();
  if (!q) fail("internal error: save_quantized on an FP model");
  const ModelConfig& cfg = m.config();
  const ModelWeights& w = m.weights();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create folder: {}", dir, ec.message());
  FolderLock lock(dir);  // one writer of a folder at a time (a scales edit of it waits, and vice versa)

  std::vector<NamedTensor> ts;
  const std::string save_id = new_save_id();  // in both files: a folder mixed by a killed save is refused
  std::map<std::string, std::string> meta{{"format", "mambaq-quantized"}, {"recipe", q->meta.recipe}, {kSaveIdKey, save_id}};
  auto f32 = [&](const std::string& name, const Weight& t) {
    if (t.data) ts.push_back({name, DType::F32, t.shape, t.data});
  };
  const auto add = [&](const std::string& name, const std::vector<int64_t>& shape, const QTensor& t) {
    for (const auto& st : stored_tensors(name, shape, t)) ts.push_back({st.name, st.dtype, st.shape, st.data});
  };
  for (const auto& s : tensor_specs(cfg, Layout::Quantized)) {
    if (s.embedding) {
      add(s.name, s.shape, w.embedding);
    } else if (s.model) {
      f32(s.name, w.*(s.model));
    } else if (s.field) {
      f32(s.name, w.layers[size_t(s.layer)].*(s.field));
    } else {
      add(s.name, s.shape, w.layers[size_t(s.layer)].proj(s.proj));
    }
  }
  if (!w.tied()) add("lm_head.weight", w.lm_head.shape, w.lm_head);
  for (const auto& ps : q->scales.points) {
    const std::string name = scale_tensor_name(cfg.arch, ps.layer, ps.point);
    if (name.empty()) fail("internal error: calibration point '{}' has no tensor name", ps.point);
    if (ps.values.empty())
      ts.push_back({name, DType::F32, {1}, &ps.scale});
    else
      ts.push_back({name, DType::F32, ps.shape, ps.values.data()});
    meta["observer:" + name] = ps.observer;
  }
  for (size_t l = 0; l < q->groups.size(); ++l) {  // Quamba2's head groups: end indices, as the reference saves them
    const HeadGroups& g = q->groups[l];
    ts.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_head_group_range", DType::I32, {g.G, g.nhg}, g.head_end.data()});
    ts.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_dim_group_range", DType::I32, {g.G, g.nhg, g.ndg}, g.dim_end.data()});
    ts.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_channel_order", DType::I32, {int64_t(g.channel.size())}, g.channel.data()});
    ts.push_back({layer_prefix(int(l)) + "mixer.conv1d.x_head_order", DType::I32, {int64_t(g.head.size())}, g.head.data()});
  }
  // The tokenizer first, config.json last: the folder is whole once config.json (with the save id
  // of the weights) is in place. Each file a new one under its name (links replaced, not followed).
  if (!tokenizer_file.empty()) {
    const auto tok = MappedFile::open(tokenizer_file);
    AtomicWriter tw((fs::path(dir) / "tokenizer.json").string());
    tw.write(tok->data(), tok->size());
    tw.commit();
  }
  save_safetensors((fs::path(dir) / "model.safetensors").string(), ts, meta);

  nlohmann::json c = cfg.raw;
  nlohmann::json qj = q->meta.to_json();
  std::set<std::string> pct;
  for (const auto& ps : q->scales.points)
    if (ps.observer == "percentile") pct.insert(ps.point);
  qj["observers"]["percentile_points"] = pct;
  qj["save_id"] = save_id;
  c["quantization"] = qj;
  const std::string cp = (fs::path(dir) / "config.json").string();
  write_text_file(cp, c.dump(2) + "\n");
}

}  // namespace mambaq
