#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace mambaq {

// Every JSON input goes through parse_json: a syntax error names `where` and the byte offset,
// and nesting deeper than kMaxJsonDepth is refused before parsing (copying, printing or
// comparing a deeply nested value would recurse once per level and overflow the stack).
constexpr int kMaxJsonDepth = 64;
nlohmann::json parse_json(std::string_view text, const std::string& where);

// Parse a JSON file (a regular file, at most kMaxTextFile bytes).
nlohmann::json read_json_file(const std::string& path);
// The "text" field of every line of a JSONL file; malformed lines are errors naming FILE:LINE.
std::vector<std::string> read_jsonl_texts(const std::string& path);

}  // namespace mambaq

namespace mambaq {

// Strict field readers for every JSON input: the value must have the field's type (an integer
// field refuses 2.5, true and "2"; a boolean refuses 0/1), integers must lie in [lo, hi] and
// numbers must be finite; errors name `where` and the field. A missing or null field gives `def`.
int64_t json_int(const nlohmann::json& j, const std::string& key, int64_t def, const std::string& where,
                 int64_t lo = INT32_MIN, int64_t hi = INT32_MAX);
double json_number(const nlohmann::json& j, const std::string& key, double def, const std::string& where);
bool json_bool(const nlohmann::json& j, const std::string& key, bool def, const std::string& where);
std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& def,
                        const std::string& where);
// The same checks on a value already in hand (`what` names it in errors).
int64_t json_as_int(const nlohmann::json& v, const std::string& what, int64_t lo = INT32_MIN, int64_t hi = INT32_MAX);
double json_as_number(const nlohmann::json& v, const std::string& what);

}  // namespace mambaq
