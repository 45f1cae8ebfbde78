#include "quant/gptq.h"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "mambaq/progress.h"
#include "mambaq/session.h"
#include "kernels/backend.h"
#include "kernels/hadamard.h"
#include "kernels/wquant.h"
#include "mambaq/error.h"

namespace mambaq {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void Hessian::add(const float* x, int rows, int ld) {
  // X^T X in chunks of 256 tokens through the float GEMM (exact enough: each chunk's sums have
  // 256 terms), accumulated in double in a fixed order
  constexpr int kChunk = 256;
  std::vector<float> xt(size_t(n) * kChunk), c(size_t(n) * n);
  const Backend& k = host_backend();  // host arithmetic on host rows
  for (int r0 = 0; r0 < rows; r0 += kChunk) {
    const int t = std::min(kChunk, rows - r0);
    for (int i = 0; i < t; ++i)
      for (int j = 0; j < n; ++j) xt[size_t(j) * t + i] = x[size_t(r0 + i) * ld + j];
    GemmArgs g;  // {n, t} x {n, t}^T
    g.M = n, g.N = n, g.K = t;
    g.A = {xt.data(), t, DType::F32, 0.f, nullptr};
    g.W.data = xt.data(), g.W.rows = n, g.W.cols = t;
    g.C = c.data(), g.ldc = n;
    k.gemm(k.ctx, g);
    for (size_t i = 0; i < c.size(); ++i) h[i] += double(c[i]);
  }
  tokens += rows;
}

std::vector<double> Hessian::matrix() const {
  std::vector<double> m(h.size());
  const double s = tokens > 0 ? 2.0 / double(tokens) : 0.0;
  for (size_t i = 0; i < h.size(); ++i) m[i] = h[i] * s;
  return m;
}

QTensor gptq_quantize(const float* Wf, int rows, int cols, const std::vector<double>& Hin, const WeightSpec& spec,
                      const GptqOptions& opt) {
  MQ_ASSERT(Hin.size() == size_t(cols) * cols);
  const int qmax = qmax_of(spec.bits);
  const bool grouped = spec.granularity == Granularity::Group && spec.splits.empty();
  const int group = grouped ? spec.group : cols;
  const int ng = grouped ? (cols + group - 1) / group : 1;
  MatD W(rows, cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) W(r, c) = Wf[size_t(r) * cols + c];
  MatD H = Eigen::Map<const MatD>(Hin.data(), cols, cols);
  // dead inputs (never nonzero): any code will do; weight 0
  for (int c = 0; c < cols; ++c)
    if (H(c, c) == 0) H(c, c) = 1, W.col(c).setZero();
  // scales: fixed up front (per tensor / channel / split, as round-to-nearest on W; groups under
  // act-order), or per group from the updated weights when the pass reaches the group
  std::vector<float> scales;
  if (!grouped || opt.act_order) {
    std::vector<float> w0(size_t(rows) * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) w0[size_t(r) * cols + c] = float(W(r, c));
    scales = quantize_rtn(w0.data(), rows, cols, spec).scales;
  } else {
    scales.assign(size_t(rows) * ng, 0.f);
  }
  const auto scale_at = [&](int r, int c) -> float {
    if (grouped) return scales[size_t(r) * ng + size_t(c / group)];
    return scales.size() == 1 ? scales[0] : scales[size_t(r)];
  };
  // column order
  std::vector<int> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int a, int b) { return H(a, a) > H(b, b); });
  MatD Wp(rows, cols), Hp(cols, cols);
  for (int j = 0; j < cols; ++j) Wp.col(j) = W.col(perm[size_t(j)]);
  for (int i = 0; i < cols; ++i)
    for (int j = 0; j < cols; ++j) Hp(i, j) = H(perm[size_t(i)], perm[size_t(j)]);
  Hp.diagonal().array() += opt.damp * Hp.diagonal().mean();
  // U: the upper Cholesky factor of H^-1
  Eigen::LLT<MatD> llt(Hp);
  if (llt.info() != Eigen::Success) fail("GPTQ: the damped Hessian is not positive definite (raise the damping)");
  const MatD Hinv = llt.solve(MatD::Identity(cols, cols));
  Eigen::LLT<MatD> llt2(Hinv);
  if (llt2.info() != Eigen::Success) fail("GPTQ: the inverse Hessian is not positive definite (raise the damping)");
  const MatD U = llt2.matrixU();
  std::vector<int8_t> codes(size_t(rows) * cols);
  const int B = std::max(1, opt.block);
  for (int i1 = 0; i1 < cols; i1 += B) {
    const int i2 = std::min(cols, i1 + B), nb = i2 - i1;
    MatD Err(rows, nb);
    for (int i = i1; i < i2; ++i) {
      const int c = perm[size_t(i)];  // original column
      if (grouped && !opt.act_order && c % group == 0)
        for (int r = 0; r < rows; ++r) {  // the group's scale from the updated weights
          double m = 0;
          for (int k = i; k < std::min(cols, i + group); ++k) m = std::max(m, std::abs(Wp(r, k)));
          scales[size_t(r) * ng + size_t(c / group)] = m > 0 ? float(m) / float(qmax) : 1.f;
        }
      const double d = U(i, i);
      for (int r = 0; r < rows; ++r) {
        const double w = Wp(r, i), s = scale_at(r, c);
        const double q = std::clamp(std::nearbyint(w / s), double(-qmax), double(qmax));
        codes[size_t(r) * cols + c] = int8_t(q);
        Err(r, i - i1) = (w - q * s) / d;
      }
      // spread the error over the rest of the block
      if (i + 1 < i2) Wp.block(0, i + 1, rows, i2 - i - 1).noalias() -= Err.col(i - i1) * U.block(i, i + 1, 1, i2 - i - 1);
    }
    if (i2 < cols) Wp.rightCols(cols - i2).noalias() -= Err * U.block(i1, i2, nb, cols - i2);
  }
  return make_qtensor(codes, rows, cols, spec.bits, spec.splits.empty() ? spec.granularity : Granularity::Channel,
                      grouped ? group : 0, std::move(scales));
}

