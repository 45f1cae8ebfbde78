// The mixers: one forward per architecture (mamba1.cc, mamba2.cc), for every execution plan.
#pragma once
#include "model/exec.h"

namespace mambaq {

// x {T, d_model} (the normed input) -> out {T, d_model}
void mixer_mamba1(Exec& X, const ModelConfig& cfg, const LayerDev& L, float* x, float* out);
void mixer_mamba2(Exec& X, const ModelConfig& cfg, const LayerDev& L, float* x, float* out);

}  // namespace mambaq
