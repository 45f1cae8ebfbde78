// The backbone shared by both architectures: embedding -> n_layer x (RMSNorm -> mixer -> residual add)
// -> final RMSNorm. Sequences are packed back to back ({T, d_model} with T = sum of lengths) so the
// projections run as large matrix products; conv and scan respect the sequence boundaries.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "kernels/cpu/ops.h"
#include "mambaq/error.h"
#include "mambaq/model.h"
#include "quant/fake_quant.h"
#include "quant/hadamard.h"
#include "quant/quantized.h"

namespace mambaq {

// The block and final norms: RMSNorm, or LayerNorm with bias (state-spaces "rms_norm": false).
void Model::block_norm(const float* x, const Weight& w, const Weight& b, float* out, int T) const {
  if (cfg_.rms_norm)
    cpu::rmsnorm(x, w.data, out, T, cfg_.d_model, cfg_.norm_eps);
  else
    cpu::layernorm(x, w.data, b.data, out, T, cfg_.d_model, cfg_.norm_eps);
}

// NaN or Inf never leaves the forward pass as a result: the first layer whose output holds one
// is named (a cheap pass over {T, d_model}, next to the layer's own work).
void Model::check_finite(const float* x, int T, int layer, const char* what) const {
  const int64_t i = first_non_finite(x, int64_t(T) * cfg_.d_model);
  if (i < 0) return;
  const std::string where = layer < 0 ? std::string(what) : fmt::format("layer {} {}", layer, what);
  fail("non-finite value ({}) first appears in the {} ({} mode, token {} of the batch): the weights{} overflow on "
       "this input", x[i], where, mode_name(mode_), i / cfg_.d_model, q_ ? " or quantization scales" : "");
}

void Model::forward(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                    float* hidden, Tap* tap) const {
  const int dm = cfg_.d_model;
  std::vector<int> offs(lens.size() + 1, 0);
  for (size_t s = 0; s < lens.size(); ++s) {
    MQ_ASSERT(lens[s] >= 0);
    offs[s + 1] = offs[s] + lens[s];
  }
  const int T = offs.back();
  MQ_ASSERT(size_t(T) == tokens.size());
  if (T == 0) return;
  std::unique_ptr<FakeQuantTap> fake;
  std::unique_ptr<TapPair> chain;
  if (mode_ == ExecMode::Fake) {
    fake = std::make_unique<FakeQuantTap>(cfg_, q_->cal, q_->meta.a_bits, fp_ops_);
    chain = std::make_unique<TapPair>(fake.get(), tap);  // quantize first, then the caller sees it
    tap = chain.get();
  }
  const bool int8 = mode_ == ExecMode::Int8;
  // r: the residual stream {T, d_model}
  float* r = scratch(kSlotResidual, size_t(T) * dm);
  float* x = scratch(kSlotNormed, size_t(T) * dm);
  float* mix = scratch(kSlotMixerOut, size_t(T) * dm);
  for (int t = 0; t < T; ++t) {
    const int32_t id = tokens[size_t(t)];
    if (id < 0 || id >= cfg_.padded_vocab)
      fail("token id {} is outside the model's vocabulary [0, {})", id, cfg_.padded_vocab);
    std::memcpy(r + size_t(t) * dm, w_.embedding.data + size_t(id) * dm, sizeof(float) * size_t(dm));
  }
  const size_t nseq = lens.size();
  std::vector<float*> conv_st(nseq, nullptr), ssm_st(nseq, nullptr);
  std::vector<int8_t*> conv_q(nseq, nullptr), ssm_q(nseq, nullptr);
  if (states)
    for (size_t s = 0; s < nseq; ++s)
      if (states[s] && (int8 ? states[s]->ssm_q.size() : states[s]->ssm.size()) != size_t(cfg_.n_layer))
        fail("internal error: sequence state made for another execution mode (make states after set_mode)");
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    if (states)
      for (size_t s = 0; s < nseq; ++s)
        if (states[s]) {
          if (int8) {
            conv_q[s] = states[s]->conv_q[size_t(l)].data();
            ssm_q[s] = states[s]->ssm_q[size_t(l)].data();
          } else {
            conv_st[s] = states[s]->conv[size_t(l)].data();
            ssm_st[s] = states[s]->ssm[size_t(l)].data();
          }
        }
    block_norm(r, L.norm, L.norm_b, x, T);
    if (int8) {
      if (cfg_.arch == Arch::Mamba1)
        mixer_mamba1_int8(l, x, mix, T, offs, conv_q.data(), ssm_q.data());
      else
        mixer_mamba2_int8(l, x, mix, T, offs, conv_q.data(), ssm_q.data());
    } else if (cfg_.arch == Arch::Mamba1) {
      mixer_mamba1(l, x, mix, T, offs, conv_st.data(), ssm_st.data(), tap);
    } else {
      mixer_mamba2(l, x, mix, T, offs, conv_st.data(), ssm_st.data(), tap);
    }
    // The SSM state kept for the next call (fake mode quantizes it as int8 mode stores it).
    if (tap && !int8)
      for (size_t s = 0; s < nseq; ++s)
        if (ssm_st[s]) {
          const int one[2] = {0, 1};
          tap->on(l, "ssm_state", ssm_st[s], 1, int(cfg_.ssm_state_size()), one);
        }
    if (tap) tap->on(l, "mixer_out", mix, T, dm, offs);
#pragma omp parallel for schedule(static) if (T > 8)
    for (int t = 0; t < T; ++t)
#pragma omp simd
      for (int i = 0; i < dm; ++i) r[size_t(t) * dm + i] += mix[size_t(t) * dm + i];
    if (tap) tap->on(l, "block_out", r, T, dm, offs);
    check_finite(r, T, l, "block output");
  }
  block_norm(r, w_.norm_f, w_.norm_f_b, hidden, T);
  check_finite(hidden, T, -1, "final norm output");
  if (tap) tap->on(-1, "lm_head:input", hidden, T, dm, offs);
  if (states)
    for (size_t s = 0; s < lens.size(); ++s)
      if (states[s]) states[s]->pos += lens[s];
}

