// Quantization recipes: what `quantize --recipe NAME` does to an FP model. A recipe validates
// its options against the config, chooses the observer of each quantization point, transforms
// and quantizes the weights of each layer, and names the plan its models run by default. quamba1
// is one (quant/quamba1.cc); a new research recipe is one new file registered in recipe.cc.
#pragma once
#include <string>
#include <vector>

#include "mambaq/model.h"
#include "model/points.h"
#include "model/quant_state.h"

namespace mambaq {

class Recipe {
 public:
  virtual ~Recipe() = default;
  virtual const char* name() const = 0;
  // Errors name the option (OptionError: "w_bits", "a_bits", ...) or the config field.
  virtual void validate(const ModelConfig& cfg, const QuantMeta& opt) const = 0;
  // The observer calibrating a point: percentile (alpha) or min-max.
  virtual bool percentile(const ScalePoint& p) const = 0;
  // One layer's weights: `out` starts as a copy of `fp` (sharing buffers); the recipe replaces
  // what it transforms or quantizes.
  virtual void quantize_layer(const ModelConfig& cfg, const QuantMeta& opt, const LayerWeights& fp,
                              LayerWeights& out) const = 0;
  virtual ExecMode default_mode() const { return ExecMode::Int8; }
};

// The recipe called `name` (OptionError "recipe" if this build has none).
const Recipe& recipe(const std::string& name);
std::vector<std::string> recipe_names();

}  // namespace mambaq
