#pragma once
#include <map>
#include <string>
#include <vector>

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

// Rewrite the values of some F32 tensors of a .safetensors file, keeping every other byte: the
// header and all other tensors stay as they are. Each name must exist, be F32 and hold exactly
// values.size() elements (errors name the file and tensor); all are checked before any byte is
// written. Only the header is read and only those tensors' bytes are written, in place (the
// file may be many GiB). With `id_from` and `id_to` (equal lengths): the metadata value id_from of
// key id_key is replaced by id_to in the header, in the same bytes. Counts as one commit of
// atomic_commit_hook (the kill-between-files tests).
void patch_safetensors_f32(const std::string& path, const std::map<std::string, std::vector<float>>& values,
                           const std::string& id_key = "", const std::string& id_from = "", const std::string& id_to = "");

}  // namespace mambaq
