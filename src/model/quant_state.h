// What describes a quantized model besides its weights: how it was made (QuantMeta, saved as
// config.json's "quantization" section) and its activation scales, one table keyed by
// (layer, point). Data only: the procedures that produce them live in quant/.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambaq/tensor.h"

namespace mambaq {

enum class PercentileMode { Ema, Exact };

// One activation scale. Scalar for the Quamba recipes so far; `shape`/`values` hold a shaped
// scale (e.g. Mamba2 head groups {ngroups, head groups, dim groups}) when a recipe makes one.
struct PointScale {
  int layer;             // -1 for the head's input (lm_head:input)
  std::string point;     // a ScalePoint name (model/points.h), e.g. "x_proj:input"
  std::string observer;  // "minmax", "percentile" (or "unknown" for folders that did not record it)
  float amax;            // clip value
  float scale;           // amax / qmax
  std::vector<int64_t> shape = {};  // empty: a scalar scale
  std::vector<float> values = {};
};

struct ScaleTable {
  std::vector<PointScale> points;
  const PointScale* find(int layer, const std::string& point) const;
  PointScale* find(int layer, const std::string& point);
};

// GPTQ's settings and data (quant/gptq.h), when the recipe ran it.
struct GptqMeta {
  std::string file, sha256;
  int num = 128, seqlen = 1024;
  double damp = 0.01;
  int block = 128;
  bool act_order = false;
};

// One layer's precision (--layer-config): W4A8, W4A16, W8A8, or FP16 (kept in float).
struct LayerPrecision {
  int w_bits = 8, a_bits = 8;  // 32/32: float
  bool fp() const { return w_bits >= 16; }
  std::string name() const;
  static LayerPrecision parse(const std::string& s, const std::string& where);  // errors name `where`
};

// What `mambaq quantize` did; saved as config.json's "quantization" section.
struct QuantMeta {
  std::string recipe = "quamba1";
  std::string preset;  // quamba2: w8a8, w4a8, w4a16 (informational)
  int w_bits = 8, a_bits = 8;
  Granularity granularity = Granularity::Tensor;
  int group_size = 128;         // 4-bit weights: input columns per scale
  bool rotate_residual = false; // quamba2: Hadamard on the residual stream, folded into the weights
  bool group_heads = false;     // quamba2: head reordering and grouped scales (Mamba2)
  bool grouped_percentile = false;  // with group_heads: x and the state by a percentile per block
  bool quantize_embedding = false, quantize_lm_head = false;
  bool gptq = false;
  GptqMeta gptq_opts;
  std::vector<LayerPrecision> layers;  // per layer (--layer-config); empty: every layer w_bits/a_bits
  LayerPrecision layer(int l) const {
    return layers.empty() || l < 0 ? LayerPrecision{w_bits, a_bits} : layers.at(size_t(l));
  }
  // Some layer (or the head) quantizes activations: calibration is needed.
  bool any_a8() const;
  // The LM head runs on int8 codes of its input (its input scale is then required).
  bool head_int8() const { return quantize_lm_head && a_bits == 8; }
  double alpha = 0.9995;
  PercentileMode pmode = PercentileMode::Ema;
  std::string calib_file, calib_sha256;
  size_t calib_samples = 0, calib_available = 0;
  int calib_seqlen = 512;
  std::string version;       // mambaq version and git describe
  std::string source_model;  // the FP model folder it was made from
  // --scale-override rules applied at calibration (quant/scale_rules.h), as written
  std::vector<std::string> scale_overrides;
  // settings given to quantize that acted on nothing (quant/recipe.h inert_settings): flag -> why
  std::map<std::string, std::string> not_applied;
  // `scales set` edits of the saved folder, oldest first: {rule, point, layers, old, new, note, time}
  nlohmann::json edits = nlohmann::json::array();
  // A random id written by every save and in-place edit into both config.json and the weights'
  // safetensors metadata (`mambaq_save_id`): a folder whose two files disagree was left mixed by an
  // interrupted save and is refused. Empty in folders saved before the id existed.
  std::string save_id;
  nlohmann::json to_json() const;
  // One line for tables: "quamba2 W4A8 (preset w4a8): 4-bit weights in groups of 128, GPTQ, ..."
  std::string summary() const;
  std::string layers_str() const;  // "0 W4A8, 1 W4A16, ..." ("" without a per-layer list)
  // Errors name `source` (the config file) and the field.
  static QuantMeta from_json(const nlohmann::json& j, const std::string& source);
};

// One layer of a Mamba2 model whose heads Quamba2 grouped (quant/head_groups.h): within SSD
// group g, head group k holds heads [head_end[g][k-1], head_end[g][k]) (counted within the SSD
// group), and in each of its heads dim group j holds channels [dim_end[g][k][j-1], dim_end[g][k][j]).
// Saved as conv1d.x_head_group_range {G, nhg} and conv1d.x_dim_group_range {G, nhg, ndg} (int32).
struct HeadGroups {
  int G = 0, nhg = 0, ndg = 0;
  std::vector<int32_t> head_end;  // {G, nhg}
  std::vector<int32_t> dim_end;   // {G, nhg, ndg}
  // The permutation that was applied (saved as conv1d.x_channel_order / x_head_order): new
  // channel -> FP channel {d_inner}, new head -> FP head {nheads}. With it the FP model can be
  // brought into the quantized model's basis (compare, --fp-ops).
  std::vector<int32_t> channel, head;
  bool empty() const { return G == 0; }
  int head_group(int g, int h) const {  // h counted within the SSD group
    int k = 0;
    while (k + 1 < nhg && h >= head_end[size_t(g * nhg + k)]) ++k;
    return k;
  }
  int dim_group(int g, int k, int p) const {
    int j = 0;
    while (j + 1 < ndg && p >= dim_end[size_t((g * nhg + k) * ndg + j)]) ++j;
    return j;
  }
};

struct QuantState {
  QuantMeta meta;
  ScaleTable scales;
  std::vector<HeadGroups> groups;  // per layer when the heads are grouped (else empty)
};

}  // namespace mambaq
