// What torch.save writes for a state_dict, built by hand with every field under the caller's
// control: seeds for the fuzzers and the checkpoints tests corrupt on purpose. Integers that fit
// 32 bits are written as BININT (as torch does), larger ones as 8-byte LONG1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mambaq::fuzz {

struct PickleWriter {
  std::string b;
  void op(char c) { b.push_back(c); }
  void global(const std::string& mod, const std::string& name) { b += "c" + mod + "\n" + name + "\n"; }
  void str(const std::string& s) {
    b.push_back('X');
    for (int i = 0; i < 4; ++i) b.push_back(char((s.size() >> (8 * i)) & 0xff));
    b += s;
  }
  void integer(int64_t v) {
    const bool small = v >= INT32_MIN && v <= INT32_MAX;
    b += small ? "J" : "\x8a\x08";
    for (int i = 0; i < (small ? 4 : 8); ++i) b.push_back(char((uint64_t(v) >> (8 * i)) & 0xff));
  }
  void tuple(const std::vector<int64_t>& xs) {
    op('(');
    for (auto x : xs) integer(x);
    op('t');
  }
};

struct TorchTensorRecord {
  std::string name, storage_type, key;  // e.g. "w", "FloatStorage", "0" (the member data/<key>)
  int64_t storage_numel, offset;
  std::vector<int64_t> shape, stride;
};

// data.pkl of an OrderedDict of the given tensors (protocol 2).
inline std::string torch_state_pickle(const std::vector<TorchTensorRecord>& ts) {
  PickleWriter w;
  w.b = "\x80\x02";
  w.global("collections", "OrderedDict");
  w.b += ")R(";
  for (const auto& t : ts) {
    w.str(t.name);
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.b += "((";
    w.str("storage");
    w.global("torch", t.storage_type);
    w.str(t.key);
    w.str("cpu");
    w.integer(t.storage_numel);
    w.b += "tQ";
    w.integer(t.offset);
    w.tuple(t.shape);
    w.tuple(t.stride);
    w.op('\x89');
    w.global("collections", "OrderedDict");
    w.b += ")RtR";
  }
  w.b += "u.";
  return w.b;
}

}  // namespace mambaq::fuzz
