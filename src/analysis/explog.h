// The experiment log: one JSON object per line (JSONL), append-only. Every `quantize` and
// `eval` appends its record; `mambaq logs` reads them back.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mambaq {

// Appends `record` as one line. The line is written with a single write() on an O_APPEND
// descriptor under an exclusive flock, so concurrent writers (threads or processes) never
// interleave or tear lines. Never truncates or rewrites the file.
void append_log(const std::string& path, const nlohmann::json& record);

// Every record of a log; a line that is not a JSON object is an error naming file and line.
std::vector<nlohmann::json> read_log(const std::string& path);

// {"a": {"b": 1}} -> {"a.b": 1}: leaves keyed by dotted path (arrays stay whole).
std::vector<std::pair<std::string, nlohmann::json>> flatten(const nlohmann::json& j);

// Common fields of a record: timestamp (UTC ISO 8601), command line, version, git describe.
nlohmann::json log_header(const std::string& kind);

// The command line as typed (set once by main()).
void set_command_line(int argc, char** argv);
const std::string& command_line();

}  // namespace mambaq
