// The recipes of this build, and round-to-nearest by spec.
#include "quant/recipe.h"

#include <algorithm>

#include <fmt/format.h>

#include "kernels/wquant.h"
#include "mambaq/error.h"

namespace mambaq {

const Recipe& quamba1_recipe();
const Recipe& quamba2_recipe();

QTensor quantize_rtn(const float* W, int rows, int cols, const WeightSpec& s) {
  if (!s.splits.empty()) return quantize_weight_splits(W, rows, cols, s.splits, s.bits);
  return quantize_weight(W, rows, cols, s.granularity, s.bits, s.group);
}

const Recipe& recipe(const std::string& name) {
  for (const Recipe* r : {&quamba1_recipe(), &quamba2_recipe()})
    if (name == r->name()) return *r;
  fail_option("recipe", "recipe '{}' is not in this build (recipes: {})", name, fmt::join(recipe_names(), ", "));
}

std::vector<std::string> recipe_names() { return {"quamba1", "quamba2"}; }

std::vector<InertSetting> inert_settings(const QuantMeta& m, const std::vector<std::string>& given) {
  const auto has = [&](const char* f) { return std::find(given.begin(), given.end(), f) != given.end(); };
  const bool q2 = m.recipe == "quamba2", calibrates = m.any_a8();
  bool w4 = m.w_bits == 4;
  for (const auto& l : m.layers) w4 |= l.w_bits == 4;
  const std::string float_acts = fmt::format("W{}A16 keeps every activation in float: no activation is calibrated", m.w_bits);
  std::vector<InertSetting> out;
  for (const auto& f : given) {
    std::string why;
    if (f == "percentile-alpha" || f == "percentile-mode") {
      if (!calibrates)
        why = float_acts;
      else if (q2 && m.group_heads && !m.grouped_percentile)
        why = "with --group-heads every Quamba2 observer is min-max, as in the reference; add --grouped-percentile "
              "to calibrate x and the SSM state with the percentile per head/dim group";
    } else if (f == "calib-num" || f == "calib-seqlen") {
      if (!calibrates) why = float_acts;
    } else if (f == "calib-data") {
      if (!calibrates && !(m.gptq && !has("gptq-data"))) why = float_acts;
    } else if (f == "weight-granularity") {
      if (q2) why = "quamba2 sets the weights' scales itself (4-bit: groups of --group-size; 8-bit: per tensor)";
    } else if (f == "group-size") {
      if (!w4) why = "only 4-bit weights have groups (--w_bits 4, or a W4 layer in --layer-config)";
    } else if (f == "gptq-data" || f == "gptq-num" || f == "gptq-seqlen" || f == "gptq-damp" || f == "gptq-act-order") {
      if (!m.gptq) why = "GPTQ is off (add --apply_gptq)";
    }
    if (!why.empty()) out.push_back({f, why});
  }
  return out;
}

}  // namespace mambaq