namespace {

const char* input_tap(Proj p) {
  switch (p) {
    case kInProj: return "in_proj:input";
    case kXProj: return "x_proj:input";
    case kOutProj: return "out_proj:input";
    default: fail("internal error: GPTQ has no input tap for {}", proj_name(p));
  }
}

// Accumulates the Hessians of one layer's weights from its taps. out_proj's weight holds H^T
// (Quamba's fusion), so it sees the rotated input H y.
class HessianTap final : public Tap {
 public:
  HessianTap(int layer, const std::vector<Proj>& projs, const ModelConfig& cfg) : layer_(layer) {
    for (Proj p : projs) hs_.emplace(std::string(input_tap(p)), Hessian(tap_width(cfg, input_tap(p))));
  }
  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) override {
    if (layer != layer_) return;
    auto it = hs_.find(std::string(point));
    if (it == hs_.end()) return;
    if (point == "out_proj:input") {
      buf_.assign(data, data + size_t(rows) * cols);
      hadamard_transform(buf_.data(), rows, cols, cols);
      data = buf_.data();
    }
    it->second.add(data, rows, cols);
  }
  const Hessian& at(Proj p) const { return hs_.at(input_tap(p)); }

 private:
  int layer_;
  std::map<std::string, Hessian> hs_;
  std::vector<float> buf_;
};

// Samples packed into batches of at most `cap` tokens (a sample longer than cap is alone).
std::vector<std::pair<size_t, size_t>> batches(const std::vector<std::vector<int32_t>>& s, size_t cap) {
  std::vector<std::pair<size_t, size_t>> b;
  for (size_t i = 0; i < s.size();) {
    size_t j = i, n = 0;
    while (j < s.size() && (j == i || n + s[j].size() <= cap)) n += s[j++].size();
    b.push_back({i, j});
    i = j;
  }
  return b;
}

}  // namespace

void gptq_model(const Model& fp, const Recipe& r, const QuantMeta& meta, const std::vector<std::vector<int32_t>>& samples,
                const GptqOptions& opt, bool progress, ModelWeights& out) {
  const ModelConfig& cfg = fp.config();
  const int dm = cfg.d_model;
  if (samples.empty()) fail_option("gptq_data", "gptq_data: no samples");
  const auto bs = batches(samples, 8192);
  // the residual stream of every sample, advanced one layer at a time through the quantized layers
  std::vector<std::vector<float>> res(bs.size());
  std::vector<std::vector<int>> lens(bs.size());
  for (size_t b = 0; b < bs.size(); ++b) {
    std::vector<int32_t> toks;
    for (size_t i = bs[b].first; i < bs[b].second; ++i) {
      toks.insert(toks.end(), samples[i].begin(), samples[i].end());
      lens[b].push_back(int(samples[i].size()));
    }
    res[b].resize(toks.size() * size_t(dm));
    Session(fp, {.mode = ExecMode::FP32}).embed(toks, res[b].data());
  }
  ModelWeights cur = fp.weights();  // layers < l: quantized (run dequantized, in float)
  Progress bar("gptq", cfg.n_layer + 1, progress);
  std::vector<float> tmp;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::vector<Proj> projs = r.gptq_projs(cfg, meta, l);
    HessianTap ht(l, projs, cfg);
    if (!projs.empty()) {
      auto m = Model::from_weights(cfg, cur, {}, nullptr);
      Session S(*m);
      for (size_t b = 0; b < bs.size(); ++b) {  // inputs of layer l, the layer itself in float
        tmp = res[b];
        S.forward_layers(tmp.data(), lens[b], l, l + 1, &ht);
      }
    }
    const WeightQuantizer wq = [&](Proj p, const float* W, int rows, int cols, const WeightSpec& s) {
      if (std::find(projs.begin(), projs.end(), p) == projs.end()) return quantize_rtn(W, rows, cols, s);
      return gptq_quantize(W, rows, cols, ht.at(p).matrix(), s, opt);
    };
    r.quantize_layer(cfg, meta, l, fp.weights().layers[size_t(l)], out.layers[size_t(l)], wq);
    cur.layers[size_t(l)] = out.layers[size_t(l)];
    auto mq = Model::from_weights(cfg, cur, {}, nullptr);  // fp32 plan: the quantized weights dequantized
    Session Sq(*mq);
    for (size_t b = 0; b < bs.size(); ++b) Sq.forward_layers(res[b].data(), lens[b], l, l + 1);
    bar.add(1);
  }
  // the LM head: its input is the final norm of the quantized backbone
  Hessian hh(dm);
  if (meta.quantize_lm_head) {
    auto m = Model::from_weights(cfg, cur, {}, nullptr);
    Session S(*m);
    for (size_t b = 0; b < bs.size(); ++b) {
      const int T = int(res[b].size() / size_t(dm));
      tmp.resize(res[b].size());
      S.final_norm(res[b].data(), T, tmp.data());
      hh.add(tmp.data(), T, dm);
    }
  }
  const WeightQuantizer hq = [&](Proj p, const float* W, int rows, int cols, const WeightSpec& s) {
    if (p != kProjs || hh.tokens == 0) return quantize_rtn(W, rows, cols, s);
    return gptq_quantize(W, rows, cols, hh.matrix(), s, opt);
  };
  r.quantize_ends(cfg, meta, fp.weights(), out, hq);
  bar.add(1);
  bar.finish();
}

}  // namespace mambaq
