#pragma once
#include <string>

#include "mambaq/tensor.h"

namespace mambaq {

// Load every tensor of a model folder: model.safetensors, a sharded
// model.safetensors.index.json, pytorch_model.bin (torch zip) or its sharded index.
// Also accepts a path straight to one of those files.
TensorStore load_checkpoint(const std::string& model_dir);

// The weights file load_checkpoint would read ("" if none), for messages and `info`.
std::string find_weights_file(const std::string& model_dir);

}  // namespace mambaq
