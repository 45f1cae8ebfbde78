#include "mambaq/config.h"

#include <filesystem>
#include <fmt/format.h>
#include <utility>
#include <set>

#include "io/json_file.h"
#include "mambaq/error.h"

namespace mambaq {

const char* arch_name(Arch a) { return a == Arch::Mamba1 ? "mamba" : "mamba2"; }

std::string config_difference(const ModelConfig& a, const ModelConfig& b) {
  if (a.arch != b.arch) return fmt::format("architecture {} vs {}", arch_name(a.arch), arch_name(b.arch));
  const std::pair<const char*, int ModelConfig::*> dims[] = {
      {"n_layer", &ModelConfig::n_layer},   {"d_model", &ModelConfig::d_model}, {"vocab (padded)", &ModelConfig::padded_vocab},
      {"d_inner", &ModelConfig::d_inner},   {"d_state", &ModelConfig::d_state}, {"d_conv", &ModelConfig::d_conv},
      {"dt_rank", &ModelConfig::dt_rank},   {"headdim", &ModelConfig::headdim}, {"nheads", &ModelConfig::nheads},
      {"ngroups", &ModelConfig::ngroups}};
  for (const auto& [name, f] : dims)
    if (a.*f != b.*f && (a.arch == Arch::Mamba2 || (std::string(name) != "headdim" && std::string(name) != "nheads" &&
                                                     std::string(name) != "ngroups")))
      return fmt::format("{} {} vs {}", name, a.*f, b.*f);
  const std::pair<const char*, bool ModelConfig::*> flags[] = {
      {"conv_bias", &ModelConfig::conv_bias}, {"proj_bias", &ModelConfig::proj_bias}, {"rms_norm", &ModelConfig::rms_norm},
      {"tie_embeddings", &ModelConfig::tie_embeddings}};
  for (const auto& [name, f] : flags)
    if (a.*f != b.*f) return fmt::format("{} {} vs {}", name, a.*f, b.*f);
  return "";
}

namespace {

// Integer fields: strict type (no fractions, booleans or strings) and a range that holds every
// published model with room to spare, so a corrupt value is refused instead of wrapping around
// or asking for terabytes.
int geti(const nlohmann::json& j, const char* key, int def, const std::string& src, int lo, int hi) {
  return int(json_int(j, key, def, src, lo, hi));
}
bool getb(const nlohmann::json& j, const char* key, bool def, const std::string& src) { return json_bool(j, key, def, src); }

// Fields that change the computation, and what mambaq does with them, are checked one by one
// below; these are the other fields the published layouts carry (initialisation, training,
// generation and bookkeeping settings), which do not change a forward pass.
const std::set<std::string> kStateSpacesInert = {"residual_in_fp32", "fused_add_norm", "attn_cfg"};
const std::set<std::string> kSsmInert = {"dt_min",  "dt_max",        "dt_init",          "dt_scale",    "dt_init_floor",
                                         "conv_init", "A_init_range", "use_fast_path",    "layer_idx",   "use_mem_eff_path",
                                         "process_group", "sequence_parallel", "device", "dtype"};

// dt_limit / time_step_limit: (0, inf) is "no clamp"; anything else clamps dt in the forward pass.
void check_dt_limit(const nlohmann::json& j, const char* key, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return;
  const auto& v = j[key];
  if (!v.is_array() || v.size() != 2) fail("{}: field '{}' must be a pair [min, max]", src, key);
  const double lo = json_as_number(v[0], src + ": field '" + key + "[0]'");
  // JSON has no infinity: a missing upper bound is written as null or a huge number.
  const bool no_hi = v[1].is_null() || (v[1].is_number() && v[1].get<double>() >= 1e30);
  if (lo != 0.0 || !no_hi)
    fail("{}: field '{}' = {} clamps dt; only the default (0, inf) is supported", src, key, v.dump());
}

int positive(int v, const char* key, const std::string& src) {
  if (v <= 0) fail("{}: field '{}' must be positive (got {})", src, key, v);
  return v;
}

void finish(ModelConfig& c, const std::string& src) {
  positive(c.d_model, "d_model", src);
  positive(c.n_layer, "n_layer", src);
  positive(c.vocab_size, "vocab_size", src);
  positive(c.d_state, "d_state", src);
  positive(c.d_conv, "d_conv", src);
  positive(c.expand, "expand", src);
  if (!(c.norm_eps > 0.f && c.norm_eps <= 1.f))
    fail("{}: field 'layer_norm_epsilon' must be a number in (0, 1] (got {})", src, c.norm_eps);
  if (int64_t(c.expand) * c.d_model > (1 << 20)) fail("{}: expand * d_model = {} is too large", src, int64_t(c.expand) * c.d_model);
  c.d_inner = c.expand * c.d_model;
  if (c.arch == Arch::Mamba2) {
    positive(c.headdim, "headdim", src);
    positive(c.ngroups, "ngroups", src);
    if (c.d_inner % c.headdim) fail("{}: d_inner {} is not a multiple of headdim {}", src, c.d_inner, c.headdim);
    const int nh = c.d_inner / c.headdim;
    if (c.nheads && c.nheads != nh)
      fail("{}: num_heads {} disagrees with expand*hidden_size/head_dim = {}", src, c.nheads, nh);
    c.nheads = nh;
    if (c.nheads % c.ngroups) fail("{}: nheads {} is not a multiple of ngroups {}", src, c.nheads, c.ngroups);
    positive(c.chunk_size, "chunk_size", src);
  } else {
    positive(c.dt_rank, "dt_rank", src);
  }
}

ModelConfig parse_state_spaces(const nlohmann::json& j, const std::string& src) {
  ModelConfig c;
  c.layout = "state-spaces";
  c.d_model = geti(j, "d_model", 2560, src, 1, 1 << 16);
  c.n_layer = geti(j, "n_layer", 64, src, 1, 1024);
  c.vocab_size = geti(j, "vocab_size", 50277, src, 1, 1 << 24);
  const int pad = geti(j, "pad_vocab_size_multiple", 8, src, 1, 1 << 16);
  c.padded_vocab = int((int64_t(c.vocab_size) + pad - 1) / pad * pad);
  c.rms_norm = getb(j, "rms_norm", true, src);  // false: LayerNorm (with bias) as in mamba_ssm
  c.residual_in_fp32 = getb(j, "residual_in_fp32", true, src);  // we keep the residual in fp32 anyway
  getb(j, "fused_add_norm", true, src);  // same numbers, fused or not
  c.tie_embeddings = getb(j, "tie_embeddings", true, src);
  if (geti(j, "d_intermediate", 0, src, 0, INT32_MAX) != 0)
    fail("{}: field 'd_intermediate' is non-zero: MLP blocks between mixers are not supported", src);
  if (j.contains("attn_layer_idx") && !j["attn_layer_idx"].is_null()) {
    if (!j["attn_layer_idx"].is_array()) fail("{}: field 'attn_layer_idx' must be a list", src);
    if (!j["attn_layer_idx"].empty())
      fail("{}: field 'attn_layer_idx' is non-empty: hybrid attention models are not supported", src);
  }
  if (j.contains("ssm_cfg") && !j["ssm_cfg"].is_null() && !j["ssm_cfg"].is_object())
    fail("{}: field 'ssm_cfg' must be an object", src);
  nlohmann::json ssm = j.contains("ssm_cfg") && j["ssm_cfg"].is_object() ? j["ssm_cfg"] : nlohmann::json::object();
  const std::string ssrc = src + ": ssm_cfg";
  const std::string layer = json_string(ssm, "layer", "Mamba1", ssrc);
  std::set<std::string> known = {"layer", "d_state", "d_conv", "expand", "conv_bias", "bias"};
  if (layer == "Mamba1") {
    c.arch = Arch::Mamba1;
    c.d_state = geti(ssm, "d_state", 16, ssrc, 1, 4096);
    known.insert("dt_rank");
  } else if (layer == "Mamba2") {
    c.arch = Arch::Mamba2;
    c.d_state = geti(ssm, "d_state", 128, ssrc, 1, 4096);
    c.headdim = geti(ssm, "headdim", 64, ssrc, 1, 1 << 16);
    c.ngroups = geti(ssm, "ngroups", 1, ssrc, 1, 1 << 16);
    c.chunk_size = geti(ssm, "chunk_size", 256, ssrc, 1, 1 << 20);
    c.norm_before_gate = getb(ssm, "norm_before_gate", false, ssrc);
    if (!getb(ssm, "rmsnorm", true, ssrc)) fail("{}: ssm_cfg.rmsnorm = false (no gated norm) is not supported", src);
    if (geti(ssm, "d_ssm", 0, ssrc, 0, INT32_MAX) != 0) fail("{}: ssm_cfg.d_ssm (partial SSM width) is not supported", src);
    if (getb(ssm, "D_has_hdim", false, ssrc)) fail("{}: ssm_cfg.D_has_hdim = true (D per channel) is not supported", src);
    check_dt_limit(ssm, "dt_limit", ssrc);
    known.insert({"headdim", "ngroups", "chunk_size", "norm_before_gate", "rmsnorm", "d_ssm", "D_has_hdim", "dt_limit"});
  } else {
    fail("{}: unknown architecture: ssm_cfg.layer = '{}' (expected Mamba1 or Mamba2)", src, layer);
  }
  for (auto& [k, v] : ssm.items())
    if (!known.count(k) && !kSsmInert.count(k))
      fail("{}: ssm_cfg field '{}' is not a {} setting mambaq knows; refusing rather than ignoring it", src, k, layer);
  c.d_conv = geti(ssm, "d_conv", 4, ssrc, 1, 8);  // the conv kernels hold up to 8 taps
  c.expand = geti(ssm, "expand", 2, ssrc, 1, 64);
  c.conv_bias = getb(ssm, "conv_bias", true, ssrc);
  c.proj_bias = getb(ssm, "bias", false, ssrc);
  if (c.arch == Arch::Mamba1) {
    const bool auto_rank = !ssm.contains("dt_rank") || (ssm["dt_rank"].is_string() && ssm["dt_rank"] == "auto");
    c.dt_rank = auto_rank ? (c.d_model + 15) / 16 : geti(ssm, "dt_rank", 0, ssrc, 1, 1 << 16);
  }
  c.norm_eps = 1e-5f;
  finish(c, src);
  return c;
}

ModelConfig parse_hf(const nlohmann::json& j, const std::string& src, const std::string& type) {
  ModelConfig c;
  c.layout = "hf";
  c.arch = type == "mamba" ? Arch::Mamba1 : Arch::Mamba2;
  const bool m1 = c.arch == Arch::Mamba1;
  c.d_model = geti(j, "hidden_size", m1 ? 768 : 4096, src, 1, 1 << 16);
  c.n_layer = geti(j, "num_hidden_layers", m1 ? 32 : 64, src, 1, 1024);
  c.vocab_size = geti(j, "vocab_size", m1 ? 50280 : 32768, src, 1, 1 << 24);
  c.padded_vocab = c.vocab_size;
  c.d_state = geti(j, "state_size", m1 ? 16 : 128, src, 1, 4096);
  c.d_conv = geti(j, "conv_kernel", 4, src, 1, 8);  // the conv kernels hold up to 8 taps
  c.expand = geti(j, "expand", 2, src, 1, 64);
  c.conv_bias = getb(j, "use_conv_bias", true, src);
  c.proj_bias = getb(j, "use_bias", false, src);
  c.norm_eps = float(json_number(j, "layer_norm_epsilon", 1e-5, src));
  c.residual_in_fp32 = getb(j, "residual_in_fp32", true, src);
  c.tie_embeddings = getb(j, "tie_word_embeddings", m1, src);
  const std::string act = json_string(j, "hidden_act", "silu", src);
  if (act != "silu") fail("{}: field 'hidden_act' = '{}': only silu is supported (as in every published Mamba)", src, act);
  if (m1) {
    const bool auto_rank = !j.contains("time_step_rank") || (j["time_step_rank"].is_string() && j["time_step_rank"] == "auto");
    c.dt_rank = auto_rank ? (c.d_model + 15) / 16 : geti(j, "time_step_rank", 0, src, 1, 1 << 16);
    if (j.contains("intermediate_size") && !j["intermediate_size"].is_null() &&
        geti(j, "intermediate_size", 0, src, 1, INT32_MAX) != c.expand * c.d_model)
      fail("{}: intermediate_size {} disagrees with expand*hidden_size = {}", src, j["intermediate_size"].dump(),
           c.expand * c.d_model);
  } else {
    c.headdim = geti(j, "head_dim", 64, src, 1, 1 << 16);
    c.nheads = geti(j, "num_heads", 0, src, 0, 1 << 20);
    c.ngroups = geti(j, "n_groups", 8, src, 1, 1 << 16);
    c.chunk_size = geti(j, "chunk_size", 256, src, 1, 1 << 20);
    // transformers' Mamba2 always gates before normalising, whatever norm_before_gate says, and
    // always uses its gated RMSNorm whatever rms_norm says; we follow the code that produced the
    // published numbers (the fields are still type-checked).
    getb(j, "norm_before_gate", false, src);
    getb(j, "rms_norm", true, src);
    c.norm_before_gate = false;
    check_dt_limit(j, "time_step_limit", src);
    if (j.contains("intermediate_size") && !j["intermediate_size"].is_null() &&
        geti(j, "intermediate_size", 0, src, 1, INT32_MAX) != c.expand * c.d_model)
      fail("{}: intermediate_size {} disagrees with expand*hidden_size = {}", src, j["intermediate_size"].dump(),
           c.expand * c.d_model);
  }
  finish(c, src);
  return c;
}

}  // namespace

ModelConfig parse_config(const nlohmann::json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: config is not a JSON object", src);
  ModelConfig c;
  if (j.contains("model_type")) {
    const std::string t = json_string(j, "model_type", "", src);
    if (t != "mamba" && t != "mamba2")
      fail("{}: unknown architecture: model_type '{}' (expected mamba or mamba2)", src, t);
    c = parse_hf(j, src, t);
  } else if (j.contains("d_model") || j.contains("ssm_cfg") || j.contains("n_layer")) {
    c = parse_state_spaces(j, src);
  } else {
    fail("{}: unknown architecture: neither a Hugging Face 'model_type' nor a state-spaces 'd_model'/'ssm_cfg'",
         src);
  }
  c.source = src;
  c.raw = j;
  return c;
}

ModelConfig load_config(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  std::string path = fs::is_directory(dir_or_file) ? (fs::path(dir_or_file) / "config.json").string() : dir_or_file;
  if (!fs::exists(dir_or_file)) fail("{}: model folder not found", dir_or_file);
  return parse_config(read_json_file(path), path);
}

}  // namespace mambaq
