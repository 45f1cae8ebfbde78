// Quamba (W8A8): static per-tensor activation scales (percentile on the SSM input and the state,
// min-max elsewhere), int8 weights by round-to-nearest (per tensor as the reference, or per
// channel; in_proj and out_proj by GPTQ with --gptq), conv1d per tensor, H^T fused into out_proj
// with the Hadamard applied online to its input; embedding, norms and LM head stay in FP32.
#include "kernels/hadamard.h"
#include "kernels/wquant.h"
#include "mambaq/error.h"
#include "quant/recipe.h"

namespace mambaq {

namespace {

QTensor rtn(const QTensor& w, Granularity g, int bits) {
  MQ_ASSERT(w.format == WFormat::F32);
  return quantize_weight(w.f32(), w.rows(), w.cols(), g, bits);
}

class Quamba1 final : public Recipe {
 public:
  const char* name() const override { return "quamba1"; }

  void validate(const ModelConfig& cfg, const QuantMeta& o) const override {
    if (o.w_bits != 8)
      fail_option("w_bits", "w_bits {}: the quamba1 recipe quantizes weights to 8 bits{}", o.w_bits,
                  o.w_bits == 4 ? "; 4-bit weights are Quamba2's: add --recipe quamba2 (or --preset w4a8 / w4a16)" : "");
    if (o.a_bits != 8)
      fail_option("a_bits", "a_bits {}: the quamba1 recipe quantizes activations to 8 bits{}", o.a_bits,
                  o.a_bits == 16 ? "; float activations (W4A16) are Quamba2's: add --recipe quamba2 --w_bits 4 (or "
                                   "--preset w4a16)"
                                 : "");
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

  std::vector<Proj> gptq_projs(const ModelConfig&, const QuantMeta& o, int) const override {
    if (!o.gptq) return {};
    return {kInProj, kOutProj};  // as the reference: x_proj and dt_proj keep round-to-nearest
  }

  void quantize_layer(const ModelConfig& cfg, const QuantMeta& o, int, const LayerWeights& fp, LayerWeights& out,
                      const WeightQuantizer& wq) const override {
    const WeightSpec spec{o.w_bits, o.granularity, 0, {}};
    out.in_proj = wq(kInProj, fp.in_proj.f32(), fp.in_proj.rows(), fp.in_proj.cols(), spec);
    out.conv_w = rtn(fp.conv_w, Granularity::Tensor, o.w_bits);  // the reference: one scale for the conv
    if (cfg.arch == Arch::Mamba1) {
      out.x_proj = rtn(fp.x_proj, o.granularity, o.w_bits);
      out.dt_proj_w = rtn(fp.dt_proj_w, o.granularity, o.w_bits);
    }
    std::vector<float> v(fp.out_proj.f32(), fp.out_proj.f32() + fp.out_proj.size());
    hadamard_fuse_right(v.data(), fp.out_proj.rows(), fp.out_proj.cols());  // W H^T: out_proj then reads H y
    out.out_proj = wq(kOutProj, v.data(), fp.out_proj.rows(), fp.out_proj.cols(), spec);
    out.out_proj_rotated = true;
  }
};

}  // namespace

const Recipe& quamba1_recipe() {
  static const Quamba1 r;
  return r;
}

}  // namespace mambaq
