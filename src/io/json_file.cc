#include "io/json_file.h"

#include <cmath>
#include <sstream>

#include "io/mmap_file.h"
#include "mambaq/error.h"

namespace mambaq {

// Largest nesting depth of [ and { outside strings.
static int json_depth(std::string_view t) {
  int depth = 0, worst = 0;
  bool in_str = false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      worst = std::max(worst, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return worst;
}

nlohmann::json parse_json(std::string_view text, const std::string& where) {
  if (json_depth(text) > kMaxJsonDepth)
    fail("{}: JSON nested deeper than {} levels (corrupt or hostile input)", where, kMaxJsonDepth);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON (byte {}): {}", where, e.byte, e.what());
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    fail("{}: not valid JSON: {}", where, e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

std::vector<std::string> read_jsonl_texts(const std::string& path) {
  const std::string all = read_text_file(path);
  std::istringstream in(all);
  std::vector<std::string> texts;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    nlohmann::json j = parse_json(line, where + ": malformed JSON line");
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      fail("{}: expected an object with a string field \"text\"", where);
    texts.push_back(j["text"].get<std::string>());
  }
  if (texts.empty()) fail("{}: no documents (empty file)", path);
  return texts;
}

}  // namespace mambaq

namespace mambaq {

int64_t json_as_int(const nlohmann::json& v, const std::string& what, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) fail("{} must be an integer (got {})", what, v.dump());
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) fail("{} = {} is out of range", what, v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    if (hi == INT32_MAX) fail("{} = {} is out of range (must be at least {})", what, x, lo);
    fail("{} = {} is out of range ({} to {})", what, x, lo, hi);
  }
  return x;
}

double json_as_number(const nlohmann::json& v, const std::string& what) {
  if (!v.is_number()) fail("{} must be a number (got {})", what, v.dump());
  const double x = v.get<double>();
  if (!std::isfinite(x)) fail("{} = {} is not a finite number", what, v.dump());
  return x;
}

static std::string field(const std::string& where, const std::string& key) { return where + ": field '" + key + "'"; }

int64_t json_int(const nlohmann::json& j, const std::string& key, int64_t def, const std::string& where, int64_t lo,
                 int64_t hi) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
  return json_as_int(j[key], field(where, key), lo, hi);
}

double json_number(const nlohmann::json& j, const std::string& key, double def, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
  return json_as_number(j[key], field(where, key));
}

bool json_bool(const nlohmann::json& j, const std::string& key, bool def, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) fail("{} must be true or false (got {})", field(where, key), j[key].dump());
  return j[key].get<bool>();
}

std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& def,
                        const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_string()) fail("{} must be a string (got {})", field(where, key), j[key].dump());
  return j[key].get<std::string>();
}

}  // namespace mambaq
