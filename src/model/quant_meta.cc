// config.json's "quantization" section, and the scale table's lookups.
#include "model/quant_state.h"

#include "io/json_file.h"
#include "mambaq/error.h"

namespace mambaq {

const PointScale* ScaleTable::find(int layer, const std::string& point) const {
  for (const auto& p : points)
    if (p.layer == layer && p.point == point) return &p;
  return nullptr;
}

PointScale* ScaleTable::find(int layer, const std::string& point) {
  for (auto& p : points)
    if (p.layer == layer && p.point == point) return &p;
  return nullptr;
}

std::string LayerPrecision::name() const {
  if (fp()) return "FP16";
  return fmt::format("W{}A{}", w_bits, a_bits);
}

LayerPrecision LayerPrecision::parse(const std::string& s, const std::string& where) {
  if (s == "W4A8") return {4, 8};
  if (s == "W4A16") return {4, 16};
  if (s == "W8A8") return {8, 8};
  if (s == "FP16" || s == "FP32") return {32, 32};
  fail("{}: layer precision '{}' is not one of W4A8, W4A16, W8A8, FP16", where, s);
}

std::string QuantMeta::summary() const {
  std::string s = fmt::format("{} W{}A{}", recipe, w_bits, a_bits);
  if (!preset.empty()) s += " (preset " + preset + ")";
  if (w_bits == 4)
    s += fmt::format(": 4-bit weights in groups of {}", group_size);
  else if (recipe == "quamba2")
    s += ": 8-bit weights per tensor (in_proj per split)";
  else  // quamba1: the line `info` has always printed
    s += fmt::format(", weights per {}", granularity == Granularity::Channel ? "channel" : "tensor");
  if (gptq) s += fmt::format(", GPTQ ({} x {} tokens{})", gptq_opts.num, gptq_opts.seqlen, gptq_opts.act_order ? ", act-order" : "");
  if (rotate_residual) s += ", residual stream rotated";
  if (group_heads) s += ", heads grouped";
  if (quantize_embedding) s += ", embedding quantized";
  if (quantize_lm_head) s += ", lm_head quantized";
  if (any_a8() && group_heads && grouped_percentile)
    s += fmt::format(", grouped observers (percentile alpha {} ({}) per block on x and the state), {} calibration "
                     "samples x {}", alpha, pmode == PercentileMode::Ema ? "ema" : "exact", calib_samples, calib_seqlen);
  else if (any_a8() && group_heads)
    s += fmt::format(", grouped min-max observers (no percentile), {} calibration samples x {}", calib_samples, calib_seqlen);
  else if (any_a8())
    s += fmt::format(", percentile alpha {} ({}), {} calibration samples x {}", alpha,
                     pmode == PercentileMode::Ema ? "ema" : "exact", calib_samples, calib_seqlen);
  else
    s += ", activations in float";
  if (!layers.empty()) s += fmt::format(", per-layer precision ({} layers)", layers.size());
  return s;
}

std::string QuantMeta::layers_str() const {
  std::string s;
  for (size_t l = 0; l < layers.size(); ++l) s += fmt::format("{}{} {}", l ? ", " : "", l, layers[l].name());
  return s;
}

bool QuantMeta::any_a8() const {
  if (layers.empty()) return a_bits == 8;
  for (const auto& l : layers)
    if (l.a_bits == 8) return true;
  return quantize_lm_head && a_bits == 8;
}

namespace {
const char* gran_name(Granularity g) {
  return g == Granularity::Tensor ? "tensor" : g == Granularity::Channel ? "channel" : "group";
}
}  // namespace

nlohmann::json QuantMeta::to_json() const {
  nlohmann::json j = {{"recipe", recipe},
          {"w_bits", w_bits},
          {"a_bits", a_bits},
          {"weight_granularity", gran_name(granularity)},
          {"observers",
           {{"default", "minmax"},
            {"percentile_alpha", alpha},
            {"percentile_mode", pmode == PercentileMode::Ema ? "ema" : "exact"}}},
          {"hadamard", "out_proj:input"},
          {"calibration",
           {{"file", calib_file},
            {"sha256", calib_sha256},
            {"samples", calib_samples},
            {"available", calib_available},
            {"seqlen", calib_seqlen}}},
          {"source_model", source_model},
          {"mambaq_version", version}};
  if (recipe != "quamba1") {
    if (!preset.empty()) j["preset"] = preset;
    j["group_size"] = group_size;
    j["rotate_residual"] = rotate_residual;
    j["group_heads"] = group_heads;
    if (grouped_percentile) j["grouped_percentile"] = true;
    j["quantize_embedding"] = quantize_embedding;
    j["quantize_lm_head"] = quantize_lm_head;
    j["hadamard"] = rotate_residual ? "residual stream (folded), out_proj:input (online)" : "out_proj:input";
  }
  if (gptq)
    j["gptq"] = {{"file", gptq_opts.file},      {"sha256", gptq_opts.sha256}, {"samples", gptq_opts.num},
                 {"seqlen", gptq_opts.seqlen},  {"damp", gptq_opts.damp},     {"block", gptq_opts.block},
                 {"act_order", gptq_opts.act_order}};
  if (!layers.empty()) {
    auto& a = j["layer_precision"] = nlohmann::json::array();
    for (const auto& l : layers) a.push_back(l.name());
  }
  if (!scale_overrides.empty()) j["scale_overrides"] = scale_overrides;
  if (!edits.empty()) j["edits"] = edits;
  if (!not_applied.empty()) j["not_applied"] = not_applied;
  if (!save_id.empty()) j["save_id"] = save_id;
  return j;
}

QuantMeta QuantMeta::from_json(const nlohmann::json& j, const std::string& src) {
  QuantMeta m;
  const std::string w = src + ": quantization";
  if (!j.is_object()) fail("{} is not an object", w);
  const auto need = [&](const nlohmann::json& o, const char* key, const std::string& where) -> const nlohmann::json& {
    if (!o.is_object() || !o.contains(key)) fail("{}: missing field '{}'", where, key);
    return o[key];
  };
  need(j, "recipe", w);
  m.recipe = json_string(j, "recipe", "", w);
  need(j, "w_bits", w);
  m.w_bits = int(json_int(j, "w_bits", 0, w, 1, 16));
  need(j, "a_bits", w);
  m.a_bits = int(json_int(j, "a_bits", 0, w, 1, 16));
  need(j, "weight_granularity", w);
  const auto g = json_string(j, "weight_granularity", "", w);
  if (g != "tensor" && g != "channel" && g != "group")
    fail("{}.weight_granularity '{}' is not tensor, channel or group", w, g);
  m.granularity = g == "tensor" ? Granularity::Tensor : g == "channel" ? Granularity::Channel : Granularity::Group;
  const auto& o = need(j, "observers", w);
  need(o, "percentile_alpha", w + ".observers");
  m.alpha = json_number(o, "percentile_alpha", 0, w + ".observers");
  if (!(m.alpha > 0 && m.alpha <= 1)) fail("{}.observers: field 'percentile_alpha' = {} is outside (0, 1]", w, m.alpha);
  const auto pm = json_string(o, "percentile_mode", "ema", w + ".observers");
  if (pm != "ema" && pm != "exact") fail("{}.observers: field 'percentile_mode' '{}' is not ema or exact", w, pm);
  m.pmode = pm == "exact" ? PercentileMode::Exact : PercentileMode::Ema;
  const auto& c = need(j, "calibration", w);
  const std::string cw = w + ".calibration";
  m.calib_file = json_string(c, "file", "", cw);
  m.calib_sha256 = json_string(c, "sha256", "", cw);
  m.calib_samples = size_t(json_int(c, "samples", 0, cw, 0, INT64_MAX));
  m.calib_available = size_t(json_int(c, "available", 0, cw, 0, INT64_MAX));
  m.calib_seqlen = int(json_int(c, "seqlen", 0, cw, 0, INT32_MAX));
  m.version = json_string(j, "mambaq_version", "", w);
  m.source_model = json_string(j, "source_model", "", w);
  if (m.recipe != "quamba1" && m.recipe != "quamba2")
    fail("{}: quantization.recipe '{}' is not supported (this build has: quamba1, quamba2)", src, m.recipe);
  if (m.recipe == "quamba1" && (m.w_bits != 8 || m.a_bits != 8))
    fail("{}: quantization W{}A{} is not supported by the quamba1 recipe (W8A8)", src, m.w_bits, m.a_bits);
  if (m.recipe == "quamba2") {
    if ((m.w_bits != 4 && m.w_bits != 8) || (m.a_bits != 8 && m.a_bits != 16) || (m.w_bits == 8 && m.a_bits == 16))
      fail("{}: quantization W{}A{} is not a quamba2 precision (W4A8, W4A16, W8A8)", src, m.w_bits, m.a_bits);
    m.preset = json_string(j, "preset", "", w);
    m.group_size = int(json_int(j, "group_size", 128, w, 32, 1 << 20));
    if (m.group_size % 32) fail("{}: field 'group_size' = {} is not a multiple of 32", w, m.group_size);
    m.rotate_residual = json_bool(j, "rotate_residual", false, w);
    m.group_heads = json_bool(j, "group_heads", false, w);
    m.grouped_percentile = json_bool(j, "grouped_percentile", false, w);
    m.quantize_embedding = json_bool(j, "quantize_embedding", false, w);
    m.quantize_lm_head = json_bool(j, "quantize_lm_head", false, w);
  }
  if (j.contains("gptq")) {
    const auto& g2 = j["gptq"];
    const std::string gw = w + ".gptq";
    if (!g2.is_object()) fail("{} is not an object", gw);
    m.gptq = true;
    m.gptq_opts.file = json_string(g2, "file", "", gw);
    m.gptq_opts.sha256 = json_string(g2, "sha256", "", gw);
    m.gptq_opts.num = int(json_int(g2, "samples", 0, gw, 0, INT32_MAX));
    m.gptq_opts.seqlen = int(json_int(g2, "seqlen", 0, gw, 0, INT32_MAX));
    m.gptq_opts.damp = json_number(g2, "damp", 0.01, gw);
    m.gptq_opts.block = int(json_int(g2, "block", 128, gw, 1, 1 << 20));
    m.gptq_opts.act_order = json_bool(g2, "act_order", false, w);
  }
  if (j.contains("layer_precision")) {
    const auto& a = j["layer_precision"];
    if (!a.is_array()) fail("{}: field 'layer_precision' is not a list", w);
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_string()) fail("{}: layer_precision[{}] is not a string", w, i);
      m.layers.push_back(LayerPrecision::parse(a[i].get<std::string>(), fmt::format("{}: layer_precision[{}]", w, i)));
    }
  }
  if (j.contains("scale_overrides")) {
    const auto& a = j["scale_overrides"];
    if (!a.is_array()) fail("{}: field 'scale_overrides' is not a list", w);
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_string()) fail("{}: scale_overrides[{}] is not a string", w, i);
      m.scale_overrides.push_back(a[i].get<std::string>());
    }
  }
  if (j.contains("edits")) {
    if (!j["edits"].is_array()) fail("{}: field 'edits' is not a list", w);
    m.edits = j["edits"];
  }
  if (j.contains("not_applied")) {
    const auto& na = j["not_applied"];
    if (!na.is_object()) fail("{}: field 'not_applied' is not an object", w);
    for (const auto& [k, v] : na.items()) {
      if (!v.is_string()) fail("{}: not_applied.{} is not a string", w, k);
      m.not_applied[k] = v.get<std::string>();
    }
  }
  if (j.contains("save_id")) m.save_id = json_string(j, "save_id", "", w);
  return m;
}

}  // namespace mambaq
