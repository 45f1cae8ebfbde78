// Sweeps: a matrix of quantize + eval runs described by a TOML or JSON spec.
//
//   [sweep]                                  # everything optional but tasks
//   name = "percentile"
//   tasks = ["ppl:corpus/heldout.txt", "lastword:corpus/lastword.jsonl"]
//   limit = 0                                # 0 = whole tasks
//   out_dir = "sweeps/percentile"            # quantized models, one folder per cell
//   log = "experiments.jsonl"
//   [matrix]                                 # every combination is one cell
//   model = ["models/mamba-tiny", "models/mamba2-tiny-hf"]
//   percentile_alpha = [0.9995, 1.0]         # any `mambaq quantize` flag, _ for -
//   mode = ["int8"]                          # eval's --mode; also ppl_seqlen
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mambaq {

struct SweepCell {
  std::string id;                            // stable: hash of everything that defines the cell
  std::string model;
  std::map<std::string, nlohmann::json> quantize;  // flag (dash form) -> value
  std::map<std::string, nlohmann::json> eval;      // --mode, --ppl-seqlen
};

struct SweepSpec {
  std::string source, name, out_dir, log;
  std::vector<std::string> tasks;
  int limit = 0;
  std::vector<std::string> varying;          // matrix keys with more than one value
  std::vector<SweepCell> cells;
};

constexpr size_t kMaxSweepCells = 10000;
// Reads and expands a spec; unknown keys, empty axes and bad types are errors naming the file.
SweepSpec load_sweep(const std::string& path);
// --limit from the command line replaces the spec's (and is part of each cell's id).
void set_sweep_limit(SweepSpec& s, int limit);

// A matrix key's value in a cell ("percentile_alpha" -> "1.0"); "-" if the cell has none.
std::string sweep_cell_value(const SweepCell& c, const std::string& key);
// Rough cost of a cell in tokens through the model: calibration plus evaluation.
double sweep_cell_tokens(const SweepCell& c, const SweepSpec& s, const std::string& data_dir);
// Resuming: the eval record of each cell the log has finished, by cell id.
std::map<std::string, nlohmann::json> sweep_done(const std::string& log);
// The two runs of a cell, as `mambaq` arguments (after the program name).
struct SweepCommands {
  std::vector<std::string> quantize, eval;
};
SweepCommands sweep_cell_commands(const SweepCell& c, const SweepSpec& s, int threads, const std::string& data_dir);
// The result table: columns "task metric" found in the finished cells, and one cell's text.
std::vector<std::string> sweep_result_columns(const SweepSpec& s, const std::map<std::string, nlohmann::json>& done);
// With `base` (the first cell's record), the text adds the difference to it and its standard
// error: "0.4512 (+0.0123 ±0.0087)".
std::string sweep_result_text(const nlohmann::json& record, const std::string& column,
                              const nlohmann::json* base = nullptr);

// 64-bit FNV-1a, hex: stable across runs and builds.
std::string stable_hash(const std::string& s);

}  // namespace mambaq
