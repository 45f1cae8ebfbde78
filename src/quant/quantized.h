// Producing quantized models: FP model + calibration -> a Model whose projections are quantized
// by a recipe (quant/recipe.h), and saving it as a folder. The data types (QuantMeta, the scale
// table) and reading folders back are the model layer's (model/quant_state.h, model/weights.cc).
#pragma once
#include <memory>
#include <string>

#include "mambaq/model.h"
#include "model/quant_state.h"
#include "quant/calibrate.h"
#include "quant/recipe.h"

namespace mambaq {

// FP model + calibration -> quantized model (plan int8; fp32/fake run its dequantized weights).
// `meta` holds the options (recipe, bits, granularity, ...) and is recorded in the model.
std::unique_ptr<Model> quantize_model(const Model& fp, const Calibration& cal, const QuantMeta& meta);

// Save as a folder: config.json (+ "quantization"), model.safetensors (quantized weights, named
// scales; docs/format.md), tokenizer.json copied from `tokenizer_file` if given.
void save_quantized(const Model& m, const std::string& dir, const std::string& tokenizer_file);

}  // namespace mambaq
