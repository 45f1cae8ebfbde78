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

// Every record of a log; a line that is not a JSON object is an error naming file and line, or,
// with `skipped`, is skipped and described there ("FILE:LINE: ...").
std::vector<nlohmann::json> read_log(const std::string& path, std::vector<std::string>* skipped = nullptr);

// A model folder's identity, for linking a quantize run to the evals of its output: sha256 of its
// config.json (which, for a quantized folder, records every setting and scale edit) and the size
// of its weights file. "" when the folder cannot be read.
std::string model_identity(const std::string& dir);

// Experiments: a record that makes a model (quantize, scales_set: "output", "output_id") and the
// evals of that model (linked by identity, else by path), in log order. Evals of a model no
// record made (an FP checkpoint) form an experiment of their own per model.
struct Experiment {
  int producer = -1;         // record index of the quantize / scales_set, or -1
  std::vector<int> evals;    // record indices
};
std::vector<Experiment> group_experiments(const std::vector<nlohmann::json>& records);

// {"a": {"b": 1}} -> {"a.b": 1}: leaves keyed by dotted path (arrays stay whole).
std::vector<std::pair<std::string, nlohmann::json>> flatten(const nlohmann::json& j);

// Common fields of a record: timestamp (UTC ISO 8601), command line, version, git describe.
// "2026-11-22T15:39:41Z": now, UTC, to the second (the log's and the saved folders' timestamps).
std::string utc_timestamp();
nlohmann::json log_header(const std::string& kind);

// One task metric of two runs' results (the log's per-task objects, e.g. results["arc_easy"]):
// values, difference b - a, and its standard error sqrt(se_a^2 + se_b^2) from the runs'
// `METRIC_stderr` fields (se < 0 when either lacks one). Treating the runs as independent
// overstates the error of two runs on the same documents: a difference beyond 2 se is real.
struct MetricDiff {
  double a = 0, b = 0, diff = 0, se = -1;
};
bool metric_diff(const nlohmann::json& task_a, const nlohmann::json& task_b, const std::string& metric, MetricDiff& out);
// "+0.0123 ±0.0087" (no ± without a standard error)
std::string diff_str(const MetricDiff& d);
// The metrics a log's task result may hold, in display order.
const std::vector<std::string>& result_metrics();

// The command line as typed (set once by main()).
void set_command_line(int argc, char** argv);
const std::string& command_line();

}  // namespace mambaq
