// A pickle subset: exactly what torch.save emits for a state_dict (protocols 2-4).
// Written by hand because no packaged C++ library unpickles torch checkpoints; it
// interprets only data opcodes and a whitelist of globals, so it never executes code.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mambaq::pickle {

struct Object;
// Objects live in the Pickle's arena and point at each other with plain pointers: no recursive
// destruction (a hostile stream can nest lists a million deep) and no leaks through cycles
// (the memo lets a list contain itself).
using Value = Object*;

enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Mark };

struct Object {
  Kind kind = Kind::None;
  int64_t i = 0;
  double f = 0;
  std::string s;                              // Str, Bytes, Global ("module.name"), Storage (dtype name)
  std::vector<Value> items;                   // Tuple, List
  std::vector<std::pair<Value, Value>> dict;  // Dict (insertion order)
  // Storage: s = storage type (e.g. "HalfStorage"), key = file name in data/, i = numel
  std::string key;
  // Tensor: items[0] = storage, offset (elements), shape and stride
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;
};

struct Pickle {
  std::vector<std::unique_ptr<Object>> arena;
  Value root = nullptr;
};

// Parse `data` (the bytes of data.pkl); `where` names the file for errors. Streams larger than
// kMaxPickle are refused: a state_dict's pickle holds names and shapes only (kilobytes).
constexpr size_t kMaxPickle = size_t(256) << 20;
Pickle load(const uint8_t* data, size_t size, const std::string& where);

}  // namespace mambaq::pickle