void Model::lm_head(const float* hidden, int rows, float* logits) const {
  cpu::gemm(rows, cfg_.padded_vocab, cfg_.d_model, hidden, cfg_.d_model, w_.lm_head.data, nullptr, logits,
            cfg_.padded_vocab);
  // The inputs are finite (checked in forward) and so are the weights (checked at load); only an
  // overflow of the dot products is left. Checked for the few rows of decoding and `logits`;
  // scoring checks its log-likelihoods instead of a second pass over {rows, vocab}.
  if (rows <= 16) {
    const int64_t i = first_non_finite(logits, int64_t(rows) * cfg_.padded_vocab);
    if (i >= 0) fail("non-finite logit ({}) for token id {}: the LM head overflows on this input", logits[i], i % cfg_.padded_vocab);
  }
}

const char* mode_name(ExecMode m) {
  switch (m) {
    case ExecMode::FP32: return "fp32";
    case ExecMode::Fake: return "fake";
    case ExecMode::Int8: return "int8";
  }
  return "?";
}

ExecMode parse_mode(const std::string& s) {
  if (s == "fp32") return ExecMode::FP32;
  if (s == "fake") return ExecMode::Fake;
  if (s == "int8") return ExecMode::Int8;
  fail("--mode: unknown execution mode '{}' (expected fp32, fake or int8)", s);
}

void Model::set_quantized(std::shared_ptr<const QuantizedModel> q) {
  q_ = std::move(q);
  set_mode(ExecMode::Int8);
}

// Float projections are held exactly when a float mode needs them: int8 reads only the int8
// codes, fp32 and fake a quantized model's dequantized weights.
void Model::set_mode(ExecMode m) {
  if (m != ExecMode::FP32 && !q_)
    fail("--mode {}: the model is not quantized (make one with `mambaq quantize`, or use --mode fp32)", mode_name(m));
  if (q_) {
    const bool held = !w_.layers.empty() && w_.layers[0].in_proj.data;
    if (m == ExecMode::Int8)
      for (auto& L : w_.layers) L.in_proj = L.conv_w = L.x_proj = L.dt_proj_w = L.out_proj = Weight{};
    else if (!held)
      for (int l = 0; l < cfg_.n_layer; ++l) dequantize_into(q_->layers[size_t(l)], cfg_, w_.layers[size_t(l)]);
  }
  hadamard_out_proj = q_ != nullptr;
  mode_ = m;
}

