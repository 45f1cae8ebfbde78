#include "quant/fake_quant.h"

#include "mambaq/error.h"
#include "quant/hadamard.h"

namespace mambaq {

namespace {
Weight owned(std::vector<float> v, std::vector<int64_t> shape) {
  auto buf = std::make_shared<std::vector<float>>(std::move(v));
  Weight w;
  w.shape = std::move(shape);
  w.data = buf->data();
  w.owner = buf;
  return w;
}
Weight qdq(const Weight& w, Granularity g, int bits, bool fuse_hadamard = false) {
  const int rows = int(w.dim(0)), cols = int(w.size() / w.dim(0));
  std::vector<float> v(w.data, w.data + w.size());
  if (fuse_hadamard) hadamard_fuse_right(v.data(), rows, cols);
  return owned(dequantize_weight(quantize_weight(v.data(), rows, cols, g, bits)), w.shape);
}
}  // namespace

std::unique_ptr<Model> fake_quant_weights(const Model& fp, Granularity g, int w_bits) {
  auto m = std::make_unique<Model>(fp);
  for (auto& L : m->weights_mut().layers) {
    L.in_proj = qdq(L.in_proj, g, w_bits);
    L.conv_w = qdq(L.conv_w, Granularity::Tensor, w_bits);
    if (L.x_proj.data) L.x_proj = qdq(L.x_proj, g, w_bits);
    if (L.dt_proj_w.data) L.dt_proj_w = qdq(L.dt_proj_w, g, w_bits);
    L.out_proj = qdq(L.out_proj, g, w_bits, /*fuse_hadamard=*/true);
  }
  m->hadamard_out_proj = true;
  return m;
}

FakeQuantTap::FakeQuantTap(const ModelConfig& cfg, const Calibration& cal, int a_bits)
    : points_(quant_points(cfg)), cal_(cal), bits_(a_bits) {}

void FakeQuantTap::on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) {
  if (layer < 0) return;  // lm_head stays FP in the Quamba W8A8 recipe
  auto it = points_.find(std::string(point));
  if (it == points_.end()) return;
  for (const auto& p : it->second) {
    const PointScale* s = cal_.find(layer, p.name);
    if (!s) fail("internal error: no calibrated scale for layer {} point {}", layer, p.name);
    if (p.c0 == 0 && p.c1 == cols) {
      fake_quantize(data, size_t(rows) * cols, s->scale, bits_);
    } else {
      for (int r = 0; r < rows; ++r) fake_quantize(data + size_t(r) * cols + p.c0, size_t(p.c1 - p.c0), s->scale, bits_);
    }
  }
}

}  // namespace mambaq
