// The recipes of this build, and round-to-nearest by spec.
#include "quant/recipe.h"

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
  fail_option("recipe", "recipe '{}' is not in this build (recipes: quamba1, quamba2)", name);
}

std::vector<std::string> recipe_names() { return {"quamba1", "quamba2"}; }

}  // namespace mambaq
