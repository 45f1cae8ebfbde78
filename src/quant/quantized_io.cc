// Quantized model folders: config.json (the original config plus "quantization"), one
// model.safetensors with int8 weights and every scale as a named F32 tensor, tokenizer.json.
// Names and semantics: docs/format.md.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <span>
#include <fstream>

#include "io/safetensors.h"
#include "mambaq/error.h"
#include "quant/quantized.h"

namespace mambaq {

namespace fs = std::filesystem;

namespace {
struct ScaleName {
  const char* point;   // calibration point
  const char* tensor;  // name after "backbone.layers.N.mixer."
};
constexpr ScaleName kMamba1Scales[] = {
    {"in_proj:input", "in_proj.input_scale"},    {"in_proj:output", "in_proj.output_scale"},
    {"x_proj:input", "conv1d.output_scale"},     {"x_proj:output", "x_proj.output_scale"},
    {"dt_proj:output", "dt_proj.output_scale"},  {"ssm_state_act:input", "ssm_state_scale"},
    {"out_proj:input", "out_proj.input_scale"},
};
constexpr ScaleName kMamba2Scales[] = {
    {"in_proj:input", "in_proj.input_scale"}, {"z", "in_proj.z_scale"},
    {"xBC", "in_proj.xBC_scale"},             {"dt", "in_proj.dt_scale"},
    {"x_conv_out", "conv1d.x_scale"},         {"B_conv_out", "conv1d.B_scale"},
    {"C_conv_out", "conv1d.C_scale"},         {"ssm_state_act:input", "ssm_state_scale"},
    {"out_proj:input", "out_proj.input_scale"},
};
constexpr const char* kHeadScale = "lm_head.input_scale";  // observed; lm_head stays FP in quamba1

std::span<const ScaleName> scale_names(Arch a) {
  if (a == Arch::Mamba1) return kMamba1Scales;
  return kMamba2Scales;
}
std::string mixer(int l) { return "backbone.layers." + std::to_string(l) + ".mixer."; }

// The int8 projections of a layer: name after the mixer prefix, and the QLayer member.
struct QProj {
  const char* name;
  QuantizedWeight QLayer::*w;
};
std::vector<QProj> projections(Arch a) {
  if (a == Arch::Mamba1)
    return {{"in_proj", &QLayer::in_proj}, {"conv1d", &QLayer::conv}, {"x_proj", &QLayer::x_proj},
            {"dt_proj", &QLayer::dt_proj}, {"out_proj", &QLayer::out_proj}};
  return {{"in_proj", &QLayer::in_proj}, {"conv1d", &QLayer::conv}, {"out_proj", &QLayer::out_proj}};
}
}  // namespace

// Scale tensor name of a calibration point ("" when the point has no saved tensor).
std::string scale_tensor_name(Arch a, int layer, const std::string& point) {
  if (layer < 0) return point == "lm_head:input" ? kHeadScale : "";
  for (const auto& s : scale_names(a))
    if (point == s.point) return mixer(layer) + s.tensor;
  return "";
}

void save_quantized(const Model& m, const std::string& dir, const std::string& tokenizer_file) {
  const QuantizedModel* q = m.quantized();
  if (!q) fail("internal error: save_quantized on an FP model");
  const ModelConfig& cfg = m.config();
  const ModelWeights& w = m.weights();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create folder: {}", dir, ec.message());

  std::vector<NamedTensor> ts;
  std::map<std::string, std::string> meta{{"format", "mambaq-quantized"}, {"recipe", q->meta.recipe}};
  std::vector<std::unique_ptr<std::vector<float>>> keep;  // scalar scale storage
  auto f32 = [&](const std::string& name, const Weight& t) {
    if (t.data) ts.push_back({name, DType::F32, t.shape, t.data});
  };
  auto scalar = [&](const std::string& name, float v) {
    keep.push_back(std::make_unique<std::vector<float>>(1, v));
    ts.push_back({name, DType::F32, {1}, keep.back()->data()});
  };
  f32("backbone.embedding.weight", w.embedding);
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    const QLayer& Q = q->layers[size_t(l)];
    const std::string p = mixer(l);
    f32("backbone.layers." + std::to_string(l) + ".norm.weight", L.norm);
    f32("backbone.layers." + std::to_string(l) + ".norm.bias", L.norm_b);
    for (const auto& pr : projections(cfg.arch)) {
      const QuantizedWeight& qw = Q.*(pr.w);
      std::vector<int64_t> shape{qw.rows, qw.cols};
      if (std::string(pr.name) == "conv1d") shape = {qw.rows, 1, qw.cols};
      ts.push_back({p + pr.name + ".weight", DType::I8, shape, qw.codes()});
      ts.push_back({p + pr.name + ".weight_scale", DType::F32, {int64_t(qw.scales.size())}, qw.scales.data()});
    }
    f32(p + "in_proj.bias", L.in_proj_b);
    f32(p + "conv1d.bias", L.conv_b);
    f32(p + "out_proj.bias", L.out_proj_b);
    if (cfg.arch == Arch::Mamba1) {
      f32(p + "dt_proj.bias", L.dt_proj_b);
    } else {
      f32(p + "dt_bias", L.dt_bias);
      f32(p + "norm.weight", L.gnorm);
    }
    f32(p + "A_log", L.A_log);
    f32(p + "D", L.D);
  }
  f32("backbone.norm_f.weight", w.norm_f);
  f32("backbone.norm_f.bias", w.norm_f_b);
  if (w.lm_head.data != w.embedding.data) f32("lm_head.weight", w.lm_head);
  for (const auto& ps : q->cal.points) {
    const std::string name = scale_tensor_name(cfg.arch, ps.layer, ps.point);
    if (name.empty()) fail("internal error: calibration point '{}' has no tensor name", ps.point);
    scalar(name, ps.scale);
    meta["observer:" + name] = ps.observer;
  }
  save_safetensors((fs::path(dir) / "model.safetensors").string(), ts, meta);

