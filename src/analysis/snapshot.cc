#include "analysis/snapshot.h"

#include "kernels/hadamard.h"

namespace mambaq {

SnapshotTap::SnapshotTap(const ModelConfig& cfg, int layers, size_t max_values, uint64_t seed)
    : cfg_(cfg), layers_(layers), max_(max_values), rng_(seed) {}

void SnapshotTap::add(const std::string& key, const float* x, size_t n) {
  Reservoir& r = res_[key];
  for (size_t i = 0; i < n; ++i, ++r.seen) {  // Algorithm R: every value kept with equal probability
    if (r.v.size() < max_) {
      r.v.push_back(x[i]);
    } else {
      const uint64_t j = std::uniform_int_distribution<uint64_t>(0, r.seen)(rng_);
      if (j < max_) r.v[size_t(j)] = x[i];
    }
  }
  arrays_[key] = r.v;
}

void SnapshotTap::on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) {
  if (layer < 0 || layer >= layers_) return;
  const std::string pre = "layer_" + std::to_string(layer) + ".";
  for (const auto& sp : scale_points(cfg_.arch)) {
    if (point != sp.tap || sp.head) continue;
    const auto [c0, c1] = col_range(cfg_, sp.cols, cols);
    const int w = c1 - c0;
    buf_.resize(size_t(rows) * w);
    for (int r = 0; r < rows; ++r) std::copy_n(data + size_t(r) * cols + c0, w, buf_.data() + size_t(r) * w);
    if (sp.hadamard) hadamard_transform(buf_.data(), rows, w, w);
    add(pre + sp.name, buf_.data(), buf_.size());
  }
}

}  // namespace mambaq
