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

nlohmann::json QuantMeta::to_json() const {
  return {{"recipe", recipe},
          {"w_bits", w_bits},
          {"a_bits", a_bits},
          {"weight_granularity", granularity == Granularity::Tensor ? "tensor" : "channel"},
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
  if (g != "tensor" && g != "channel") fail("{}.weight_granularity '{}' is not tensor or channel", w, g);
  m.granularity = g == "tensor" ? Granularity::Tensor : Granularity::Channel;
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
  if (m.recipe != "quamba1") fail("{}: quantization.recipe '{}' is not supported (this build has: quamba1)", src, m.recipe);
  if (m.w_bits != 8 || m.a_bits != 8)
    fail("{}: quantization W{}A{} is not supported by the quamba1 recipe (W8A8)", src, m.w_bits, m.a_bits);
  return m;
}

}  // namespace mambaq
