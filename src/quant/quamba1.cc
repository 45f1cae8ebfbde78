// Quamba (W8A8): static per-tensor activation scales (percentile on the SSM input and the state,
// min-max elsewhere), int8 weights by round-to-nearest (per tensor as the reference, or per
// channel), conv1d per tensor, H^T fused into out_proj with the Hadamard applied online to its
// input; embedding, norms and LM head stay in FP32.
#include "kernels/hadamard.h"
#include "kernels/wquant.h"
#include "mambaq/error.h"
#include "quant/recipe.h"

namespace mambaq {

namespace {

QTensor rtn(const QTensor& w, Granularity g, int bits, bool fuse_hadamard = false) {
  MQ_ASSERT(w.format == WFormat::F32);
  const int rows = w.rows(), cols = w.cols();
  if (!fuse_hadamard) return quantize_weight(w.f32(), rows, cols, g, bits);
  std::vector<float> v(w.f32(), w.f32() + w.size());
  hadamard_fuse_right(v.data(), rows, cols);  // W H^T: out_proj then reads H y
  return quantize_weight(v.data(), rows, cols, g, bits);
}

class Quamba1 final : public Recipe {
 public:
  const char* name() const override { return "quamba1"; }

  void validate(const ModelConfig& cfg, const QuantMeta& o) const override {
    if (o.w_bits != 8) fail_option("w_bits", "w_bits {}: the quamba1 recipe quantizes weights to 8 bits", o.w_bits);
    if (o.a_bits != 8) fail_option("a_bits", "a_bits {}: the quamba1 recipe quantizes activations to 8 bits", o.a_bits);
    if (o.granularity == Granularity::Group)
      fail_option("weight_granularity", "weight_granularity group: the quamba1 recipe has tensor or channel weight scales");
    if (cfg.arch == Arch::Mamba2 && cfg.ngroups != 1)
      fail("{}: ngroups {}: the quamba1 recipe quantizes Mamba2 without head grouping (ngroups 1)", cfg.source,
           cfg.ngroups);
    if (!hadamard_supported(cfg.d_inner))
      fail("{}: d_inner {} has no Hadamard transform (needs m * 2^k, m in 1, 12, 20, 28, 40)", cfg.source,
           cfg.d_inner);
  }

  bool percentile(const ScalePoint& p) const override { return p.percentile; }

  void quantize_layer(const ModelConfig& cfg, const QuantMeta& o, const LayerWeights& fp,
                      LayerWeights& out) const override {
    out.in_proj = rtn(fp.in_proj, o.granularity, o.w_bits);
    out.conv_w = rtn(fp.conv_w, Granularity::Tensor, o.w_bits);  // the reference: one scale for the conv
    if (cfg.arch == Arch::Mamba1) {
      out.x_proj = rtn(fp.x_proj, o.granularity, o.w_bits);
      out.dt_proj_w = rtn(fp.dt_proj_w, o.granularity, o.w_bits);
    }
    out.out_proj = rtn(fp.out_proj, o.granularity, o.w_bits, /*fuse_hadamard=*/true);
    out.out_proj_rotated = true;
  }
};

}  // namespace

const Recipe& recipe(const std::string& name) {
  static const Quamba1 quamba1;
  if (name == quamba1.name()) return quamba1;
  fail_option("recipe", "recipe '{}' is not in this build (recipes: quamba1)", name);
}

std::vector<std::string> recipe_names() { return {"quamba1"}; }

}  // namespace mambaq
