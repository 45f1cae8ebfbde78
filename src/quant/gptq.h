// GPTQ (Frantar et al., 2023): quantize a weight column by column, each column's rounding error
// spread over the columns not yet quantized through the inverse Hessian of the layer's inputs
// (H = 2 X^T X / n over the calibration tokens), so that ||W X - Q X|| stays small.
// Settings as the reference (quamba2.md §8): damping 0.01 x mean(diag H), the Cholesky factor of
// H^-1, lazy updates in blocks of 128 columns, group scales taken from the error-updated weights
// when a group starts (no act-order), symmetric codes. mambaq computes in double (the reference in
// fp32 / fp16), so a run is deterministic and independent of the thread count.
#pragma once
#include <span>
#include <vector>

#include "mambaq/model.h"
#include "quant/recipe.h"

namespace mambaq {

struct GptqOptions {
  double damp = 0.01;  // times the mean of diag(H)
  int block = 128;     // columns per lazy update
  bool act_order = false;  // columns in order of decreasing diag(H) (group scales then fixed up front)
};

// A Hessian accumulator for one weight's input {tokens, n}: H += 2 x x^T per token.
struct Hessian {
  int n = 0;
  int64_t tokens = 0;
  std::vector<double> h;  // {n, n}
  explicit Hessian(int dim = 0) : n(dim), h(size_t(dim) * size_t(dim), 0.0) {}
  void add(const float* x, int rows, int ld);  // rows {rows, n} (row stride ld)
  std::vector<double> matrix() const;          // 2 X^T X / tokens
};

// W {rows, cols} quantized by GPTQ with Hessian H {cols, cols} (its spec: bits, granularity /
// group / splits as round-to-nearest; per-tensor, per-channel and split scales are those of
// round-to-nearest on W, group scales are chosen during the pass).
QTensor gptq_quantize(const float* W, int rows, int cols, const std::vector<double>& H, const WeightSpec& spec,
                      const GptqOptions& opt);

// The whole-model pass: for each layer in order, the Hessians of the recipe's GPTQ weights from
// their inputs (the earlier layers already quantized, activations float), then the layer
// quantized by the recipe with GPTQ for those weights (round-to-nearest for the rest); then the
// LM head's Hessian from the final norm. `fp` is the (transformed) float model; `out` starts as a
// copy of its weights and receives the quantized layers and ends.
void gptq_model(const Model& fp, const Recipe& r, const QuantMeta& meta, const std::vector<std::vector<int32_t>>& samples,
                const GptqOptions& opt, bool progress, ModelWeights& out);

}  // namespace mambaq
