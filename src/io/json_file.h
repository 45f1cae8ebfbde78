#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambaq {
// Parse a JSON file; a syntax error names the file and the byte offset.
nlohmann::json read_json_file(const std::string& path);
// The "text" field of every line of a JSONL file; malformed lines are errors naming FILE:LINE.
std::vector<std::string> read_jsonl_texts(const std::string& path);
}  // namespace mambaq
