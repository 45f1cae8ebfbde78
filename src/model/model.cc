// A Model is data: config, weights in their formats, the quantization record. Running it is
// model/session.cc's business.
#include "mambaq/model.h"

#include "model/quant_state.h"

namespace mambaq {

std::unique_ptr<Model> Model::from_weights(const ModelConfig& cfg, ModelWeights w, std::vector<TensorInfo> info,
                                           std::shared_ptr<const QuantState> q) {
  auto m = std::unique_ptr<Model>(new Model());
  m->cfg_ = cfg;
  m->w_ = std::move(w);
  m->info_ = std::move(info);
  m->q_ = std::move(q);
  return m;
}

bool Model::quantized_head() const { return q_ && q_->meta.quantize_lm_head; }

}  // namespace mambaq
