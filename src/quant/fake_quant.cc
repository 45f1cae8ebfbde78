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

FakeQuantTap::FakeQuantTap(const ModelConfig& cfg, const Calibration& cal, int a_bits, unsigned fp_ops)
    : points_(quant_points(cfg)), cal_(cal), bits_(a_bits), fp_ops_(fp_ops), cfg_(cfg) {}

// Quantize-dequantize columns [c0, c1) with the scale of `scale_point`, unless `kind` stays FP.
void FakeQuantTap::apply(int layer, const char* scale_point, float* data, int rows, int cols, int c0, int c1,
                         unsigned kind) {
  if (fp_ops_ & kind) return;
  const PointScale* s = cal_.find(layer, scale_point);
  if (!s) fail("internal error: no calibrated scale for layer {} point {}", layer, scale_point);
  if (c0 == 0 && c1 == cols) {
    fake_quantize(data, size_t(rows) * cols, s->scale, bits_);
  } else {
    for (int r = 0; r < rows; ++r) fake_quantize(data + size_t(r) * cols + c0, size_t(c1 - c0), s->scale, bits_);
  }
}

// Which op kind consumes each quantized tensor (for --fp-ops); a tensor read by two kinds is
// split by columns (in_proj's x | z, x_proj's dt | B C) or tapped twice (u: x_proj:input and
// ssm:input).
void FakeQuantTap::on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) {
  if (layer < 0) return;  // lm_head stays FP in the Quamba W8A8 recipe
  const int di = cfg_.d_inner;
  if (point == "ssm_state") return apply(layer, "ssm_state_act:input", data, rows, cols, 0, cols, kFpSsm);
  if (point == "ssm:input") return apply(layer, "x_proj:input", data, rows, cols, 0, cols, kFpSsm);
  if (cfg_.arch == Arch::Mamba1) {
    const int R = cfg_.dt_rank;
    if (point == "in_proj:input" || point == "x_proj:input" || point == "out_proj:input")
      return apply(layer, std::string(point).c_str(), data, rows, cols, 0, cols, kFpLinear);
    if (point == "in_proj:output") {
      apply(layer, "in_proj:output", data, rows, cols, 0, di, kFpConv);       // x: the conv's input
      return apply(layer, "in_proj:output", data, rows, cols, di, cols, kFpSsm);  // z: the scan's gate
    }
    if (point == "x_proj:output") {
      apply(layer, "x_proj:output", data, rows, cols, 0, R, kFpLinear);  // dt_low: dt_proj's input
      return apply(layer, "x_proj:output", data, rows, cols, R, cols, kFpSsm);  // B, C
    }
    if (point == "dt_proj:output") return apply(layer, "dt_proj:output", data, rows, cols, 0, cols, kFpSsm);
    return;
  }
  auto it = points_.find(std::string(point));
  if (it == points_.end()) return;
  for (const auto& p : it->second) {
    unsigned kind = kFpSsm;  // dt, x_conv_out, B_conv_out, C_conv_out
    if (p.name == "in_proj:input" || p.name == "out_proj:input") kind = kFpLinear;
    if (p.name == "xBC") kind = kFpConv;
    if (p.name == "z") kind = kFpNorm;
    apply(layer, p.name.c_str(), data, rows, cols, p.c0, p.c1, kind);
  }
}

}  // namespace mambaq
