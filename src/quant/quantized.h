// Producing quantized models: FP model + calibration -> a Model whose projections are quantized
// by a recipe (quant/recipe.h), and saving it as a folder. The data types (QuantMeta, the scale
// table) and reading folders back are the model layer's (model/quant_state.h, model/weights.cc).
#pragma once
#include <memory>
#include <string>

#include "mambaq/model.h"
#include "model/quant_state.h"
#include "quant/calibrate.h"
#include "quant/gptq.h"
#include "quant/recipe.h"

namespace mambaq {

// FP model + calibration -> quantized model (plan int8; fp32/fake run its dequantized weights).
// `meta` holds the options (recipe, bits, granularity, ...) and is recorded in the model. `fp` is
// the float model the calibration ran on (a recipe's transform already applied); the weights are
// quantized by round-to-nearest, or taken from `quantized` (GPTQ's pass) when given.
std::unique_ptr<Model> quantize_model(const Model& fp, const Calibration& cal, const QuantMeta& meta,
                                      const ModelWeights* quantized = nullptr,
                                      const std::vector<HeadGroups>* groups = nullptr);

// The FP model in a quantized model's basis: the recipe's transform (Quamba2's residual rotation)
// and the saved head permutation applied to its float weights, so that its layer outputs
// correspond to the quantized model's (compare) and --fp-ops can take its weights.
std::unique_ptr<Model> fp_in_quantized_basis(const Model& fp, const QuantState& q);
// Whether a quantized model's layers live in another basis than its FP model's.
inline bool changes_basis(const QuantState& q) { return q.meta.rotate_residual || q.meta.group_heads; }

// The whole pipeline: the recipe's transform, head grouping (meta.group_heads: statistics from
// the calibration samples, quant/head_groups.h), calibration (when some activation is quantized),
// GPTQ (meta.gptq), quantization.
struct QuantizeInputs {
  const CalibSamples* calib = nullptr;  // needed when meta.any_a8()
  CalibOptions calib_opts;
  std::vector<std::vector<int32_t>> gptq_samples;  // needed when meta.gptq
  GptqOptions gptq;
  bool progress = true;
};
struct QuantizeResult {
  std::unique_ptr<Model> model;
  Calibration calibration;  // empty when no activation is quantized
  double calibrate_s = 0, gptq_s = 0;
  std::vector<HeadGroups> groups;  // meta.group_heads: per layer
  nlohmann::json overrides = nlohmann::json::array();  // what meta.scale_overrides changed (scale_rules.h)
};
QuantizeResult quantize(const Model& fp, const QuantMeta& meta, const QuantizeInputs& in);

// Save as a folder: config.json (+ "quantization"), model.safetensors (quantized weights, named
// scales; docs/format.md), tokenizer.json copied from `tokenizer_file` if given.
void save_quantized(const Model& m, const std::string& dir, const std::string& tokenizer_file);

}  // namespace mambaq
