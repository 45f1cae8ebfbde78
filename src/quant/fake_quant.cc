#include "quant/fake_quant.h"

#include "mambaq/error.h"
#include "quant/hadamard.h"
#include "quant/quantized.h"

namespace mambaq {

std::unique_ptr<Model> fake_quant_weights(const Model& fp, Granularity g, int w_bits) {
  auto m = std::make_unique<Model>(fp);
  for (int l = 0; l < fp.config().n_layer; ++l)
    dequantize_into(quantize_layer_weights(fp.config(), fp.weights().layers[size_t(l)], g, w_bits), fp.config(),
                    m->weights_mut().layers[size_t(l)]);
  m->hadamard_out_proj = true;
  return m;
}

FakeQuantTap::FakeQuantTap(const ModelConfig& cfg, const Calibration& cal, int a_bits)
    : points_(quant_points(cfg)), cal_(cal), bits_(a_bits) {}

void FakeQuantTap::on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) {
  if (layer < 0) return;  // lm_head stays FP in the Quamba W8A8 recipe
  if (point == "ssm_state") {  // the state kept between calls: int8 in int8 mode
    const PointScale* s = cal_.find(layer, "ssm_state_act:input");
    if (!s) fail("internal error: no calibrated scale for layer {} point ssm_state_act:input", layer);
    fake_quantize(data, size_t(rows) * cols, s->scale, bits_);
    return;
  }
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
