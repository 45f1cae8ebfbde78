#include "mambaq/config.h"

#include <filesystem>

#include "io/json_file.h"
#include "mambaq/error.h"

namespace mambaq {

const char* arch_name(Arch a) { return a == Arch::Mamba1 ? "mamba" : "mamba2"; }

namespace {

template <typename T>
T get(const nlohmann::json& j, const char* key, T def, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return def;
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: field '{}' has the wrong type (got {})", src, key, j[key].dump());
  }
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
  } else {
    positive(c.dt_rank, "dt_rank", src);
  }
}

ModelConfig parse_state_spaces(const nlohmann::json& j, const std::string& src) {
  ModelConfig c;
  c.layout = "state-spaces";
  c.d_model = get<int>(j, "d_model", 2560, src);
  c.n_layer = get<int>(j, "n_layer", 64, src);
  c.vocab_size = get<int>(j, "vocab_size", 50277, src);
  const int pad = get<int>(j, "pad_vocab_size_multiple", 8, src);
  positive(pad, "pad_vocab_size_multiple", src);
  c.padded_vocab = (c.vocab_size + pad - 1) / pad * pad;
  c.rms_norm = get<bool>(j, "rms_norm", true, src);
  c.residual_in_fp32 = get<bool>(j, "residual_in_fp32", true, src);
  c.tie_embeddings = get<bool>(j, "tie_embeddings", true, src);
  if (get<int>(j, "d_intermediate", 0, src) != 0)
    fail("{}: field 'd_intermediate' is non-zero: MLP blocks between mixers are not supported", src);
  if (j.contains("attn_layer_idx") && j["attn_layer_idx"].is_array() && !j["attn_layer_idx"].empty())
    fail("{}: field 'attn_layer_idx' is non-empty: hybrid attention models are not supported", src);
  nlohmann::json ssm = j.contains("ssm_cfg") && j["ssm_cfg"].is_object() ? j["ssm_cfg"] : nlohmann::json::object();
  const std::string layer = get<std::string>(ssm, "layer", "Mamba1", src);
  if (layer == "Mamba1") {
    c.arch = Arch::Mamba1;
    c.d_state = get<int>(ssm, "d_state", 16, src);
  } else if (layer == "Mamba2") {
    c.arch = Arch::Mamba2;
    c.d_state = get<int>(ssm, "d_state", 128, src);
    c.headdim = get<int>(ssm, "headdim", 64, src);
    c.ngroups = get<int>(ssm, "ngroups", 1, src);
    c.chunk_size = get<int>(ssm, "chunk_size", 256, src);
    c.norm_before_gate = get<bool>(ssm, "norm_before_gate", false, src);
    if (!get<bool>(ssm, "rmsnorm", true, src)) fail("{}: ssm_cfg.rmsnorm = false is not supported", src);
    if (get<int>(ssm, "d_ssm", 0, src) != 0) fail("{}: ssm_cfg.d_ssm (partial SSM width) is not supported", src);
  } else {
    fail("{}: unknown architecture: ssm_cfg.layer = '{}' (expected Mamba1 or Mamba2)", src, layer);
  }
  c.d_conv = get<int>(ssm, "d_conv", 4, src);
  c.expand = get<int>(ssm, "expand", 2, src);
  c.conv_bias = get<bool>(ssm, "conv_bias", true, src);
  c.proj_bias = get<bool>(ssm, "bias", false, src);
  if (c.arch == Arch::Mamba1) {
    nlohmann::json r = ssm.contains("dt_rank") ? ssm["dt_rank"] : nlohmann::json("auto");
    c.dt_rank = r.is_string() ? (c.d_model + 15) / 16 : r.get<int>();
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
  c.d_model = get<int>(j, "hidden_size", m1 ? 768 : 4096, src);
  c.n_layer = get<int>(j, "num_hidden_layers", m1 ? 32 : 64, src);
  c.vocab_size = get<int>(j, "vocab_size", m1 ? 50280 : 32768, src);
  c.padded_vocab = c.vocab_size;
  c.d_state = get<int>(j, "state_size", m1 ? 16 : 128, src);
  c.d_conv = get<int>(j, "conv_kernel", 4, src);
  c.expand = get<int>(j, "expand", 2, src);
  c.conv_bias = get<bool>(j, "use_conv_bias", true, src);
  c.proj_bias = get<bool>(j, "use_bias", false, src);
  c.norm_eps = get<float>(j, "layer_norm_epsilon", m1 ? 1e-5f : 1e-5f, src);
  c.residual_in_fp32 = get<bool>(j, "residual_in_fp32", true, src);
  c.tie_embeddings = get<bool>(j, "tie_word_embeddings", m1, src);
  if (m1) {
    nlohmann::json r = j.contains("time_step_rank") ? j["time_step_rank"] : nlohmann::json("auto");
    c.dt_rank = r.is_string() ? (c.d_model + 15) / 16 : r.get<int>();
  } else {
    c.headdim = get<int>(j, "head_dim", 64, src);
    c.nheads = get<int>(j, "num_heads", 0, src);
    c.ngroups = get<int>(j, "n_groups", 8, src);
    c.chunk_size = get<int>(j, "chunk_size", 256, src);
    // transformers' Mamba2 always gates before normalising, whatever norm_before_gate says;
    // we follow the code that produced the published numbers.
    c.norm_before_gate = false;
    if (j.contains("intermediate_size") && j["intermediate_size"].is_number_integer() &&
        j["intermediate_size"].get<int>() != c.expand * c.d_model)
      fail("{}: intermediate_size {} disagrees with expand*hidden_size = {}", src, j["intermediate_size"].get<int>(),
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
    const std::string t = get<std::string>(j, "model_type", "", src);
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
