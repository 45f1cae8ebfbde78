#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace mambaq {
// Parse a JSON file; a syntax error names the file and the byte offset.
nlohmann::json read_json_file(const std::string& path);
}  // namespace mambaq
