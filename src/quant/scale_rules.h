// Changing activation scales by rule (the user's note on where percentile scales are used): at
// calibration (`quantize --scale-override RULE`) or in a saved folder (`scales set`).
//
// A rule: POINT[@LAYERS]=*FACTOR (multiply the scale), POINT[@LAYERS]=VALUE (set it),
// POINT[@LAYERS]=+C or =-C (add C to the clip value the observer chose, the notes' `cur_max + 2025`:
// scale = (clip + C) / qmax), or POINT[@LAYERS]:alpha=A (calibration only: a percentile observer
// with alpha A at that point).
// POINT is a scale point of the architecture (`mambaq scales` lists them, e.g. x_proj:input);
// LAYERS is "all" (the default), N, N-M, or a comma list of those; layer -1 / "head" is the LM
// head's input.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambaq/config.h"
#include "model/quant_state.h"

namespace mambaq {

struct ScaleRule {
  enum Kind { Factor, Value, AddClip, Alpha };
  std::string text;        // as written
  std::string point;
  std::vector<int> layers;  // empty: every layer that has the point
  Kind kind = Factor;
  double x = 1;
};

// Errors name `flag` and the rule, and list the architecture's points for an unknown one.
ScaleRule parse_scale_rule(const std::string& text, const ModelConfig& cfg, const std::string& flag);
// "all", "3", "0-5", "0,3,7", "head"
std::vector<int> parse_layers(const std::string& s, int n_layer, const std::string& flag);

// Alpha rules as a per-(layer, point) percentile alpha for calibration.
std::map<std::pair<int, std::string>, double> rule_alphas(const std::vector<ScaleRule>& rules, const ModelConfig& cfg);

// Applies factor/value rules to the table (grouped scales: every block; amax follows the scale).
// Returns one record per rule: {"rule", "point", "layers", "factor"|"value", "old", "new"}; a rule
// that matches no scale of the table is an error naming `flag`.
nlohmann::json apply_scale_rules(ScaleTable& t, const std::vector<ScaleRule>& rules, const std::string& flag);

}  // namespace mambaq
