// Layer-by-layer comparison of two runs on the same tokens (e.g. FP32 vs W8A8 int8): error
// statistics of the block outputs (residual stream) and mixer outputs of chosen layers, and the
// KL divergence and top-1 agreement of the final logits.
#pragma once
#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambaq/model.h"

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

// The seeds' quality bands: MSE (< 1e-5 excellent, < 1e-4 very good, < 1e-3 good, < 1e-2 fair,
// else poor), correlation (> 0.9999 near-identical, > 0.999 excellent, > 0.99 good, > 0.95 fair,
// else poor), relative MAE (< 0.1 % excellent, < 1 % very good, < 5 % good, < 10 % fair, else poor).
std::string mse_band(double mse);
std::string corr_band(double corr);
std::string rel_mae_band(double rel_mae);

// Accumulates KL(P_ref || P_cand) and top-1 agreement over logit rows {rows, V}.
struct LogitStats {
  double kl_sum = 0;
  size_t rows = 0, top1_agree = 0;
  void add(const float* ref, const float* cand, int rows, int V);
  double kl() const { return rows ? kl_sum / double(rows) : 0; }
  double top1() const { return rows ? double(top1_agree) / double(rows) : 0; }
};

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

// One run over samples: captured layer outputs (LayerCapture) and the logits of every position.
struct RunCapture {
  std::map<std::pair<int, std::string>, std::vector<float>> layers;
  std::vector<float> logits;  // {positions, padded_vocab}
};
RunCapture run_capture(const Model& m, const std::vector<std::vector<int32_t>>& samples, const std::set<int>& layers,
                       const std::string& label, bool progress);

// Where a reference run comes from and may be kept: `save_dir` (empty: not kept) holds its
// arrays and a manifest of the inputs (model path, mode, data hash, samples, seqlen, layers,
// tokens); a manifest that matches exactly is reused instead of running the model again.
struct ReferenceSource {
  std::string model_path, data_file;
  int seqlen = 0;
  std::string save_dir;
  std::string basis = {};  // the FP model transformed into a quantized model's basis ("": as loaded)
};
RunCapture reference_run(const Model& ref, const ReferenceSource& src, const std::vector<std::vector<int32_t>>& samples,
                         const std::set<int>& layers, bool progress, bool* reused);
// "ref_fp32_layer_3_block_out.npy"
std::string npy_name(const std::string& who, const std::string& mode, int layer, const std::string& tensor);

// "0,11,-1" | "all" -> layer indices (negative from the end); errors name --layers.
std::set<int> parse_layers(const std::string& spec, int n_layer);

}  // namespace mambaq
