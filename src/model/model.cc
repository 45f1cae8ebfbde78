// The backbone shared by both architectures: embedding -> n_layer x (norm -> mixer -> residual add)
// -> final norm. Sequences are packed back to back ({T, d_model} with T = sum of lengths) so the
// projections run as large matrix products; conv and scan respect the sequence boundaries. How
// each op computes is the execution plan's business (model/exec.h); nothing here names a device
// or a precision.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/workspace.h"
#include "mambaq/error.h"
#include "mambaq/model.h"
#include "model/exec.h"
#include "model/mixers.h"
#include "model/plan.h"
#include "model/quant_state.h"
#include "kernels/wquant.h"

namespace mambaq {

std::unique_ptr<Model> Model::from_weights(const ModelConfig& cfg, ModelWeights w, std::vector<TensorInfo> info,
                                           std::shared_ptr<const QuantState> q) {
  auto m = std::unique_ptr<Model>(new Model());
  m->cfg_ = cfg;
  m->w_ = std::move(w);
  m->info_ = std::move(info);
  m->q_ = std::move(q);
  m->set_mode(m->q_ ? ExecMode::Int8 : ExecMode::FP32);
  return m;
}

ModelWeights& Model::weights_mut() {
  plan_.reset();  // resolved against the old weights
  return w_;
}

ExecMode Model::mode() const { return plan().mode; }
unsigned Model::fp_ops() const { return plan().fp_ops; }
const ExecPlan& Model::plan() const {
  if (!plan_) fail("internal error: the model's weights changed after its plan was made (call set_mode)");
  return *plan_->plan;
}

void Model::set_plan(ExecPlan plan, const Model* fp) { plan_ = prepare_plan(cfg_, w_, q_.get(), std::move(plan), fp); }

void Model::set_mode(ExecMode m) {
  if (m != ExecMode::FP32 && !q_)
    fail_option("mode", "mode {}: the model is not quantized (make one with `mambaq quantize`, or run it in mode fp32)", mode_name(m));
  set_plan(make_plan(m, 0, cfg_.n_layer, quantized_head()), nullptr);
}

void Model::set_fp_ops(unsigned mask, const Model* fp) {
  if (mask == 0) return;
  if (mode() != ExecMode::Fake)
    fail_option("fp_ops", "fp_ops runs in the fake-quant simulation (mode fake), not in mode {}", mode_name(mode()));
  if ((mask & kFpNorm) && cfg_.arch == Arch::Mamba1)
    fail_option("fp_ops", "fp_ops norm: a Mamba1 model has no quantized norm input (its norms always run in FP32); leave it out");
  if ((mask & kFpHead) && !quantized_head() && !(q_ && q_->meta.quantize_embedding))
    fail_option("fp_ops", "fp_ops head: this model's LM head and embedding are not quantized (the {} recipe keeps them "
         "in FP32 without --quantize-lm-head / --quantize-embedding), so there is nothing to keep in float; leave it out",
         q_ ? q_->meta.recipe : "fp");
  // a rotated model (Quamba2) takes float weights from the FP model in its basis
  // (quant/quantized.h fp_in_quantized_basis), whose block norms are folded to ones
  if ((mask & (kFpLinear | kFpConv | kFpHadamard | kFpHead)) && q_ && q_->meta.rotate_residual && fp &&
      !std::all_of(fp->weights().layers[0].norm.data, fp->weights().layers[0].norm.data + cfg_.d_model,
                   [](float g) { return g == 1.f; }))
    fail_option("fp_ops", "fp_ops {}: this model's weights are rotated by the {} recipe; the FP model must be brought "
         "into its basis first (fp_in_quantized_basis)", fp_ops_str(mask & (kFpLinear | kFpConv | kFpHadamard | kFpHead)),
         q_->meta.recipe);
  set_plan(make_plan(ExecMode::Fake, mask, cfg_.n_layer, quantized_head()), fp);
}

// The block and final norms: RMSNorm, or LayerNorm with bias (state-spaces "rms_norm": false).
void Model::block_norm(const float* x, const Weight& w, const Weight& b, float* out, int T) const {
  const Backend& k = default_backend();
  if (cfg_.rms_norm)
    k.rmsnorm(x, w.data, out, T, cfg_.d_model, cfg_.norm_eps);
  else
    k.layernorm(x, w.data, b.data, out, T, cfg_.d_model, cfg_.norm_eps);
}

// NaN or Inf never leaves the forward pass as a result: the first layer whose output holds one
// is named (a cheap pass over {T, d_model}, next to the layer's own work).
void Model::check_finite(const float* x, int T, int layer, const char* what) const {
  const int64_t i = first_non_finite(x, int64_t(T) * cfg_.d_model);
  if (i < 0) return;
  const std::string where = layer < 0 ? std::string(what) : fmt::format("layer {} {}", layer, what);
  fail("non-finite value ({}) first appears in the {} ({} mode, token {} of the batch): the weights{} overflow on "
       "this input", x[i], where, mode_name(mode()), i / cfg_.d_model, q_ ? " or quantization scales" : "");
}

namespace {
std::vector<int> offsets(std::span<const int> lens) {
  std::vector<int> offs(lens.size() + 1, 0);
  for (size_t s = 0; s < lens.size(); ++s) {
    MQ_ASSERT(lens[s] >= 0);
    offs[s + 1] = offs[s] + lens[s];
  }
  return offs;
}
}  // namespace

void Model::embed(std::span<const int32_t> tokens, float* r) const {
  const int dm = cfg_.d_model;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int32_t id = tokens[t];
    if (id < 0 || id >= cfg_.padded_vocab)
      fail("token id {} is outside the model's vocabulary [0, {})", id, cfg_.padded_vocab);
    if (const float* e = plan_->emb_fw.data ? plan_->emb_fw.data : w_.embedding.f32())
      std::memcpy(r + t * size_t(dm), e + size_t(id) * dm, sizeof(float) * size_t(dm));
    else
      dequantize_row(w_.embedding, id, r + t * size_t(dm));  // a quantized embedding: one row per token
  }
}

