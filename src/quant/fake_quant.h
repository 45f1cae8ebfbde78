// Fake quantization (the simulation of a quantized model in float arithmetic): weights
// quantize-dequantized offline, activations quantize-dequantized at every calibrated point
// through a Tap. The int8 execution mode is checked against this.
#pragma once
#include <memory>

#include "mambaq/model.h"
#include "quant/calibrate.h"
#include "quant/quantize.h"

namespace mambaq {

// Quamba W8A8 weights: in_proj, conv1d, x_proj, dt_proj and out_proj (with H^T fused first)
// quantize-dequantized; embedding, norms and lm_head stay FP. The copy applies the Hadamard
// transform to the out_proj input online.
std::unique_ptr<Model> fake_quant_weights(const Model& fp, Granularity g, int w_bits = 8);

// Quantize-dequantizes activations at every point of `cal` (static per-tensor scales).
class FakeQuantTap final : public Tap {
 public:
  // fp_ops: op kinds (FpOps) whose inputs are left in FP32.
  FakeQuantTap(const ModelConfig& cfg, const Calibration& cal, int a_bits = 8, unsigned fp_ops = 0);
  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) override;

 private:
  std::map<std::string, std::vector<QuantPoint>> points_;
  const Calibration& cal_;
  int bits_;
  unsigned fp_ops_;
  const ModelConfig& cfg_;
  void apply(int layer, const char* scale_point, float* data, int rows, int cols, int c0, int c1, unsigned kind);
};

}  // namespace mambaq
