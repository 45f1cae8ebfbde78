// GPT-NeoX byte-level BPE, read from a Hugging Face tokenizer.json.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mambaq {

class Tokenizer {
 public:
  // Load tokenizer.json (a file, or a folder holding one); errors name the file.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  ~Tokenizer();

  // HF semantics: special added tokens are matched in the raw text, the text is NFC-normalised,
  // normalised added tokens are matched leftmost-longest, the rest is split by the ByteLevel
  // regex and merged by BPE rank. No BOS/EOS is added.
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes one token stands for (for streaming output).
  std::string token_bytes(int32_t id) const;
  int vocab_size() const;  // largest id + 1
  int32_t eos_id() const;  // <|endoftext|>, or -1
  const std::string& path() const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Default location of the bundled tokenizer relative to a model folder: the folder's own
// tokenizer.json if present, else the repository's data/tokenizer/gpt-neox-20b/tokenizer.json.
std::string find_tokenizer(const std::string& model_dir, const std::string& data_dir);

}  // namespace mambaq