void Model::forward(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                    float* hidden, Tap* tap) const {
  const int dm = cfg_.d_model;
  const std::vector<int> offs = offsets(lens);
  const int T = offs.back();
  MQ_ASSERT(size_t(T) == tokens.size());
  if (T == 0) return;
  // r: the residual stream {T, d_model}
  float* r = scratch(kSlotResidual, size_t(T) * dm);
  embed(tokens, r);
  run_layers(r, offs, 0, cfg_.n_layer, states, tap);
  block_norm(r, w_.norm_f, w_.norm_f_b, hidden, T);
  check_finite(hidden, T, -1, "final norm output");
  Exec X(cfg_, *plan_, default_backend(), tap, offs);
  X.set_layer(-1, nullptr, nullptr, nullptr, nullptr, nullptr);
  X.point("lm_head:input", Act::floats(hidden, T, dm, dm), kSlotQIn);
  if (states)
    for (size_t s = 0; s < lens.size(); ++s)
      if (states[s]) states[s]->pos += lens[s];
}

void Model::forward_layers(float* residual, std::span<const int> lens, int l0, int l1, Tap* tap) const {
  MQ_ASSERT(0 <= l0 && l0 <= l1 && l1 <= cfg_.n_layer);
  const std::vector<int> offs = offsets(lens);
  if (offs.back() == 0) return;
  run_layers(residual, offs, l0, l1, nullptr, tap);
}

void Model::final_norm(const float* residual, int T, float* hidden) const {
  block_norm(residual, w_.norm_f, w_.norm_f_b, hidden, T);
}

void Model::run_layers(float* r, std::span<const int> offs, int l0, int l1, SeqState* const* states, Tap* tap) const {
  const ExecPlan& plan = this->plan();
  const int dm = cfg_.d_model, T = offs.back();
  Exec X(cfg_, *plan_, default_backend(), tap, offs);
  float* x = scratch(kSlotNormed, size_t(T) * dm);
  float* mix = scratch(kSlotMixerOut, size_t(T) * dm);
  const size_t nseq = offs.size() - 1;
  std::vector<float*> conv_f(nseq, nullptr), ssm_f(nseq, nullptr);
  std::vector<int8_t*> conv_q(nseq, nullptr), ssm_q(nseq, nullptr);
  std::vector<char> exact(nseq, 0);
  for (size_t s = 0; s < nseq && states; ++s) exact[s] = states[s] && states[s]->exact;
  X.set_exact(exact.data());
  for (int l = l0; l < l1; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    // each sequence's state, in the format this layer's plan keeps it
    const bool conv8 = plan.at(l, OpKind::Conv) == Prec::Int8, ssm8 = plan.at(l, OpKind::Ssm) == Prec::Int8;
    std::fill(conv_f.begin(), conv_f.end(), nullptr), std::fill(ssm_f.begin(), ssm_f.end(), nullptr);
    std::fill(conv_q.begin(), conv_q.end(), nullptr), std::fill(ssm_q.begin(), ssm_q.end(), nullptr);
    for (size_t s = 0; s < nseq && states; ++s) {
      SeqState* st = states[s];
      if (!st) continue;
      auto pick = [&](auto& f, auto& q, bool int8, auto& fp, auto& qp) {
        const bool ok = int8 ? q.size() == size_t(cfg_.n_layer) && !q[size_t(l)].empty()
                             : f.size() == size_t(cfg_.n_layer) && !f[size_t(l)].empty();
        if (!ok)
          fail("internal error: sequence state made for another execution plan (make states after set_mode)");
        if (int8) qp[s] = q[size_t(l)].data(); else fp[s] = f[size_t(l)].data();
      };
      pick(st->conv, st->conv_q, conv8, conv_f, conv_q);
      pick(st->ssm, st->ssm_q, ssm8 && !st->exact, ssm_f, ssm_q);
    }
    block_norm(r, L.norm, L.norm_b, x, T);
    X.set_layer(l, &L, conv_f.data(), conv_q.data(), ssm_f.data(), ssm_q.data());
    if (cfg_.arch == Arch::Mamba1)
      mixer_mamba1(X, cfg_, L, x, mix);
    else
      mixer_mamba2(X, cfg_, L, x, mix);
    if (tap) tap->on(l, kTapMixerOut, mix, T, dm, offs);
    X.k.add(r, mix, size_t(T) * dm);
    if (tap) tap->on(l, kTapBlockOut, r, T, dm, offs);
    check_finite(r, T, l, "block output");
  }
}

