#pragma once
#include <string>

#include "mambaq/tensor.h"

namespace mambaq {

// Memory-map a .safetensors file and validate its header: every tensor's byte range lies
// inside the data section, its size equals dtype size x shape, and no two ranges overlap.
// Tensors are added to `store` (an existing name is an error).
void load_safetensors(const std::string& path, TensorStore& store);

// Write fp32/f16/bf16/int tensors to a .safetensors file (used by tests and converters).
struct NamedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace mambaq
