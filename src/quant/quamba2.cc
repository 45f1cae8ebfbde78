// Quamba2 (Chiang et al., 2025; ../shared/reference/quamba2.md): W4A8, W4A16 and W8A8 for Mamba2
// (the weight parts also for Mamba1).
//   - The residual stream is rotated by a Hadamard matrix: the embedding rows are rotated, every
//     block norm's weight is folded into its in_proj and the final norm's into the LM head
//     (RMSNorm with unit weight commutes with an orthonormal rotation), out_proj is rotated on
//     its output side; with Quamba's H^T fused on its input side, the only online transform left
//     is the Hadamard on out_proj's input.
//   - Weights: 4 bits in groups of `group_size` input columns (packed S4), or 8 bits per tensor
//     with one scale per in_proj output split (z | x | B | C | dt), as the reference; conv1d
//     per tensor (int8) when activations are int8, float otherwise; GPTQ for in_proj and
//     out_proj (and the LM head) with --gptq.
//   - Activations: int8 static scales (A8) as Quamba, or float (A16: no calibration).
//   - Embedding (per-row scales) and LM head optionally quantized at the weight bits.
// Departures from the reference code, each for the paper's intent: symmetric 4-bit codes
// ([-7, 7], scale max/7; the reference clips positive maxima to 7/7.5), the embedding's row scale
// from max |x| (the reference uses the signed max, clipping negative outliers), fp32 scale
// arithmetic (the reference's is fp16 in places). docs/quamba2.md lists them with the rest.
#include <algorithm>

#include "kernels/hadamard.h"
#include "kernels/wquant.h"
#include "mambaq/error.h"
#include "quant/recipe.h"

namespace mambaq {

namespace {

std::vector<float> copy_of(const float* p, int64_t n) { return std::vector<float>(p, p + n); }

// x -> H x for every row of W {rows, n}: W H^T.
void rotate_rows(std::vector<float>& W, int rows, int n) { hadamard_fuse_right(W.data(), rows, n); }

// {rows, cols} <- H {rows, rows} x W: rotate every column.
void rotate_cols(std::vector<float>& W, int rows, int cols) {
  std::vector<float> t(W.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t[size_t(c) * rows + r] = W[size_t(r) * cols + c];
  hadamard_fuse_right(t.data(), cols, rows);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) W[size_t(r) * cols + c] = t[size_t(c) * rows + r];
}

// W diag(g): each input column times the norm weight.
void fold_norm(std::vector<float>& W, int rows, int cols, const float* g) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) W[size_t(r) * cols + c] *= g[c];
}

Weight ones(int n) { return Weight::from_vector(std::vector<float>(size_t(n), 1.f), {n}); }

QTensor fq(std::vector<float> v, std::vector<int64_t> shape) {
  return QTensor::from_weight(Weight::from_vector(std::move(v), std::move(shape)));
}

class Quamba2 final : public Recipe {
 public:
  const char* name() const override { return "quamba2"; }

