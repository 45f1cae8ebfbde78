#pragma once
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace mambaq {

enum class Arch { Mamba1, Mamba2 };
const char* arch_name(Arch a);

// One description for both published layouts (state-spaces and Hugging Face).
struct ModelConfig {
  Arch arch = Arch::Mamba1;
  std::string layout;      // "state-spaces" or "hf"
  std::string source;      // config.json path, for messages
  int d_model = 0;
  int n_layer = 0;
  int vocab_size = 0;      // as configured (before padding)
  int padded_vocab = 0;    // rows of the embedding / lm_head
  int d_state = 16;
  int d_conv = 4;
  int expand = 2;
  int d_inner = 0;         // expand * d_model
  int dt_rank = 0;         // Mamba1
  int headdim = 64;        // Mamba2
  int nheads = 0;          // Mamba2: d_inner / headdim
  int ngroups = 1;         // Mamba2: groups of B/C
  int chunk_size = 256;    // Mamba2
  bool conv_bias = true;
  bool proj_bias = false;  // in_proj / out_proj bias
  bool norm_before_gate = false;  // Mamba2 gated RMSNorm order
  bool rms_norm = true;
  bool residual_in_fp32 = true;
  bool tie_embeddings = true;
  float norm_eps = 1e-5f;
  nlohmann::json raw;      // the file as read, kept for saving derived models

  int conv_dim() const { return arch == Arch::Mamba1 ? d_inner : d_inner + 2 * ngroups * d_state; }
  // floats of one layer's SSM state: Mamba1 {d_inner, d_state}; Mamba2 {nheads, d_state, headdim}
  size_t ssm_state_size() const {
    return arch == Arch::Mamba1 ? size_t(d_inner) * d_state : size_t(nheads) * d_state * headdim;
  }
  // in_proj output width: Mamba1 [x, z]; Mamba2 [z, xBC, dt]
  int in_proj_dim() const { return arch == Arch::Mamba1 ? 2 * d_inner : 2 * d_inner + 2 * ngroups * d_state + nheads; }
};

// Parse <dir>/config.json (or a path to a config file) in either layout, filling
// the published defaults for omitted fields; errors name the file and the field.
// The first architecture field in which two models differ, as "d_model 768 vs 1024" (a's value
// first), or "" when every dimension that shapes a tensor is equal.
std::string config_difference(const ModelConfig& a, const ModelConfig& b);
ModelConfig load_config(const std::string& dir_or_file);
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);

}  // namespace mambaq
