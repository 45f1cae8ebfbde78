#include "io/pickle.h"

#include <cstring>
#include <unordered_map>

#include "mambaq/error.h"

namespace mambaq::pickle {
namespace {

class Machine {
 public:
  Machine(const uint8_t* d, size_t n, const std::string& w, Pickle& out)
      : start_(d), p_(d), end_(d + n), where_(w), out_(out) {}

  Value make(Kind k) {
    out_.arena.push_back(std::make_unique<Object>());
    out_.arena.back()->kind = k;
    return out_.arena.back().get();
  }

  Value run() {
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                       // PROTO
        case 0x95: bytes(8); break;                   // FRAME
        case '(': push(make(Kind::Mark)); break;      // MARK
        case '.': return pop();                       // STOP
        case 'N': push(make(Kind::None)); break;      // NONE
        case 0x88: push_bool(true); break;            // NEWTRUE
        case 0x89: push_bool(false); break;           // NEWFALSE
        case 'K': push_int(u8()); break;              // BININT1
        case 'M': push_int(uint16_t(le(2))); break;   // BININT2
        case 'J': push_int(int32_t(uint32_t(le(4)))); break;  // BININT
        case 0x8a: {                                  // LONG1
          const int n = u8();
          if (n > 8) fail("{}: pickle integer of {} bytes does not fit 64 bits", where_, n);
          const uint8_t* b = bytes(size_t(n));
          uint64_t u = 0;
          for (int i = n - 1; i >= 0; --i) u = (u << 8) | b[i];
          if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u -= uint64_t(1) << (8 * n);  // sign-extend
          push_int(int64_t(u));
          break;
        }
        case 'G': {                                   // BINFLOAT (big-endian double)
          const uint8_t* b = bytes(8);
          uint64_t u = 0;
          for (int i = 0; i < 8; ++i) u = (u << 8) | b[i];
          auto v = make(Kind::Float);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'X': push_str(Kind::Str, size_t(le(4))); break;     // BINUNICODE
        case 0x8c: push_str(Kind::Str, u8()); break;             // SHORT_BINUNICODE
        case 'B': push_str(Kind::Bytes, size_t(le(4))); break;   // BINBYTES
        case 'C': push_str(Kind::Bytes, u8()); break;            // SHORT_BINBYTES
        case ')': push(make(Kind::Tuple)); break;                // EMPTY_TUPLE
        case ']': push(make(Kind::List)); break;                 // EMPTY_LIST
        case '}': push(make(Kind::Dict)); break;                 // EMPTY_DICT
        case 't': {                                              // TUPLE
          auto v = make(Kind::Tuple);
          v->items = pop_to_mark();
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                       // TUPLE1..3
          auto v = make(Kind::Tuple);
          const int n = op - 0x84;
          v->items.resize(size_t(n));
          for (int i = n - 1; i >= 0; --i) v->items[size_t(i)] = pop();
          push(v);
          break;
        }
        case 'l': {                                              // LIST
          auto v = make(Kind::List);
          v->items = pop_to_mark();
          push(v);
          break;
        }
        case 'a': {                                              // APPEND
          Value x = pop();
          top(Kind::List, "APPEND")->items.push_back(x);
          break;
        }
        case 'e': {                                              // APPENDS
          auto xs = pop_to_mark();
          auto l = top(Kind::List, "APPENDS");
          l->items.insert(l->items.end(), xs.begin(), xs.end());
          break;
        }
        case 'd': {                                              // DICT
          auto xs = pop_to_mark();
          auto v = make(Kind::Dict);
          for (size_t i = 0; i + 1 < xs.size(); i += 2) v->dict.push_back({xs[i], xs[i + 1]});
          push(v);
          break;
        }
        case 's': {                                              // SETITEM
          Value val = pop(), key = pop();
          top(Kind::Dict, "SETITEM")->dict.push_back({key, val});
          break;
        }
        case 'u': {                                              // SETITEMS
          auto xs = pop_to_mark();
          auto d = top(Kind::Dict, "SETITEMS");
          for (size_t i = 0; i + 1 < xs.size(); i += 2) d->dict.push_back({xs[i], xs[i + 1]});
          break;
        }
        case 'c': {                                              // GLOBAL "module\nname\n"
          auto v = make(Kind::Global);
          const std::string mod = line();
          v->s = mod + "." + line();
          push(v);
          break;
        }
        case 0x93: {                                             // STACK_GLOBAL
          Value name = pop(), mod = pop();
          if (name->kind != Kind::Str || mod->kind != Kind::Str) fail("{}: corrupt pickle (STACK_GLOBAL on non-strings)", where_);
          auto v = make(Kind::Global);
          v->s = mod->s + "." + name->s;
          push(v);
          break;
        }
        case 'q': memo_[u8()] = peek(); break;                   // BINPUT
        case 'r': memo_[le(4)] = peek(); break;                  // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = peek(); break;          // MEMOIZE
        case 'h': push(memo_get(u8())); break;                   // BINGET
        case 'j': push(memo_get(le(4))); break;                  // LONG_BINGET
        case 'Q': push(persistent_load(pop())); break;           // BINPERSID
        case 'R': {                                              // REDUCE
          Value args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 0x81: {                                             // NEWOBJ
          Value args = pop(), cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 'b': pop(); break;  // BUILD: object state (e.g. OrderedDict._metadata) is not needed
        case '0': pop(); break;  // POP
        default:
          fail("{}: unsupported pickle opcode 0x{:02x} at byte {} (not a torch state_dict?)", where_, op,
               size_t(p_ - start_) - 1);
      }
    }
  }


 private:
  const uint8_t* start_;
  const uint8_t* p_;
  const uint8_t* end_;
  std::string where_;
  Pickle& out_;
  std::vector<Value> stack_;
  std::unordered_map<uint64_t, Value> memo_;

  uint8_t u8() {
    if (p_ >= end_) fail("{}: truncated pickle stream", where_);
    return *p_++;
  }
  const uint8_t* bytes(size_t n) {
    if (size_t(end_ - p_) < n) fail("{}: truncated pickle stream", where_);
    const uint8_t* b = p_;
    p_ += n;
    return b;
  }
  uint64_t le(int n) {
    const uint8_t* b = bytes(size_t(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string line() {
    std::string s;
    for (uint8_t c = u8(); c != '\n'; c = u8()) s.push_back(char(c));
    return s;
  }
  void push(Value v) { stack_.push_back(std::move(v)); }
  void push_bool(bool b) {
    auto v = make(Kind::Bool);
    v->i = b;
    push(v);
  }
  void push_int(int64_t i) {
    auto v = make(Kind::Int);
    v->i = i;
    push(v);
  }
  void push_str(Kind k, size_t n) {
    auto v = make(k);
    const uint8_t* b = bytes(n);
    v->s.assign(reinterpret_cast<const char*>(b), n);
    push(v);
  }
  Value pop() {
    if (stack_.empty()) fail("{}: corrupt pickle (stack underflow)", where_);
    Value v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value peek() {
    if (stack_.empty()) fail("{}: corrupt pickle (empty stack)", where_);
    return stack_.back();
  }
  Value top(Kind k, const char* op) {
    Value v = peek();
    if (v->kind != k) fail("{}: corrupt pickle ({} on the wrong kind of object)", where_, op);
    return v;
  }
  Value memo_get(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("{}: corrupt pickle (memo key {} unset)", where_, k);
    return it->second;
  }
  std::vector<Value> pop_to_mark() {
    std::vector<Value> xs;
    while (true) {
      Value v = pop();
      if (v->kind == Kind::Mark) break;
      xs.push_back(v);
    }
    return {xs.rbegin(), xs.rend()};
  }
  static std::vector<int64_t> ints(const Value& t, const std::string& where, const char* what) {
    std::vector<int64_t> r;
    if (t->kind != Kind::Tuple) fail("{}: corrupt tensor record ({} is not a tuple)", where, what);
    for (auto& x : t->items) {
      if (x->kind != Kind::Int) fail("{}: corrupt tensor record ({} holds a non-integer)", where, what);
      r.push_back(x->i);
    }
    return r;
  }
  Value persistent_load(const Value& pid) {
    // ('storage', <class torch.HalfStorage>, key, location, numel)
    if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items[0]->s != "storage")
      fail("{}: unsupported persistent id (not a torch storage)", where_);
    if (pid->items[1]->kind != Kind::Global || pid->items[2]->kind != Kind::Str || pid->items[4]->kind != Kind::Int)
      fail("{}: corrupt storage record (expected a storage class, a key and an element count)", where_);
    auto v = make(Kind::Storage);
    const std::string& cls = pid->items[1]->s;
    v->s = cls.substr(cls.rfind('.') + 1);
    v->key = pid->items[2]->s;
    // The key names a member data/<key> of the archive: torch writes decimal numbers. Anything
    // else (a NUL, a '/', "..") could make the lookup read another member.
    if (v->key.empty() || v->key.size() > 64 ||
        v->key.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-") != std::string::npos)
      fail("{}: corrupt storage record: key '{}' is not a storage file name", where_, printable(v->key));
    v->i = pid->items[4]->i;
    return v;
  }
  static std::string printable(const std::string& s) {
    std::string o;
    for (unsigned char c : s.substr(0, 64)) o += (c >= 0x20 && c < 0x7f) ? std::string(1, char(c)) : fmt::format("\\x{:02x}", c);
    return o;
  }
  Value reduce(const Value& fn, const Value& args) {
    if (fn->kind != Kind::Global) fail("{}: corrupt pickle (REDUCE on a non-callable)", where_);
    const std::string& g = fn->s;
    if (g == "collections.OrderedDict" || g == "builtins.dict") return make(Kind::Dict);
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      if (args->kind != Kind::Tuple || args->items.size() < 4 || args->items[0]->kind != Kind::Storage ||
          args->items[1]->kind != Kind::Int)
        fail("{}: corrupt tensor record in {}", where_, g);
      auto t = make(Kind::Tensor);
      t->items = {args->items[0]};
      t->offset = args->items[1]->i;
      t->shape = ints(args->items[2], where_, "size");
      t->stride = ints(args->items[3], where_, "stride");
      return t;
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      if (args->kind != Kind::Tuple || args->items.empty() || args->items[0]->kind != Kind::Tensor)
        fail("{}: corrupt parameter record", where_);
      return args->items[0];
    }
    fail("{}: unsupported pickle global '{}' (mambaq reads plain state_dicts of tensors)", where_, g);
  }
};

}  // namespace

Pickle load(const uint8_t* data, size_t size, const std::string& where) {
  if (size > kMaxPickle) fail("{}: {} bytes is not a state_dict pickle (those are kilobytes)", where, size);
  Pickle p;
  Machine m(data, size, where, p);
  p.root = m.run();
  return p;
}

}  // namespace mambaq::pickle