  void validate(const ModelConfig& cfg, const QuantMeta& o) const override {
    if (o.w_bits != 4 && o.w_bits != 8) fail_option("w_bits", "w_bits {}: the quamba2 recipe quantizes weights to 4 or 8 bits", o.w_bits);
    if (o.a_bits != 8 && o.a_bits != 16)
      fail_option("a_bits", "a_bits {}: the quamba2 recipe keeps activations in 8 bits or in float (16)", o.a_bits);
    if (o.w_bits == 8 && o.a_bits == 16)
      fail_option("a_bits", "a_bits 16 with w_bits 8: W8A16 is not a Quamba2 precision (W4A8, W4A16, W8A8)");
    if (!o.layers.empty() && int(o.layers.size()) != cfg.n_layer)
      fail_option("layer_config", "layer_config: {} layer precisions for a model of {} layers", o.layers.size(), cfg.n_layer);
    if (o.group_size < 32 || o.group_size % 32)
      fail_option("group_size", "group_size {}: must be a positive multiple of 32", o.group_size);
    if (o.rotate_residual && !cfg.rms_norm)
      fail("{}: rms_norm false: the quamba2 recipe rotates the residual stream, which a LayerNorm (mean subtraction) "
           "does not commute with; this model needs RMSNorm", cfg.source);
    if (o.rotate_residual && !hadamard_supported(cfg.d_model))
      fail("{}: d_model {} has no Hadamard transform (needs m * 2^k, m in 1, 12, 20, 28, 40)", cfg.source, cfg.d_model);
    if (!hadamard_supported(cfg.d_inner))
      fail("{}: d_inner {} has no Hadamard transform (needs m * 2^k, m in 1, 12, 20, 28, 40)", cfg.source, cfg.d_inner);
    bool w4 = o.w_bits == 4;
    for (const auto& l : o.layers) w4 |= l.w_bits == 4;
    if (w4 && (!s4_supported(cfg.d_model, o.group_size) || !s4_supported(cfg.d_inner, o.group_size)))
      fail("{}: 4-bit weights need d_model ({}) and d_inner ({}) to be multiples of 32", cfg.source, cfg.d_model,
           cfg.d_inner);
    if (o.group_heads && cfg.arch == Arch::Mamba1)
      fail_option("group_heads", "group_heads: Mamba1 has no heads to group (the reference raises NotImplementedError); leave it out");
    if (o.grouped_percentile && !o.group_heads)
      fail_option("grouped_percentile", "grouped_percentile: needs group_heads (without it x and the state already use "
                  "the percentile observer)");
    if (o.group_heads && !o.any_a8())
      fail_option("group_heads", "group_heads: with a_bits 16 no activation is quantized, so grouping heads changes "
                  "nothing (the reference ignores it); leave it out");
  }

  // With grouped heads, x, B, C and the state have grouped min-max observers instead (the
  // reference's Quamba2 uses no percentile observer at all); the pipeline chooses those.
  bool percentile(const ScalePoint& p) const override { return p.percentile; }

  // The residual stream in the basis h' = H h (quamba2.md §3).
  void transform(const ModelConfig& cfg, const QuantMeta& o, ModelWeights& w) const override {
    if (!o.rotate_residual) return;
    const int dm = cfg.d_model, V = cfg.padded_vocab;
    const bool tied = w.tied();
    MQ_ASSERT(w.embedding.f32() && w.lm_head.f32());
    auto e = copy_of(w.embedding.f32(), w.embedding.size());
    rotate_rows(e, V, dm);  // every row e -> H e
    for (auto& L : w.layers) {
      const int rows = L.in_proj.rows();
      auto in = copy_of(L.in_proj.f32(), L.in_proj.size());
      fold_norm(in, rows, dm, L.norm.data);
      rotate_rows(in, rows, dm);  // W diag(g) H^T reads H h
      L.in_proj = fq(std::move(in), L.in_proj.shape);
      L.norm = ones(dm);
      auto out = copy_of(L.out_proj.f32(), L.out_proj.size());
      rotate_cols(out, dm, L.out_proj.cols());  // H W: writes H out into the rotated stream
      L.out_proj = fq(std::move(out), L.out_proj.shape);
      if (L.out_proj_b.data) {
        auto b = copy_of(L.out_proj_b.data, dm);
        hadamard_transform(b.data(), 1, dm, dm);
        L.out_proj_b = Weight::from_vector(std::move(b), {dm});
      }
    }
    // the LM head reads the final norm of the rotated stream: W diag(g_f) H^T
    const bool unit_norm = std::all_of(w.norm_f.data, w.norm_f.data + dm, [](float g) { return g == 1.f; });
    QTensor emb = fq(std::move(e), {V, dm});
    if (tied && unit_norm) {
      w.lm_head = emb;  // still the same matrix: stays tied
    } else {
      auto h = copy_of(w.lm_head.f32(), w.lm_head.size());
      fold_norm(h, V, dm, w.norm_f.data);
      rotate_rows(h, V, dm);
      w.lm_head = fq(std::move(h), {V, dm});
    }
    w.embedding = std::move(emb);
    w.norm_f = ones(dm);
  }

  std::vector<Proj> gptq_projs(const ModelConfig& cfg, const QuantMeta& o, int l) const override {
    if (!o.gptq || o.layer(l).fp()) return {};
    // in_proj and out_proj as the reference; Mamba1's x_proj too, which this recipe quantizes at
    // the weight bits (the reference leaves it to round-to-nearest); dt_proj stays 8-bit RTN
    if (cfg.arch == Arch::Mamba1) return {kInProj, kXProj, kOutProj};
    return {kInProj, kOutProj};
  }

