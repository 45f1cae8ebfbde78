// Layer-by-layer comparison of two runs on the same tokens (e.g. FP32 vs W8A8 int8): error
// statistics of the block outputs (residual stream) and mixer outputs of chosen layers, and the
// KL divergence and top-1 agreement of the final logits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambaq/session.h"

namespace mambaq {

struct TensorStats {
  size_t n = 0;
  double ref_mean = 0, ref_std = 0, ref_min = 0, ref_max = 0;
  double cand_mean = 0, cand_std = 0, cand_min = 0, cand_max = 0;
  double diff_mean = 0, diff_std = 0, mean_abs = 0, max_abs = 0;
  double mse = 0, rmse = 0, mae = 0, rel_mse = 0, rel_mae = 0, corr = 0;
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0;  // percentiles of |diff|
  nlohmann::json to_json() const;
};
// Statistics of cand against ref (same length); sums in double; rel_mse = MSE / mean(ref^2),
// rel_mae = MAE / mean|ref|, corr = Pearson correlation.
TensorStats compare_tensors(const float* ref, const float* cand, size_t n);

// One quality band per tensor, on one statistic: the relative MAE (mean |diff| / mean |ref|:
// < 0.1 % excellent, < 1 % very good, < 5 % good, < 10 % fair, else poor). The seeds also band MSE
// and correlation, but MSE is in the tensor's own units (the residual stream grows with depth, so
// late layers read "poor" at the same relative error) and the three disagreed on one row.
std::string rel_mae_band(double rel_mae);

// KL(P_ref || P_cand) of one logit row {V} (log-sum-exp in double); *agree: same argmax.
double row_kl(const float* ref, const float* cand, int V, bool* agree);

// Accumulates KL(P_ref || P_cand) and top-1 agreement over logit rows {rows, V}.
struct LogitStats {
  double kl_sum = 0;
  size_t rows = 0, top1_agree = 0;
  void add(const float* ref, const float* cand, int rows, int V);
  void add_row(double kl, bool agree) { kl_sum += kl, top1_agree += agree, ++rows; }
  double kl() const { return rows ? kl_sum / double(rows) : 0; }
  double top1() const { return rows ? double(top1_agree) / double(rows) : 0; }
};

// numpy.histogram(cand - ref, bins): `bins` equal bins over [min, max] of the differences, the
// last bin closed; when every difference is equal, over [d - 0.5, d + 0.5] as numpy does.
struct DiffHistogram {
  double lo = 0, hi = 0;
  std::vector<uint64_t> counts;
  nlohmann::json to_json() const { return {{"lo", lo}, {"hi", hi}, {"counts", counts}}; }
};
DiffHistogram diff_histogram(const float* ref, const float* cand, size_t n, int bins);

// Captures block_out and mixer_out of chosen layers, appended over forward calls.
class LayerCapture final : public Tap {
 public:
  explicit LayerCapture(std::set<int> layers) : layers_(std::move(layers)) {}
  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) override;
  // key: {layer, "block_out" | "mixer_out"}
  std::map<std::pair<int, std::string>, std::vector<float>> got;

 private:
  std::set<int> layers_;
};

// One run over samples: captured layer outputs (LayerCapture) and the logits of every position,
// samples one after another.
struct RunCapture {
  std::map<std::pair<int, std::string>, std::vector<float>> layers;  // {positions, d_model}
  std::vector<float> logits;                                         // {positions, padded_vocab}
};
RunCapture run_capture(Session& m, const std::vector<std::vector<int32_t>>& samples, const std::set<int>& layers,
                       const std::string& label, bool progress);

