// Quantization recipes: what `quantize --recipe NAME` does to an FP model. A recipe validates
// its options against the config, may transform the float weights first (rotations folded into
// them: calibration and GPTQ then run on the transformed model), chooses the observer of each
// quantization point, and says how each weight of each layer is quantized; the pipeline
// (quant/quantized.h) runs calibration and GPTQ around it. quamba1 and quamba2 are recipes
// (quant/quamba1.cc, quant/quamba2.cc); a new research recipe is one file registered in recipe.cc.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "mambaq/model.h"
#include "model/points.h"
#include "model/quant_state.h"

namespace mambaq {

// How one weight is quantized: bits, scale granularity (group: `group` input columns per scale;
// 4 bits with groups are stored packed, S4), and for per-split scales the row boundaries.
struct WeightSpec {
  int bits = 8;
  Granularity granularity = Granularity::Tensor;
  int group = 128;
  std::vector<int> splits;  // {0, ..., rows}: rows of a split share one scale (stored per channel)
};

// Round-to-nearest (kernels/wquant.h) of W {rows, cols} by a spec.
QTensor quantize_rtn(const float* W, int rows, int cols, const WeightSpec& s);

// What quantizes a layer's weight: round-to-nearest, or GPTQ where the pipeline has the
// weight's Hessian. `what` is the weight's projection (kProjs: the LM head).
using WeightQuantizer = std::function<QTensor(Proj what, const float* W, int rows, int cols, const WeightSpec&)>;

class Recipe {
 public:
  virtual ~Recipe() = default;
  virtual const char* name() const = 0;
  // Errors name the option (OptionError: "w_bits", "a_bits", ...) or the config field.
  virtual void validate(const ModelConfig& cfg, const QuantMeta& opt) const = 0;
  // The observer calibrating a point: percentile (alpha) or min-max.
  virtual bool percentile(const ScalePoint& p) const = 0;
  // Float weights transformed in place before calibration (default: none). Quamba2 rotates the
  // residual stream and folds the norms into the projections.
  virtual void transform(const ModelConfig& cfg, const QuantMeta& opt, ModelWeights& w) const {}
  // The projections of layer `l` whose quantization GPTQ may replace (their inputs are tapped).
  virtual std::vector<Proj> gptq_projs(const ModelConfig& cfg, const QuantMeta& opt, int l) const { return {}; }
  // One layer's weights: `out` starts as a copy of `fp` (sharing buffers); the recipe replaces
  // what it transforms or quantizes, calling `wq` for each weight it quantizes.
  virtual void quantize_layer(const ModelConfig& cfg, const QuantMeta& opt, int l, const LayerWeights& fp,
                              LayerWeights& out, const WeightQuantizer& wq) const = 0;
  // The embedding and the LM head (default: kept). `out` starts as a copy of `fp`.
  virtual void quantize_ends(const ModelConfig& cfg, const QuantMeta& opt, const ModelWeights& fp, ModelWeights& out,
                             const WeightQuantizer& wq) const {}
};

// Quamba2's presets, as the reference's eval.sh commands (quamba2.md §1): w8a8 (embedding and
// LM head quantized, no GPTQ), w4a8 and w4a16 (+ GPTQ); Mamba2 with int8 activations also groups
// heads. Sets recipe, bits, granularity and those flags (OptionError "preset" for another name).
void apply_quamba2_preset(QuantMeta& m, const std::string& preset, const ModelConfig& cfg);

// A quantize setting that cannot act together with the rest of the recipe: it changes no scale
// and no weight (e.g. --percentile-alpha where every observer is min-max or no activation is
// calibrated). `flag`: its dash-form name as in `given`; `why`: one sentence naming what would act.
struct InertSetting {
  std::string flag, why;
};
// The settings among `given` (dash-form flag names the user set: "percentile-alpha", "calib-num",
// ...) that `m` (presets applied) leaves without effect, in the order of `given`.
std::vector<InertSetting> inert_settings(const QuantMeta& m, const std::vector<std::string>& given);

// The recipe called `name` (OptionError "recipe" if this build has none).
const Recipe& recipe(const std::string& name);
std::vector<std::string> recipe_names();

}  // namespace mambaq