unsigned parse_fp_ops(const std::string& list) {
  static const std::pair<const char*, unsigned> kinds[] = {{"linear", kFpLinear}, {"conv", kFpConv},
                                                           {"ssm", kFpSsm},       {"norm", kFpNorm},
                                                           {"hadamard", kFpHadamard}, {"head", kFpHead}};
  unsigned m = 0;
  size_t i = 0;
  while (i <= list.size()) {
    const size_t j = std::min(list.find(',', i), list.size());
    const std::string t = list.substr(i, j - i);
    i = j + 1;
    if (t.empty()) continue;
    bool found = false;
    for (const auto& [n, b] : kinds)
      if (t == n) m |= b, found = true;
    if (!found) fail("--fp-ops: unknown op kind '{}' (linear, conv, ssm, norm, hadamard, head)", t);
  }
  return m;
}

std::string fp_ops_str(unsigned m) {
  std::string s;
  for (const auto& [n, b] : {std::pair{"linear", kFpLinear}, {"conv", kFpConv}, {"ssm", kFpSsm}, {"norm", kFpNorm},
                             {"hadamard", kFpHadamard}, {"head", kFpHead}})
    if (m & b) {
      if (!s.empty()) s.push_back(',');
      s.append(n);
    }
  return s;
}

void Model::set_fp_ops(unsigned mask, const Model* fp) {
  if (mask == 0) return;
  if (mode_ != ExecMode::Fake) fail("--fp-ops runs in the fake-quant simulation (mode fake), not in mode {}", mode_name(mode_));
  if (mask & (kFpLinear | kFpConv)) {
    if (!fp || fp->is_quantized())
      fail("--fp-ops {}: keeping linear/conv in FP32 needs the FP model's weights (an FP reference model)",
           fp_ops_str(mask));
    const auto& fc = fp->config();
    if (fc.arch != cfg_.arch || fc.n_layer != cfg_.n_layer || fc.d_model != cfg_.d_model || fc.d_inner != cfg_.d_inner ||
        fc.d_state != cfg_.d_state || fc.conv_dim() != cfg_.conv_dim())
      fail("--fp-ops: the FP model has other shapes than the quantized one");
    for (int l = 0; l < cfg_.n_layer; ++l) {
      LayerWeights& L = w_.layers[size_t(l)];
      const LayerWeights& F = fp->weights().layers[size_t(l)];
      if (mask & kFpConv) L.conv_w = F.conv_w;
      if (mask & kFpLinear) {
        L.in_proj = F.in_proj, L.x_proj = F.x_proj, L.dt_proj_w = F.dt_proj_w;
        // out_proj reads the rotated input H y: W H^T, in float
        std::vector<float> w(F.out_proj.data, F.out_proj.data + F.out_proj.size());
        hadamard_fuse_right(w.data(), int(F.out_proj.dim(0)), int(F.out_proj.dim(1)));
        L.out_proj = Weight::from_vector(std::move(w), F.out_proj.shape);
      }
    }
  }
  fp_ops_ = mask;
}

std::vector<float> Model::last_logits(std::span<const int32_t> tokens) const {
  if (tokens.empty()) fail("cannot compute logits of an empty prompt");
  const int T = int(tokens.size());
  std::vector<float> hidden(size_t(T) * cfg_.d_model);
  const int lens[1] = {T};
  forward(tokens, lens, nullptr, hidden.data());
  std::vector<float> logits(size_t(cfg_.padded_vocab));
  lm_head(hidden.data() + size_t(T - 1) * cfg_.d_model, 1, logits.data());
  return logits;
}

}  // namespace mambaq