// What a run is (--save-dir keys its folder by it): the model's identity (config hash + weights
// size, see model_identity; else its canonical path), the execution mode, the FP32-kept op kinds
// and the FP model their weights come from, and the basis an FP reference was moved into.
struct RunKey {
  std::string role;   // "ref" | "cand"
  std::string model;  // the path as given
  std::string mode;   // "fp32" | "fake" | "int8"
  std::string fp_ops;
  std::string fp_source;  // identity of the FP model fp_ops take weights from ("": none)
  std::string basis;      // "" | "rotated" | "rotated+reordered:<weights sha256>"
};
// The inputs a run saw: the data file's hash, the tokens per sample, the layers captured.
struct RunInputs {
  std::string data_file;
  std::string data_sha256;  // of data_file's bytes
  int seqlen = 0;
};
// "cand-q8-int8-1a2b3c4d": readable, and unique per key (the hash covers the model identity, mode,
// fp-ops, their source, the basis and the mambaq version).
std::string run_dir_name(const RunKey& key);

// A run from `save_dir` when one was saved there for this key and these inputs (its layers a
// superset of `layers`), else computed with `m` and saved (empty save_dir: never saved). Each run
// has its own folder with a manifest.json that records what every file holds; the manifest is
// written last and removed before a folder is rewritten, so an interrupted save is never read
// back, and a run saved for other inputs or an older folder is recomputed (*note says why).
struct CachedRun {
  RunCapture cap;
  std::string dir;   // the folder it is saved in ("": not saved)
  bool reused = false;
  std::string note;  // why a saved run was not reused ("": nothing was saved there)
};
CachedRun cached_run(Session& m, const RunKey& key, const RunInputs& in,
                     const std::vector<std::vector<int32_t>>& samples, const std::set<int>& layers,
                     const std::string& save_dir, const std::string& label, bool progress);

// ---- the comparison: one reference, several candidates x modes ----
struct SampleStats {
  size_t tokens = 0;
  double mse = 0, mae = 0, rel_mae = 0, max_abs = 0, corr = 0;
};
struct LayerResult {
  int layer = 0;
  std::string tensor;  // "block_out" | "mixer_out"
  TensorStats stats;
  DiffHistogram hist;
  std::vector<SampleStats> per_sample;
};
struct CompareRun {
  std::string cand, cand_id, label, mode, fp_ops;
  std::string saved, ref_saved;  // folders under --save-dir ("": not saved)
  bool reused = false, ref_reused = false;
  std::string basis;  // the reference's basis for this candidate
  std::vector<LayerResult> layers;
  LogitStats logits;
  std::vector<LogitStats> logits_per_sample;
  nlohmann::json to_json() const;
};
struct CompareSpec {
  std::string ref_path;                 // for identities and messages
  std::vector<std::string> cand_paths;  // one per candidate model
  std::string ref_mode = "fp32";        // the reference's execution mode
  std::vector<std::string> modes;       // modes every candidate runs in (empty: each its own)
  std::string backend;                  // where every run computes (empty: the default backend)
  unsigned fp_ops = 0;                  // op kinds kept in FP32 (fake mode only)
  std::string data_file;
  int seqlen = 0;
  std::set<int> layers;
  std::string save_dir;  // "" = nothing saved
  int hist_bins = 100;
  bool progress = false;
};
// Runs the reference (once per basis the candidates need) and every candidate x mode, with the
// statistics of each against the reference. Checks shapes and plans before any long run.
std::vector<CompareRun> compare_models(const Model& ref, const std::vector<const Model*>& cands, const CompareSpec& spec,
                                       const std::vector<std::vector<int32_t>>& samples);
// Labels that tell candidates apart: the folder's name, or its path where two names are equal.
std::vector<std::string> candidate_names(const std::vector<std::string>& paths);
// Labels from what differs between quantized candidates' settings ("percentile_alpha=1.0",
// "w_bits=4 a_bits=16", "edits=..."), or candidate_names when nothing (or too much) differs.
std::vector<std::string> candidate_labels(const std::vector<const Model*>& cands, const std::vector<std::string>& paths);

// "0,11,-1" | "all" -> layer indices (negative from the end); errors name --layers.
std::set<int> parse_layers(const std::string& spec, int n_layer);

}  // namespace mambaq