bool Model::quantized_head() const { return q_ && q_->meta.quantize_lm_head; }

void Model::lm_head(const float* hidden, int rows, float* logits) const {
  const Backend& k = default_backend();
  const QTensor& W = w_.lm_head;
  const int V = cfg_.padded_vocab, dm = cfg_.d_model;
  const Prec p = plan().at(-1, OpKind::Head);
  const TapExec* te = plan_->head.tap("lm_head:input");
  const float s = te && !te->uses.empty() ? te->uses[0].scale : 0.f;
  if (plan_->head_fw.data && p == Prec::F32) {  // fp32 / fake of a quantized head, or --fp-ops head
    k.gemm(rows, V, dm, hidden, dm, plan_->head_fw.data, nullptr, logits, V);
  } else if (W.f32()) {
    k.gemm(rows, V, dm, hidden, dm, W.f32(), nullptr, logits, V);
  } else if (p == Prec::Int8 && s > 0) {  // W8A8 / W4A8: the hidden state as int8 codes
    int8_t* q = scratch_i8(kSlotQHead, size_t(rows) * dm);
    k.quantize(hidden, rows, dm, dm, s, q, dm);
    if (W.s8())
      k.gemm_s8(rows, V, dm, q, dm, s, W.s8(), W.scales.data(), W.granularity == Granularity::Channel, nullptr, logits, V);
    else
      k.gemm_s8w4(rows, V, dm, q, dm, s, W.s4(), W.scales.data(), W.group, nullptr, logits, V);
  } else if (p == Prec::Int8 && W.s4()) {  // W4A16
    k.gemm_w4(rows, V, dm, hidden, dm, W.s4(), W.scales.data(), W.group, nullptr, logits, V);
  } else {  // fp32 / fake: the dequantized weights (fake: `hidden` was quantize-dequantized by forward)
    MQ_ASSERT(plan_->head_fw.data);
    k.gemm(rows, V, dm, hidden, dm, plan_->head_fw.data, nullptr, logits, V);
  }
  // The inputs are finite (checked in forward) and so are the weights (checked at load); only an
  // overflow of the dot products is left. Checked for the few rows of decoding and `logits`;
  // scoring checks its log-likelihoods instead of a second pass over {rows, vocab}.
  if (rows <= 16) {
    const int64_t i = first_non_finite(logits, int64_t(rows) * cfg_.padded_vocab);
    if (i >= 0) fail("non-finite logit ({}) for token id {}: the LM head overflows on this input", logits[i], i % cfg_.padded_vocab);
  }
}

size_t Model::weight_bytes() const {
  // What a decoded token reads: each projection in the format its plan runs (int8 codes, or
  // floats), the other tensors as float, the embedding once (tied LM head).
  plan();  // fails clearly if the weights changed since the plan was made
  size_t n = 0;
  auto f = [&](const Weight& w) { n += w.data ? size_t(w.size()) * 4 : 0; };
  n += w_.embedding.bytes();
  f(w_.norm_f), f(w_.norm_f_b);
  if (!w_.tied()) {
    if (plan_->head_fw.data) f(plan_->head_fw); else n += w_.lm_head.bytes();
  }
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const auto& L = w_.layers[l];
    for (const Weight* x : {&L.norm, &L.norm_b, &L.in_proj_b, &L.conv_b, &L.dt_proj_b, &L.dt_bias, &L.A_log, &L.D, &L.gnorm,
                            &L.out_proj_b})
      f(*x);
    for (int p = 0; p < kProjs; ++p) {
      const Weight& fw = plan_->layers[l].fw[size_t(p)];
      if (fw.data) f(fw); else n += L.proj(Proj(p)).bytes();
    }
  }
  return n;
}

SeqState Model::new_state(bool exact) const {
  const ExecPlan& plan = this->plan();
  SeqState s;
  s.exact = exact;
  const size_t L = size_t(cfg_.n_layer), conv = size_t(cfg_.d_conv - 1) * cfg_.conv_dim(), ssm = cfg_.ssm_state_size();
  s.conv.resize(L), s.ssm.resize(L), s.conv_q.resize(L), s.ssm_q.resize(L);
  for (size_t l = 0; l < L; ++l) {
    if (plan.at(int(l), OpKind::Conv) == Prec::Int8) s.conv_q[l].assign(conv, 0); else s.conv[l].assign(conv, 0.f);
    if (plan.at(int(l), OpKind::Ssm) == Prec::Int8 && !exact) s.ssm_q[l].assign(ssm, 0); else s.ssm[l].assign(ssm, 0.f);
  }
  return s;
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
