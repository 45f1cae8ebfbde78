// Execution plans: per layer and op kind, which precision runs. `--mode` and `--fp-ops` only
// build plans (make_plan); the forward pass reads nothing else to decide how to compute.
//   F32   float, the weights as float (a quantized model's dequantized codes)
//   Fake  float arithmetic, activations quantize-dequantized at each use (the simulation)
//   Int8  integer kernels on int8 codes, the weights in their stored S8 format
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "mambaq/session.h"
#include "model/points.h"

namespace mambaq {

enum class Prec : uint8_t { F32, Fake, Int8 };
const char* prec_name(Prec p);

struct ExecPlan {
  ExecMode mode = ExecMode::FP32;                  // what --mode said
  unsigned fp_ops = 0;                             // FpOps kept in float (fake mode)
  std::vector<std::array<Prec, kOpKinds>> layers;  // [layer][op kind]
  std::array<Prec, kOpKinds> head{};               // the LM head (layer -1)
  Prec at(int layer, OpKind k) const {
    return layer < 0 ? head[unsigned(k)] : layers[size_t(layer)][unsigned(k)];
  }
  // The out_proj input is rotated online when the weights hold W H^T, unless `hadamard` is kept
  // in float (then out_proj reads the unrotated input with unfused weights).
  bool rotate() const { return !(fp_ops & kFpHadamard); }
};

// A plan for a model of `n_layer` layers: every op kind at the mode's precision, the `fp_ops`
// kinds in F32. The head runs quantized only if the model quantized it (`quantized_head`).
ExecPlan make_plan(ExecMode mode, unsigned fp_ops, int n_layer, bool quantized_head);

}  // namespace mambaq
