// Building a quantized model from an FP model and a calibration, through a recipe; saving it.
#include "quant/quantized.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "io/safetensors.h"
#include "mambaq/error.h"
#include "model/names.h"
#include "model/points.h"

namespace mambaq {

namespace fs = std::filesystem;

std::unique_ptr<Model> quantize_model(const Model& fp, const Calibration& cal, const QuantMeta& meta) {
  const Recipe& r = recipe(meta.recipe);
  if (fp.is_quantized()) fail("the model is already quantized");
  const auto& cfg = fp.config();
  r.validate(cfg, meta);
  auto q = std::make_shared<QuantState>();
  q->meta = meta;
  for (int l = -1; l < cfg.n_layer; ++l)  // every point the recipe needs must be calibrated
    for (const auto& sp : scale_points(cfg.arch)) {
      if (sp.head != (l < 0)) continue;
      const PointScale* p = cal.find(l, sp.name);
      if (!p) {
        if (l < 0) continue;  // the head's input scale is recorded when observed, never read by quamba1
        fail("quantization: no scale for layer {} point '{}'", l, sp.name);
      }
      if (!(p->scale > 0)) fail("quantization: scale of layer {} point '{}' is {} (must be positive)", l, sp.name, p->scale);
    }
  q->scales = cal;
  ModelWeights w = fp.weights();
  for (int l = 0; l < cfg.n_layer; ++l) r.quantize_layer(cfg, meta, fp.weights().layers[size_t(l)], w.layers[size_t(l)]);
  // what the folder will hold (the same table save_quantized walks): float tensors, the
  // quantized projections with their scales, an untied head, every activation scale
  std::vector<TensorInfo> info;
  for (const auto& s : tensor_specs(cfg, Layout::Quantized)) {
    if (s.proj == kProjs) {
      info.push_back({s.name, "F32", s.shape});
      continue;
    }
    const QTensor& t = w.layers[size_t(s.layer)].proj(s.proj);
    info.push_back({s.name, dtype_name(DType::I8), s.shape});
    info.push_back({s.name.substr(0, s.name.size() - 7) + ".weight_scale", "F32", {int64_t(t.scales.size())}});
  }
  if (w.lm_head.data != w.embedding.data) info.push_back({"lm_head.weight", "F32", w.lm_head.shape});
  for (const auto& ps : cal.points) info.push_back({scale_tensor_name(cfg.arch, ps.layer, ps.point), "F32", {1}});
  auto m = Model::from_weights(cfg, std::move(w), std::move(info), std::move(q));
  m->set_mode(r.default_mode());
  return m;
}

void save_quantized(const Model& m, const std::string& dir, const std::string& tokenizer_file) {
  const QuantState* q = m.quantized();
  if (!q) fail("internal error: save_quantized on an FP model");
  const ModelConfig& cfg = m.config();
  const ModelWeights& w = m.weights();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create folder: {}", dir, ec.message());

  std::vector<NamedTensor> ts;
  std::map<std::string, std::string> meta{{"format", "mambaq-quantized"}, {"recipe", q->meta.recipe}};
  auto f32 = [&](const std::string& name, const Weight& t) {
    if (t.data) ts.push_back({name, DType::F32, t.shape, t.data});
  };
  for (const auto& s : tensor_specs(cfg, Layout::Quantized)) {
    if (s.model) {
      f32(s.name, w.*(s.model));
    } else if (s.field) {
      f32(s.name, w.layers[size_t(s.layer)].*(s.field));
    } else {
      const QTensor& t = w.layers[size_t(s.layer)].proj(s.proj);
      if (t.format != WFormat::S8) fail("internal error: {} is not quantized", s.name);
      ts.push_back({s.name, DType::I8, s.shape, t.data});
      const std::string base = s.name.substr(0, s.name.size() - std::string(".weight").size());
      ts.push_back({base + ".weight_scale", DType::F32, {int64_t(t.scales.size())}, t.scales.data()});
    }
  }
  if (w.lm_head.data != w.embedding.data) f32("lm_head.weight", w.lm_head);
  for (const auto& ps : q->scales.points) {
    const std::string name = scale_tensor_name(cfg.arch, ps.layer, ps.point);
    if (name.empty()) fail("internal error: calibration point '{}' has no tensor name", ps.point);
    ts.push_back({name, DType::F32, {1}, &ps.scale});
    meta["observer:" + name] = ps.observer;
  }
  save_safetensors((fs::path(dir) / "model.safetensors").string(), ts, meta);

  nlohmann::json c = cfg.raw;
  nlohmann::json qj = q->meta.to_json();
  std::set<std::string> pct;
  for (const auto& ps : q->scales.points)
    if (ps.observer == "percentile") pct.insert(ps.point);
  qj["observers"]["percentile_points"] = pct;
  c["quantization"] = qj;
  const std::string cp = (fs::path(dir) / "config.json").string();
  std::ofstream out(cp, std::ios::trunc);
  if (!out) fail("{}: cannot write", cp);
  out << c.dump(2) << "\n";
  if (!out) fail("{}: write failed", cp);
  if (!tokenizer_file.empty()) {
    fs::copy_file(tokenizer_file, fs::path(dir) / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
    if (ec) fail("{}: cannot copy the tokenizer into {}: {}", tokenizer_file, dir, ec.message());
  }
}

}  // namespace mambaq
