#include "mambaq/checkpoint.h"

#include <filesystem>
#include <set>

#include "io/json_file.h"
#include "io/mmap_file.h"
#include "io/safetensors.h"
#include "io/torch_zip.h"
#include "mambaq/error.h"

namespace fs = std::filesystem;

namespace mambaq {

static const char* kCandidates[] = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                    "pytorch_model.bin.index.json"};

std::string find_weights_file(const std::string& dir) {
  if (fs::is_regular_file(dir)) return dir;
  for (const char* c : kCandidates) {
    fs::path p = fs::path(dir) / c;
    if (fs::exists(p)) return p.string();
  }
  return "";
}

static void load_one(const std::string& file, TensorStore& store) {
  const std::string ext = fs::path(file).extension().string();
  if (ext == ".safetensors")
    load_safetensors(file, store);
  else
    load_torch_zip(file, store);
}

TensorStore load_checkpoint(const std::string& dir) {
  if (!fs::exists(dir)) fail("{}: model folder not found", dir);
  const std::string file = find_weights_file(dir);
  if (file.empty())
    fail("{}: no weights file (looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
         "pytorch_model.bin.index.json)",
         dir);
  TensorStore store;
  store.source = file;
  if (file.size() > 11 && file.substr(file.size() - 11) == ".index.json") {
    const auto idx = read_json_file(file);
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail("{}: sharded index has no 'weight_map' object", file);
    std::set<std::string> shards;
    for (auto& [name, shard] : idx["weight_map"].items()) {
      if (!shard.is_string()) fail("{}: weight_map entry '{}' is not a file name", file, name);
      const std::string sh = shard.get<std::string>();
      // Shards are files of the model folder itself: a path elsewhere ("../x", "/etc/x",
      // "sub/x") would let a downloaded index read any file of the machine.
      if (sh.empty() || sh == "." || sh == ".." || sh.find('/') != std::string::npos || sh.find('\\') != std::string::npos ||
          sh.find('\0') != std::string::npos)
        fail("{}: weight_map entry '{}' names '{}', which is not a file in the model folder", file, name, sh);
      shards.insert(sh);
    }
    const fs::path base = fs::path(file).parent_path();
    for (const auto& s : shards) {
      const std::string shard_path = (base / s).string();
      if (!file_exists(shard_path)) fail("{}: shard '{}' listed in the index is missing", file, shard_path);
      load_one(shard_path, store);
    }
    for (auto& [name, shard] : idx["weight_map"].items())
      if (!store.has(name)) fail("{}: tensor '{}' is listed in the index but not found in shard '{}'", file, name,
                                 shard.get<std::string>());
    store.format = file.find(".safetensors") != std::string::npos ? "safetensors-sharded" : "torch-zip-sharded";
  } else {
    load_one(file, store);
    store.format = fs::path(file).extension() == ".safetensors" ? "safetensors" : "torch-zip";
  }
  return store;
}

}  // namespace mambaq
