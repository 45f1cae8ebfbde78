// What describes a quantized model besides its weights: how it was made (QuantMeta, saved as
// config.json's "quantization" section) and its activation scales, one table keyed by
// (layer, point). Data only: the procedures that produce them live in quant/.
#pragma once
#include <cstdint>
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

// What `mambaq quantize` did; saved as config.json's "quantization" section.
struct QuantMeta {
  std::string recipe = "quamba1";
  int w_bits = 8, a_bits = 8;
  Granularity granularity = Granularity::Tensor;
  double alpha = 0.9995;
  PercentileMode pmode = PercentileMode::Ema;
  std::string calib_file, calib_sha256;
  size_t calib_samples = 0, calib_available = 0;
  int calib_seqlen = 512;
  std::string version;       // mambaq version and git describe
  std::string source_model;  // the FP model folder it was made from
  nlohmann::json to_json() const;
  // Errors name `source` (the config file) and the field.
  static QuantMeta from_json(const nlohmann::json& j, const std::string& source);
};

struct QuantState {
  QuantMeta meta;
  ScaleTable scales;
};

}  // namespace mambaq
