#include "io/json_file.h"

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
}  // namespace mambaq