  void quantize_layer(const ModelConfig& cfg, const QuantMeta& o, int l, const LayerWeights& fp, LayerWeights& out,
                      const WeightQuantizer& wq) const override {
    const LayerPrecision p = o.layer(l);
    if (p.fp()) return;  // FP16 in a --layer-config: float weights, no online transform
    const bool a8 = p.a_bits == 8;
    WeightSpec w4{4, Granularity::Group, o.group_size, {}}, w8{8, Granularity::Tensor, 0, {}};
    const WeightSpec& ws = p.w_bits == 4 ? w4 : w8;
    WeightSpec in = ws;
    if (p.w_bits == 8 && cfg.arch == Arch::Mamba2) {  // one scale per output split, as the reference
      const int di = cfg.d_inner, GN = cfg.ngroups * cfg.d_state;
      in.splits = {0, di, 2 * di, 2 * di + GN, 2 * di + 2 * GN, cfg.in_proj_dim()};
    }
    out.in_proj = wq(kInProj, fp.in_proj.f32(), fp.in_proj.rows(), fp.in_proj.cols(), in);
    if (a8) out.conv_w = quantize_weight(fp.conv_w.f32(), fp.conv_w.rows(), fp.conv_w.cols(), Granularity::Tensor, 8);
    if (cfg.arch == Arch::Mamba1) {
      out.x_proj = wq(kXProj, fp.x_proj.f32(), fp.x_proj.rows(), fp.x_proj.cols(), ws);
      // dt_proj's dt_rank columns are too few for 4-bit groups: 8 bits as the reference's W4A8
      // (W8A8 dt_proj), float with float activations (its W4A16 keeps an fp16 dt_proj)
      if (a8) out.dt_proj_w = quantize_weight(fp.dt_proj_w.f32(), fp.dt_proj_w.rows(), fp.dt_proj_w.cols(), Granularity::Tensor, 8);
    }
    std::vector<float> v = copy_of(fp.out_proj.f32(), fp.out_proj.size());
    hadamard_fuse_right(v.data(), fp.out_proj.rows(), fp.out_proj.cols());  // W H^T: out_proj then reads H y
    out.out_proj = wq(kOutProj, v.data(), fp.out_proj.rows(), fp.out_proj.cols(), ws);
    out.out_proj_rotated = true;
  }

  void quantize_ends(const ModelConfig& cfg, const QuantMeta& o, const ModelWeights& fp, ModelWeights& out,
                     const WeightQuantizer& wq) const override {
    const int dm = cfg.d_model, V = cfg.padded_vocab;
    if (o.quantize_embedding)  // one scale per row; a token dequantizes its row
      out.embedding = o.w_bits == 4 ? quantize_weight(fp.embedding.f32(), V, dm, Granularity::Group, 4, dm)
                                    : quantize_weight(fp.embedding.f32(), V, dm, Granularity::Channel, 8);
    if (o.quantize_lm_head) {
      const WeightSpec s = o.w_bits == 4 ? WeightSpec{4, Granularity::Group, o.group_size, {}}
                                         : WeightSpec{8, Granularity::Tensor, 0, {}};  // per tensor, as the reference
      out.lm_head = wq(kProjs, fp.lm_head.f32(), V, dm, s);
    } else if (o.quantize_embedding && fp.tied()) {
      out.lm_head = fp.lm_head;  // the float head keeps its own copy
    }
  }
};

}  // namespace

void apply_quamba2_preset(QuantMeta& m, const std::string& p, const ModelConfig& cfg) {
  if (p != "w8a8" && p != "w4a8" && p != "w4a16") fail_option("preset", "preset '{}': expected w8a8, w4a8 or w4a16", p);
  m.recipe = "quamba2";
  m.preset = p;
  m.w_bits = p == "w8a8" ? 8 : 4;
  m.a_bits = p == "w4a16" ? 16 : 8;
  m.granularity = m.w_bits == 4 ? Granularity::Group : Granularity::Tensor;
  m.rotate_residual = true;
  m.gptq = m.gptq || p != "w8a8";
  m.quantize_embedding = m.quantize_lm_head = true;
  m.group_heads = m.group_heads || (cfg.arch == Arch::Mamba2 && m.any_a8());
}

const Recipe& quamba2_recipe() {
  static const Quamba2 r;
  return r;
}

}  // namespace mambaq
