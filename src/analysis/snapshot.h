// Activation snapshots: during calibration, a seeded uniform sample (reservoir sampling) of up to
// `max_values` values of every observed tensor of the first `layers` layers, keyed
// "layer_0.x_proj:input", "layer_2.ssm_state_act:input", ... Values are those the observers see
// (out_proj:input after the Hadamard transform), so a histogram shows where each scale clips.
#pragma once
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "mambaq/session.h"
#include "model/points.h"

namespace mambaq {

class SnapshotTap final : public Tap {
 public:
  SnapshotTap(const ModelConfig& cfg, int layers = 3, size_t max_values = 10000, uint64_t seed = 1234);
  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) override;
  const std::map<std::string, std::vector<float>>& arrays() const { return arrays_; }

 private:
  struct Reservoir {
    std::vector<float> v;
    uint64_t seen = 0;
  };
  void add(const std::string& key, const float* x, size_t n);
  const ModelConfig cfg_;
  std::map<std::string, Reservoir> res_;
  std::map<std::string, std::vector<float>> arrays_;
  int layers_;
  size_t max_;
  std::mt19937_64 rng_;
  std::vector<float> buf_;
};

}  // namespace mambaq
