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

// 64-bit FNV-1a, hex: stable across runs and builds.
std::string stable_hash(const std::string& s);

}  // namespace mambaq
