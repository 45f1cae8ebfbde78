// Sweeps: a matrix of quantize + eval runs described by a TOML or JSON spec.
//
//   [sweep]                                  # everything optional but tasks
//   name = "percentile"
//   tasks = ["ppl:corpus/heldout.txt", "lastword:corpus/lastword.jsonl"]
//   limit = 0                                # 0 = whole tasks
//   out_dir = "sweeps/percentile"            # quantized models, one folder per cell
//   folder = "{percentile_alpha}/{model}"    # a cell's folder in out_dir (default: the varying keys)
//   log = "experiments.jsonl"
//   [[matrix]]                               # every combination is one cell; several [[matrix]]
//   model = ["models/mamba-tiny", "models/mamba2-tiny-hf"]   # tables add their cells ([matrix]: one)
//   percentile_alpha = [0.9995, 1.0]         # any `mambaq quantize` flag, _ for -
//   mode = ["int8"]                          # eval's --mode; also ppl_seqlen
//   save_activations = true                  # quantize --save-activations beside the cell's folder
// docs/analysis.md has the key table.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mambaq {

struct ModelConfig;

struct SweepCell {
  std::string id;                            // stable: hash of everything that defines the cell
  std::string model;
  std::string folder;                        // in out_dir, readable: "pa-1.0/mamba-130m"
  std::map<std::string, nlohmann::json> quantize;  // flag (dash form) -> value
  std::map<std::string, nlohmann::json> eval;      // --mode, --ppl-seqlen
  bool save_activations = false;             // not part of the id: an output, not a setting
  // The plan (sweep_plan_cell fills it from `quantize --dry-run`): the settings the quantize run
  // uses (presets expanded, defaults filled, settings that cannot act left out), what cannot act
  // and why, or why the cell cannot run; a cell whose effective settings equal an earlier cell's
  // is a duplicate of it.
  nlohmann::json effective;                  // null: not planned (model missing, or invalid)
  nlohmann::json not_applied = nlohmann::json::object();
  std::string invalid;
  int dup_of = -1;
};

struct SweepSpec {
  std::string source, name, out_dir, log, folder_template;
  std::vector<std::string> tasks;
  int limit = 0;
  std::vector<std::string> varying;          // matrix keys whose value differs between cells
  std::vector<SweepCell> cells;
};

constexpr size_t kMaxSweepCells = 10000;
// Reads and expands a spec; unknown keys, empty axes and bad types are errors naming the file.
SweepSpec load_sweep(const std::string& path);
// --limit from the command line replaces the spec's (and is part of each cell's id).
void set_sweep_limit(SweepSpec& s, int limit);

// A cell's folder in out_dir: the spec's folder template, or the varying keys then the model.
std::string sweep_cell_folder(const SweepCell& c, const SweepSpec& s);
// Marks each planned cell whose effective settings (quantize's, the eval flags, the model) equal
// an earlier planned cell's as its duplicate (dup_of); returns how many.
size_t sweep_mark_duplicates(SweepSpec& s);
// A matrix key's value in a cell ("percentile_alpha" -> "1.0"); "-" if the cell has none.
std::string sweep_cell_value(const SweepCell& c, const std::string& key);
// What a cell costs in tokens through the model (calibration and GPTQ as its effective settings
// use them, the tasks' documents), and in seconds at a forward rate of `tok_s` tokens/s.
struct SweepWork {
  double calib_tokens = 0, gptq_tokens = 0, eval_tokens = 0;
};
SweepWork sweep_cell_work(const SweepCell& c, const SweepSpec& s, const std::string& data_dir);
// The weights a forward multiplies by per token, the LM head left out: the scale a model's rate is
// extrapolated on from a measured one of the same architecture.
double sweep_layer_params(const ModelConfig& c);
// Seconds for the work at a measured forward rate (tokens/s of the layers, no LM head).
double sweep_cell_seconds(const SweepWork& w, const ModelConfig& c, double tok_s);
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
