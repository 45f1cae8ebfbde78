#pragma once
#include <string>

#include "mambaq/tensor.h"

namespace mambaq {
// Read a PyTorch zip checkpoint (torch.save since 1.6): <root>/data.pkl plus one
// <root>/data/<key> entry per storage; any root folder name (archive/, pytorch_model/, ...).
// The legacy (pre-zip) format is refused with a message saying how to convert it.
void load_torch_zip(const std::string& path, TensorStore& store);
}  // namespace mambaq
