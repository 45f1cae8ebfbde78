// Byte-level BPE (GPT-2 / GPT-NeoX). Hand-written: Debian packages no C++ port of HF tokenizers.
// PCRE2 runs the ByteLevel pre-tokenizer regex and utf8proc does NFC.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <filesystem>
#include <mutex>
#include <queue>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "io/json_file.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/tokenizer.h"

namespace mambaq {

namespace {

// GPT-2's reversible byte -> printable code point map.
std::vector<uint32_t> bytes_to_unicode() {
  std::vector<uint32_t> m(256, 0);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[size_t(b)] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[size_t(b)] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[size_t(b)] = true;
  uint32_t extra = 0;
  for (int b = 0; b < 256; ++b) m[size_t(b)] = direct[size_t(b)] ? uint32_t(b) : 256 + extra++;
  return m;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s.push_back(char(cp));
  } else if (cp < 0x800) {
    s.push_back(char(0xC0 | (cp >> 6)));
    s.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(char(0xE0 | (cp >> 12)));
    s.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(char(0xF0 | (cp >> 18)));
    s.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(char(0x80 | (cp & 0x3F)));
  }
}

struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
  bool normalized;
};

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;  // byte-level string, or raw content for added tokens
  std::vector<bool> is_added;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a,b) -> (rank, merged id)
  int32_t byte_id[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  std::vector<AddedToken> raw_added, norm_added;  // matched before / after normalisation
  pcre2_code* re = nullptr;
  int32_t eos = -1;
  mutable std::mutex mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  ~Impl() {
    if (re) pcre2_code_free(re);
  }

  void bpe_word(const std::string& word, std::vector<int32_t>& out) const {
    {
      auto it = cache.find(word);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    // Symbols in a linked list, candidate merges in a min-heap by (rank, position): O(n log n)
    // per word, as in Hugging Face tokenizers (rescanning the word for the best pair after each
    // merge is quadratic, and one unbroken 1 MB "word" would take hours). A merge's result only
    // takes part in merges of higher rank, so this gives the same tokens as merging the
    // lowest-ranked pair everywhere, then the next.
    const size_t n = word.size();
    std::vector<int32_t> sym(n);
    std::vector<int> prev(n), next(n);
    for (size_t i = 0; i < n; ++i) {
      const unsigned char c = uint8_t(word[i]);
      if (byte_id[c] < 0) fail("text holds byte 0x{:02x}, which the tokenizer cannot encode (invalid UTF-8?)", c);
      sym[i] = byte_id[c];
      prev[i] = int(i) - 1;
      next[i] = i + 1 < n ? int(i) + 1 : -1;
    }
    struct Cand {
      int32_t rank;
      int pos;
      int32_t left, right;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    const auto consider = [&](int i) {
      if (i < 0 || next[size_t(i)] < 0) return;
      const int j = next[size_t(i)];
      auto it = merges.find((uint64_t(uint32_t(sym[size_t(i)])) << 32) | uint32_t(sym[size_t(j)]));
      if (it != merges.end()) heap.push({it->second.first, i, sym[size_t(i)], sym[size_t(j)]});
    };
    for (size_t i = 0; i + 1 < n; ++i) consider(int(i));
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const int i = c.pos, j = next[size_t(i)];
      if (sym[size_t(i)] != c.left || j < 0 || sym[size_t(j)] != c.right) continue;  // stale
      sym[size_t(i)] = merges.find((uint64_t(uint32_t(c.left)) << 32) | uint32_t(c.right))->second.second;
      sym[size_t(j)] = -1;
      next[size_t(i)] = next[size_t(j)];
      if (next[size_t(j)] >= 0) prev[size_t(next[size_t(j)])] = i;
      consider(prev[size_t(i)]);
      consider(i);
    }
    std::vector<int32_t> res;
    for (int i = n ? 0 : -1; i >= 0; i = next[size_t(i)]) res.push_back(sym[size_t(i)]);
    out.insert(out.end(), res.begin(), res.end());
    if (cache.size() < 500000 && word.size() <= 64) cache.emplace(word, std::move(res));
  }

  // ByteLevel pre-tokenizer regex, then BPE on each piece.
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    // Owned: bpe_word may throw (a byte the vocabulary lacks) in the middle of the loop.
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md_owner(
        pcre2_match_data_create_from_pattern(re, nullptr), &pcre2_match_data_free);
    pcre2_match_data* md = md_owner.get();
    size_t pos = 0;
    // The first call validates the UTF-8 of the whole text; later calls skip that check
    // (re-validating on every call made tokenizing a long file quadratic).
    uint32_t flags = 0;
    while (pos < text.size()) {
      const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, flags, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;  // cannot happen: the final alternative \s+ and the others cover every character
      if (rc < 0) fail("text is not valid UTF-8 (PCRE2 error {})", rc);
      flags = PCRE2_NO_UTF_CHECK;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {
        ++pos;
        continue;
      }
      if (ov[0] > pos) bpe_word(std::string(text.substr(pos, ov[0] - pos)), out);  // not expected
      bpe_word(std::string(text.substr(ov[0], ov[1] - ov[0])), out);
      pos = ov[1];
    }
  }

  // Leftmost-longest split on added tokens; calls `plain` on the text between matches.
  template <typename F>
  void split_added(std::string_view text, const std::vector<AddedToken>& toks, std::vector<int32_t>& out,
                   F&& plain) const {
    if (toks.empty()) return plain(text);
    // Only positions whose byte starts some added token are tried (a tokenizer.json may list
    // many added tokens; trying each at every byte would be slow on long texts).
    bool starts[256] = {};
    for (const auto& t : toks) starts[uint8_t(t.content[0])] = true;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* best = nullptr;
      if (starts[uint8_t(text[i])])
        for (const auto& t : toks)
        if (t.content.size() > 0 && text.compare(i, t.content.size(), t.content) == 0 &&
            (!best || t.content.size() > best->content.size()))
          best = &t;
      if (best) {
        plain(text.substr(start, i - start));
        out.push_back(best->id);
        i += best->content.size();
        start = i;
      } else {
        ++i;
      }
    }
    plain(text.substr(start));
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path_in) {
  std::string path = path_in;
  if (std::filesystem::is_directory(path)) path = (std::filesystem::path(path) / "tokenizer.json").string();
  auto j = read_json_file(path);
  auto tok = std::unique_ptr<Tokenizer>(new Tokenizer());
  Impl& m = *tok->impl_;
  m.path = path;
  try {
    const auto& model = j.at("model");
    if (model.value("type", "BPE") != "BPE") fail("{}: tokenizer model type is not BPE", path);
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
      const auto& pt = j["pre_tokenizer"];
      if (pt.value("type", "") != "ByteLevel" || pt.value("add_prefix_space", false))
        fail("{}: only the ByteLevel pre-tokenizer without add_prefix_space is supported", path);
    }
    // Ids index the id table: out-of-range ids would write outside it.
    constexpr int64_t kMaxId = (1 << 24) - 1;
    int32_t max_id = -1;
    if (!model.at("vocab").is_object()) fail("{}: model.vocab is not an object", path);
    for (auto& [s, id] : model.at("vocab").items()) {
      const int32_t v = int32_t(json_as_int(id, path + ": model.vocab['" + s.substr(0, 40) + "']", 0, kMaxId));
      m.vocab[s] = v;
      max_id = std::max(max_id, v);
    }
    if (j.contains("added_tokens")) {
      if (!j["added_tokens"].is_array()) fail("{}: added_tokens is not a list", path);
      for (const auto& a : j["added_tokens"])
        max_id = std::max(max_id, int32_t(json_as_int(a.at("id"), path + ": added_tokens id", 0, kMaxId)));
    }
    m.id_to_token.assign(size_t(max_id + 1), "");
    m.is_added.assign(size_t(max_id + 1), false);
    for (auto& [s, id] : m.vocab) m.id_to_token[size_t(id)] = s;
    const auto b2u = bytes_to_unicode();
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, b2u[size_t(b)]);
      auto it = m.vocab.find(s);
      // Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..0xFF) may be absent from the vocabulary.
      m.byte_id[b] = it == m.vocab.end() ? -1 : it->second;
      m.cp_to_byte[b2u[size_t(b)]] = uint8_t(b);
    }
    int32_t rank = 0;
    for (const auto& mg : model.at("merges")) {
      std::string a, b;
      if (mg.is_string()) {
        const std::string s = mg.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos) fail("{}: malformed merge '{}'", path, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        a = mg.at(0).get<std::string>();
        b = mg.at(1).get<std::string>();
      }
      auto ia = m.vocab.find(a), ib = m.vocab.find(b), im = m.vocab.find(a + b);
      if (ia == m.vocab.end() || ib == m.vocab.end() || im == m.vocab.end())
        fail("{}: merge '{} {}' refers to tokens missing from the vocabulary", path, a, b);
      m.merges.emplace((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second),
                       std::make_pair(rank++, im->second));
    }
    if (j.contains("added_tokens"))
      for (const auto& a : j["added_tokens"]) {
        const std::string aw = path + ": added_tokens";
        const bool special = json_bool(a, "special", false, aw);
        AddedToken t{int32_t(a.at("id").get<int64_t>()), a.at("content").get<std::string>(), special,
                     json_bool(a, "normalized", !special, aw)};
        if (t.content.empty()) fail("{}: added token {} has empty content", path, t.id);
        m.id_to_token[size_t(t.id)] = t.content;
        m.is_added[size_t(t.id)] = true;
        (t.normalized ? m.norm_added : m.raw_added).push_back(t);
        if (t.content == "<|endoftext|>") m.eos = t.id;
      }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed tokenizer.json: {}", path, e.what());
  }
  static const char* kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  int err = 0;
  PCRE2_SIZE off = 0;
  m.re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                       &off, nullptr);
  if (!m.re) fail("internal error: tokenizer regex failed to compile ({})", err);
  pcre2_jit_compile(m.re, PCRE2_JIT_COMPLETE);
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  std::vector<int32_t> out;
  m.split_added(text, m.raw_added, out, [&](std::string_view piece) {
    if (piece.empty()) return;
    bool ascii = true;
    for (unsigned char c : piece) ascii &= c < 0x80;
    std::string normed;
    if (!ascii) {
      utf8proc_uint8_t* r = nullptr;
      const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(piece.data()), utf8proc_ssize_t(piece.size()),
                                  &r, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
      if (n < 0) fail("text is not valid UTF-8: {}", utf8proc_errmsg(n));
      normed.assign(reinterpret_cast<char*>(r), size_t(n));
      free(r);
      piece = normed;
    }
    m.split_added(piece, m.norm_added, out, [&](std::string_view p) { m.encode_plain(p, out); });
  });
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& m = *impl_;
  if (id < 0 || size_t(id) >= m.id_to_token.size()) return "";
  const std::string& s = m.id_to_token[size_t(id)];
  if (m.is_added[size_t(id)]) return s;
  std::string out;
  utf8proc_ssize_t i = 0;
  while (i < utf8proc_ssize_t(s.size())) {
    utf8proc_int32_t cp;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data()) + i,
                                    utf8proc_ssize_t(s.size()) - i, &cp);
    if (n <= 0) break;
    auto it = m.cp_to_byte.find(uint32_t(cp));
    if (it != m.cp_to_byte.end())
      out.push_back(char(it->second));
    else
      out.append(s, size_t(i), size_t(n));
    i += n;
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

int Tokenizer::vocab_size() const { return int(impl_->id_to_token.size()); }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
const std::string& Tokenizer::path() const { return impl_->path; }

std::string find_tokenizer(const std::string& model_dir, const std::string& data_dir) {
  namespace fs = std::filesystem;
  if (fs::is_directory(model_dir) && fs::exists(fs::path(model_dir) / "tokenizer.json"))
    return (fs::path(model_dir) / "tokenizer.json").string();
  return (fs::path(data_dir) / "tokenizer" / "gpt-neox-20b" / "tokenizer.json").string();
}

}  // namespace mambaq