  nlohmann::json c = cfg.raw;
  nlohmann::json qj = q->meta.to_json();
  std::set<std::string> pct;
  for (const auto& ps : q->cal.points)
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

std::shared_ptr<QuantizedModel> load_quantized(const ModelConfig& cfg, const TensorStore& store,
                                               std::set<std::string>& used) {
  auto q = std::make_shared<QuantizedModel>();
  q->meta = QuantMeta::from_json(cfg.raw.at("quantization"), cfg.source);
  const auto get = [&](const std::string& name, DType dt, const std::vector<int64_t>& shape) -> const RawTensor& {
    auto it = store.tensors.find(name);
    if (it == store.tensors.end())
      fail("{}: missing tensor '{}' (expected {} {} for this quantized model)", store.source, name, dtype_name(dt),
           shape_str(shape));
    const RawTensor& t = it->second;
    if (t.dtype != dt)
      fail("{}: tensor '{}' has dtype {} but a quantized model stores it as {}", store.source, name,
           dtype_name(t.dtype), dtype_name(dt));
    if (t.shape != shape)
      fail("{}: tensor '{}' has shape {} but the config ({}) implies {}", store.source, name, shape_str(t.shape),
           cfg.source, shape_str(shape));
    used.insert(name);
    return t;
  };
  const auto scale = [&](const std::string& name) {
    float v;
    std::memcpy(&v, get(name, DType::F32, {1}).data, 4);
    if (!(v > 0) || !std::isfinite(v)) fail("{}: scale '{}' is {} (must be positive and finite)", store.source, name, v);
    return v;
  };
  const int64_t dm = cfg.d_model, di = cfg.d_inner, cd = cfg.conv_dim(), K = cfg.d_conv;
  for (int l = 0; l < cfg.n_layer; ++l) {
    QLayer Q;
    const std::string p = mixer(l);
    for (const auto& pr : projections(cfg.arch)) {
      std::vector<int64_t> shape;
      const std::string n = pr.name;
      if (n == "in_proj") shape = {cfg.in_proj_dim(), dm};
      if (n == "conv1d") shape = {cd, 1, K};
      if (n == "x_proj") shape = {cfg.dt_rank + 2 * cfg.d_state, di};
      if (n == "dt_proj") shape = {di, cfg.dt_rank};
      if (n == "out_proj") shape = {dm, di};
      const RawTensor& t = get(p + n + ".weight", DType::I8, shape);
      QuantizedWeight& qw = Q.*(pr.w);
      qw.rows = int(shape[0]);
      qw.cols = int(shape.back());
      qw.bits = q->meta.w_bits;
      qw.ext = reinterpret_cast<const int8_t*>(t.data);  // zero-copy over the mapped file
      qw.owner = t.owner;
      const std::string sn = p + n + ".weight_scale";
      const bool per_row = n != "conv1d" && q->meta.granularity == Granularity::Channel;
      const RawTensor& s = get(sn, DType::F32, {per_row ? shape[0] : 1});
      qw.granularity = per_row ? Granularity::Channel : Granularity::Tensor;
      qw.scales.resize(size_t(per_row ? shape[0] : 1));
      std::memcpy(qw.scales.data(), s.data, qw.scales.size() * 4);
      for (float v : qw.scales)
        if (!(v > 0) || !std::isfinite(v)) fail("{}: scale '{}' holds {} (must be positive and finite)", store.source, sn, v);
    }
    for (const auto& sn : scale_names(cfg.arch)) {
      const std::string name = p + sn.tensor;
      const float v = scale(name);
      auto mit = store.metadata.find("observer:" + name);
      q->cal.points.push_back({l, sn.point, mit != store.metadata.end() ? mit->second : "unknown", v * 127.f, v});
    }
    set_layer_scales(cfg, q->cal, l, Q);
    q->layers.push_back(std::move(Q));
  }
  if (store.has(kHeadScale)) {
    const float v = scale(kHeadScale);
    auto mit = store.metadata.find(std::string("observer:") + kHeadScale);
    q->cal.points.push_back({-1, "lm_head:input", mit != store.metadata.end() ? mit->second : "unknown", v * 127.f, v});
  }
  q->cal.samples = q->meta.calib_samples;
  q->cal.alpha = q->meta.alpha;
  q->cal.mode = q->meta.pmode;
  return q;
}

}  // namespace mambaq
