#include "io/json_file.h"

#include <filesystem>
#include <fstream>

#include "io/mmap_file.h"
#include "mambaq/error.h"

namespace mambaq {
nlohmann::json read_json_file(const std::string& path) {
  if (!file_exists(path)) fail("{}: file not found", path);
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON (byte {}): {}", path, e.byte, e.what());
  }
}
std::vector<std::string> read_jsonl_texts(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("{}: file not found", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::vector<std::string> texts;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: malformed JSON line: {}", path, lineno, e.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      fail("{}:{}: expected an object with a string field \"text\"", path, lineno);
    texts.push_back(j["text"].get<std::string>());
  }
  if (texts.empty()) fail("{}: no documents (empty file)", path);
  return texts;
}

}  // namespace mambaq
