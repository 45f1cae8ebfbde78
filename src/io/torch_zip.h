#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mambaq/tensor.h"

namespace mambaq {
// Read a PyTorch zip checkpoint (torch.save since 1.6): <root>/data.pkl plus one
// <root>/data/<key> entry per storage; any root folder name (archive/, pytorch_model/, ...).
// The legacy (pre-zip) format is refused with a message saying how to convert it.
void load_torch_zip(const std::string& path, TensorStore& store);

// The state_dict in data.pkl: every tensor record checked against its storage (dtype, offset,
// sizes and strides in overflow-checked arithmetic) and materialised into `store`;
// read_storage(key) gives the bytes of data/<key>. `path` and `pkl_name` name them in errors.
void torch_state_dict(const uint8_t* pkl, size_t pkl_size, const std::string& path, const std::string& pkl_name,
                      const std::function<std::shared_ptr<std::vector<uint8_t>>(const std::string&)>& read_storage,
                      TensorStore& store);
}  // namespace mambaq
