// A quantized model (Quamba W8A8): int8 weights, static per-tensor activation scales, and the
// record of how they were made. Held by Model (Model::quantized()); built by quantize_model
// from an FP model and a Calibration, or read back from a `mambaq quantize` folder.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambaq/model.h"
#include "quant/calibrate.h"
#include "quant/quantize.h"

namespace mambaq {

// What `mambaq quantize` did; saved as config.json's "quantization" section.
struct QuantMeta {
  std::string recipe = "quamba1";
  int w_bits = 8, a_bits = 8;
  Granularity granularity = Granularity::Tensor;
  double alpha = 0.9995;
  PercentileMode pmode = PercentileMode::Ema;
  std::string calib_file, calib_sha256;
  size_t calib_samples = 0, calib_available = 0;
  int calib_seqlen = 512;
  std::string version;  // mambaq version and git describe
  std::string source_model;  // the FP model folder it was made from
  nlohmann::json to_json() const;
  static QuantMeta from_json(const nlohmann::json& j, const std::string& source);
};

// One mixer's int8 weights and the activation scales its kernels read. Scale names follow the
// calibration points (see quant_points and docs/format.md).
struct QLayer {
  QuantizedWeight in_proj, conv, x_proj, dt_proj, out_proj;  // out_proj holds W H^T (Hadamard fused)
  float s_in = 0;           // in_proj:input
  float s_out_in = 0;       // out_proj:input (after the online Hadamard transform)
  float s_state = 0;        // ssm_state_act:input: the SSM state kept between calls, int8
  // Mamba1
  float s_xz = 0;           // in_proj:output (x and z)
  float s_u = 0;            // x_proj:input = conv1d + SiLU output = SSM input u (percentile)
  float s_dbc = 0;          // x_proj:output (dt_low, B, C)
  float s_delta = 0;        // dt_proj:output
  // Mamba2
  float s_z = 0, s_xbc = 0, s_dt = 0;  // in_proj output parts: z, xBC (conv input), dt
  float s_x = 0, s_B = 0, s_C = 0;     // conv output parts: x_conv_out (percentile), B_conv_out, C_conv_out
  std::vector<float> conv_out_scale;   // {conv_dim}: the conv output scale of each channel
};

struct QuantizedModel {
  QuantMeta meta;
  Calibration cal;  // every activation scale by (layer, point): the source of QLayer's scales
  std::vector<QLayer> layers;
};

// The recipe and bits this build supports (quamba1, W8A8); errors name the flag.
void check_recipe(const std::string& recipe, int w_bits, int a_bits);

// Weight quantization of one layer per the recipe (in_proj, conv1d per tensor, x_proj, dt_proj,
// out_proj with H^T fused); activation scales are filled by quantize_model.
QLayer quantize_layer_weights(const ModelConfig& cfg, const LayerWeights& L, Granularity g, int w_bits);
// Fill a layer's activation scales from the calibration; every point must be present.
void set_layer_scales(const ModelConfig& cfg, const Calibration& cal, int layer, QLayer& q);

// FP model + calibration -> quantized model (mode int8; fp32/fake run its dequantized weights).
std::unique_ptr<Model> quantize_model(const Model& fp, const Calibration& cal, const QuantMeta& meta);

// Float weights of the quantized projections (dequantized), for the fp32 and fake modes.
void dequantize_into(const QLayer& q, const ModelConfig& cfg, LayerWeights& L);

// Save as a folder: config.json (+ "quantization"), model.safetensors (int8 weights, named
// scales; docs/format.md), tokenizer.json copied from `tokenizer_file` if given.
void save_quantized(const Model& m, const std::string& dir, const std::string& tokenizer_file);
// Read the quantized tensors of `store` into a QuantizedModel; marks the names it used.
std::shared_ptr<QuantizedModel> load_quantized(const ModelConfig& cfg, const TensorStore& store,
                                               std::set<std::string>& used);
// The saved tensor holding a calibration point's scale, e.g. (Mamba1, 3, "x_proj:input") ->
// "backbone.layers.3.mixer.conv1d.output_scale"; "" if the point has none.
std::string scale_tensor_name(Arch a, int layer, const std::string& point);

}  // namespace mambaq
