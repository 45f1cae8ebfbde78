// The tensors of a model, one table per layout: their names, stored shapes and where each goes
// in ModelWeights. Loading (model/weights.cc) and saving (quant/quantized.cc) both walk this list.
//   state-spaces  backbone.embedding.weight, backbone.layers.N.mixer.*, backbone.norm_f.*, lm_head.weight
//   hf            the same names with backbone.embeddings.weight
//   quantized     state-spaces names; the projections are int8 codes with a `.weight_scale`
//                 beside them, and every activation scale is a tensor (model/points.h)
#pragma once
#include <string>
#include <vector>

#include "mambaq/model.h"

namespace mambaq {

enum class Layout { StateSpaces, HF, Quantized };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;              // as stored (conv1d: {conv_dim, 1, d_conv})
  int layer = -1;                          // -1: not a layer's
  Weight ModelWeights::*model = nullptr;   // norm_f, norm_f_b (the head is bound apart)
  Weight LayerWeights::*field = nullptr;   // a float tensor of the layer, or
  Proj proj = kProjs;                      // a projection
  bool embedding = false;                  // the embedding (a QTensor of ModelWeights)
};

// Every tensor the config implies, except the LM head (tied or not: see weights.cc).
std::vector<TensorSpec> tensor_specs(const ModelConfig& cfg, Layout layout);
std::string layer_prefix(int layer);  // "backbone.layers.N."

}  // namespace mambaq
