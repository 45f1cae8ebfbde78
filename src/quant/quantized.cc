// Building a quantized model from an FP model and a calibration (Quamba W8A8).
#include "quant/quantized.h"

#include "io/json_file.h"

#include "mambaq/error.h"
#include "quant/hadamard.h"

namespace mambaq {

namespace {
QuantizedWeight qw(const Weight& w, Granularity g, int bits, bool fuse_hadamard = false) {
  const int rows = int(w.dim(0)), cols = int(w.size() / w.dim(0));
  if (!fuse_hadamard) return quantize_weight(w.data, rows, cols, g, bits);
  std::vector<float> v(w.data, w.data + w.size());
  hadamard_fuse_right(v.data(), rows, cols);  // W H^T: out_proj then reads H y
  return quantize_weight(v.data(), rows, cols, g, bits);
}

float scale_of(const Calibration& cal, int layer, const std::string& point) {
  const PointScale* p = cal.find(layer, point);
  if (!p) fail("quantization: no scale for layer {} point '{}'", layer, point);
  if (!(p->scale > 0)) fail("quantization: scale of layer {} point '{}' is {} (must be positive)", layer, point, p->scale);
  return p->scale;
}
}  // namespace

QLayer quantize_layer_weights(const ModelConfig& cfg, const LayerWeights& L, Granularity g, int w_bits) {
  QLayer q;
  q.in_proj = qw(L.in_proj, g, w_bits);
  q.conv = qw(L.conv_w, Granularity::Tensor, w_bits);  // the reference: one scale for the conv
  if (cfg.arch == Arch::Mamba1) {
    q.x_proj = qw(L.x_proj, g, w_bits);
    q.dt_proj = qw(L.dt_proj_w, g, w_bits);
  }
  q.out_proj = qw(L.out_proj, g, w_bits, /*fuse_hadamard=*/true);
  return q;
}

void set_layer_scales(const ModelConfig& cfg, const Calibration& cal, int l, QLayer& q) {
  q.s_in = scale_of(cal, l, "in_proj:input");
  q.s_out_in = scale_of(cal, l, "out_proj:input");
  q.s_state = scale_of(cal, l, "ssm_state_act:input");
  if (cfg.arch == Arch::Mamba1) {
    q.s_xz = scale_of(cal, l, "in_proj:output");
    q.s_u = scale_of(cal, l, "x_proj:input");
    q.s_dbc = scale_of(cal, l, "x_proj:output");
    q.s_delta = scale_of(cal, l, "dt_proj:output");
    q.conv_out_scale.assign(size_t(cfg.d_inner), q.s_u);
  } else {
    q.s_z = scale_of(cal, l, "z");
    q.s_xbc = scale_of(cal, l, "xBC");
    q.s_dt = scale_of(cal, l, "dt");
    q.s_x = scale_of(cal, l, "x_conv_out");
    q.s_B = scale_of(cal, l, "B_conv_out");
    q.s_C = scale_of(cal, l, "C_conv_out");
    const size_t di = size_t(cfg.d_inner), gn = size_t(cfg.ngroups) * cfg.d_state;
    q.conv_out_scale.assign(di, q.s_x);
    q.conv_out_scale.insert(q.conv_out_scale.end(), gn, q.s_B);
    q.conv_out_scale.insert(q.conv_out_scale.end(), gn, q.s_C);
  }
}

void dequantize_into(const QLayer& q, const ModelConfig& cfg, LayerWeights& L) {
  L.in_proj = Weight::from_vector(dequantize_weight(q.in_proj), {q.in_proj.rows, q.in_proj.cols});
  L.conv_w = Weight::from_vector(dequantize_weight(q.conv), {q.conv.rows, q.conv.cols});
  if (cfg.arch == Arch::Mamba1) {
    L.x_proj = Weight::from_vector(dequantize_weight(q.x_proj), {q.x_proj.rows, q.x_proj.cols});
    L.dt_proj_w = Weight::from_vector(dequantize_weight(q.dt_proj), {q.dt_proj.rows, q.dt_proj.cols});
  }
  L.out_proj = Weight::from_vector(dequantize_weight(q.out_proj), {q.out_proj.rows, q.out_proj.cols});
}

void check_recipe(const std::string& recipe, int w_bits, int a_bits) {
  if (recipe != "quamba1") fail("--recipe: unknown recipe '{}' (this build has: quamba1)", recipe);
  if (w_bits != 8) fail("--w-bits {}: the quamba1 recipe quantizes weights to 8 bits", w_bits);
  if (a_bits != 8) fail("--a-bits {}: the quamba1 recipe quantizes activations to 8 bits", a_bits);
}

std::unique_ptr<Model> quantize_model(const Model& fp, const Calibration& cal, const QuantMeta& meta) {
  check_recipe(meta.recipe, meta.w_bits, meta.a_bits);
  if (fp.is_quantized()) fail("the model is already quantized");
  const auto& cfg = fp.config();
  if (cfg.arch == Arch::Mamba2 && cfg.ngroups != 1)
    fail("the quamba1 recipe quantizes Mamba2 without head grouping (ngroups 1); this model has ngroups {}",
         cfg.ngroups);
  auto q = std::make_shared<QuantizedModel>();
  q->meta = meta;
  q->cal = cal;
  auto m = std::make_unique<Model>(fp);
  for (int l = 0; l < cfg.n_layer; ++l) {
    QLayer ql = quantize_layer_weights(cfg, fp.weights().layers[size_t(l)], meta.granularity, meta.w_bits);
    set_layer_scales(cfg, cal, l, ql);
    q->layers.push_back(std::move(ql));
  }
  m->set_quantized(q);  // int8 mode; fp32/fake dequantize the projections on first use
  return m;
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
