// Scoring hidden states with the LM head (internal to src/eval).
#pragma once
#include <cstdint>
#include <vector>

#include "mambaq/model.h"

namespace mambaq {

// Log-softmax of the target over the model's whole (padded) output row, and whether the target is
// its argmax (the first maximum, as torch/numpy argmax).
struct RowScore {
  double logprob;
  bool greedy;
};

// rows[i]: a hidden state {d_model}; targets[i]: the token it predicts. Fails on a target outside
// the vocabulary or a non-finite log-likelihood (never reported as a result).
void score_rows(const Model& m, const std::vector<const float*>& rows, const std::vector<int32_t>& targets,
                std::vector<RowScore>& out);

}  // namespace mambaq
