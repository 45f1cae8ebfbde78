// Exec: the ops the forward passes call, dispatched on the prepared plan, the formats of the
// activations and weights, and the backend.
#include "model/exec.h"

#include <algorithm>
#include <cmath>

#include "core/workspace.h"
#include "kernels/wquant.h"
#include "kernels/hadamard.h"
#include "mambaq/error.h"
#include "model/quant_state.h"

namespace mambaq {

namespace {

// The float weights a float op reads: the stored F32 values, or a quantized weight dequantized.
Weight float_view(const QTensor& t) {
  if (t.empty()) return {};
  if (t.format == WFormat::F32) return t.as_weight();
  return Weight::from_vector(dequantize_weight(t), t.shape);
}

Weight fused_right(const Weight& w) {  // W H^T, for an out_proj that reads the rotated input
  std::vector<float> v(w.data, w.data + w.size());
  hadamard_fuse_right(v.data(), int(w.dim(0)), int(w.dim(1)));
  return Weight::from_vector(std::move(v), w.shape);
}

// a16: the layer (or head) keeps its activations in float (W4A16, FP16 layers): no use quantizes.
void resolve_taps(const ModelConfig& cfg, const QuantState* q, int layer, const std::array<Prec, kOpKinds>& prec,
                  bool rotate, bool a16, LayerExec& le) {
  le.prec = prec;
  le.fake = std::find(prec.begin(), prec.end(), Prec::Fake) != prec.end();
  for (const auto& u : point_uses(cfg.arch)) {
    const ScalePoint* sp = find_scale_point(cfg.arch, u.scale);
    if (sp->head != (layer < 0)) continue;
    TapExec* te = nullptr;
    for (auto& t : le.taps)
      if (t.tap == u.tap) te = &t;
    if (!te) te = &le.taps.emplace_back(TapExec{u.tap, {}, {}, false, false, nullptr});
    const int width = tap_width(cfg, u.tap);
    const auto [c0, c1] = col_range(cfg, u.cols, width);
    Prec p = prec[unsigned(u.kind)];
    if (sp->hadamard && !rotate) p = Prec::F32;  // its scale belongs to the rotated values
    if (a16) p = Prec::F32;
    float s = 0;
    const PointScale* ps = nullptr;
    if (p != Prec::F32) {
      ps = q ? q->scales.find(layer, u.scale) : nullptr;
      if (!ps) fail("the model has no scale for layer {} point '{}', which this execution plan quantizes", layer, u.scale);
      s = ps->scale;
    }
    if (ps && !ps->values.empty() && std::string_view(u.tap) == "ssm_state") {  // grouped state scales
      if (layer < 0 || size_t(layer) >= q->groups.size() || q->groups[size_t(layer)].empty())
        fail("the model has grouped scales for layer {} point '{}' but no head groups", layer, u.scale);
      const HeadGroups& g = q->groups[size_t(layer)];
      auto ss = std::make_shared<StateScales>();
      const int H = cfg.nheads, N = cfg.d_state, Hg = H / cfg.ngroups;
      ss->H = H, ss->N = N, ss->P = cfg.headdim, ss->ndg = g.ndg;
      for (int h = 0; h < H; ++h) {  // {G, nhg, ndg, N} -> per head {N, ndg}
        const int gi = h / Hg, k = g.head_group(gi, h % Hg);
        for (int n = 0; n < N; ++n)
          for (int j = 0; j < g.ndg; ++j) ss->scale.push_back(ps->values[size_t(((gi * g.nhg + k) * g.ndg + j) * N + n)]);
        for (int j = 0; j < g.ndg; ++j) ss->dim_end.push_back(g.dim_end[size_t((gi * g.nhg + k) * g.ndg + j)]);
      }
      te->state = ss;
      te->uses.push_back({c0, c1, s, p});
    } else if (ps && !ps->values.empty()) {  // grouped: one use per run of columns with one scale
      if (layer < 0 || size_t(layer) >= q->groups.size() || q->groups[size_t(layer)].empty())
        fail("the model has grouped scales for layer {} point '{}' but no head groups", layer, u.scale);
      const auto idx = grouped_scale_index(cfg, q->groups[size_t(layer)], point_grouping(cfg.arch, u.scale));
      if (idx.size() != size_t(c1 - c0) || size_t(numel(ps->shape)) != ps->values.size())
        fail("internal error: grouped scale of layer {} point '{}' does not fit its columns", layer, u.scale);
      for (size_t i = 0; i < idx.size();) {
        size_t j = i;
        while (j < idx.size() && idx[j] == idx[i]) ++j;
        te->uses.push_back({c0 + int(i), c0 + int(j), ps->values[size_t(idx[i])], p});
        i = j;
      }
    } else {
      te->uses.push_back({c0, c1, s, p});
    }
    te->int8 |= p == Prec::Int8;
    te->fake |= p == Prec::Fake;
  }
  for (auto& te : le.taps) {
    if (!te.int8) continue;
    te.col_scale.assign(size_t(tap_width(cfg, te.tap)), 0.f);
    for (const auto& u : te.uses) {
      if (u.prec != Prec::Int8)
        fail("internal error: tap '{}' of layer {} mixes int8 and float uses", te.tap, layer);
      std::fill(te.col_scale.begin() + u.c0, te.col_scale.begin() + u.c1, u.scale);
    }
    for (float v : te.col_scale)
      if (!(v > 0)) fail("internal error: tap '{}' of layer {} has columns without an int8 scale", te.tap, layer);
  }
}

}  // namespace

std::shared_ptr<PreparedPlan> prepare_plan(const ModelConfig& cfg, const ModelWeights& w, const QuantState* q,
                                           ExecPlan plan, const Model* fp) {
  auto pp = std::make_shared<PreparedPlan>();
  pp->a_bits = q ? q->meta.a_bits : 8;
  const unsigned ops = plan.fp_ops;
  if ((ops & (kFpLinear | kFpConv | kFpHadamard)) && (!fp || fp->is_quantized()))
    fail_option("fp_ops", "fp_ops {}: keeping linear, conv or hadamard in FP32 needs the FP model's weights (an FP reference model)",
         fp_ops_str(ops));
  if (fp) {
    const auto& fc = fp->config();
    if (fc.arch != cfg.arch || fc.n_layer != cfg.n_layer || fc.d_model != cfg.d_model || fc.d_inner != cfg.d_inner ||
        fc.d_state != cfg.d_state || fc.conv_dim() != cfg.conv_dim())
      fail_option("fp_ops", "fp_ops: the FP model has other shapes than the quantized one");
  }
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    // a layer whose activations stay float (W4A16, FP16 in a --layer-config): only its linear ops
    // run quantized kernels (W4A16), its conv, scan and norm run float on float states
    const LayerPrecision lp = q ? q->meta.layer(l) : LayerPrecision{32, 32};
    const bool a16 = lp.a_bits != 8;
    auto& row = plan.layers[size_t(l)];
    if (q && a16)
      for (int k = 0; k < kOpKinds; ++k)
        if (OpKind(k) != OpKind::Linear || lp.fp()) row[size_t(k)] = Prec::F32;
    LayerExec& le = pp->layers.emplace_back();
    le.rotate = L.out_proj_rotated && plan.rotate();
    resolve_taps(cfg, q, l, row, le.rotate, q && a16, le);
    for (int p = 0; p < kProjs; ++p) {
      const QTensor& t = L.proj(Proj(p));
      if (t.empty()) continue;
      const Prec pr = le.prec[unsigned(p == kConv ? OpKind::Conv : OpKind::Linear)];
      // integer kernels read the stored codes: W8A8 (int8 codes in), W4A8, W4A16; anything else
      // (fp32 / fake plans, float weights, int8 weights on float activations) reads float weights
      if (pr == Prec::Int8 && (t.format == WFormat::S4 || (t.format == WFormat::S8 && !a16))) continue;
      le.fw[size_t(p)] = float_view(t);
    }
    if (fp) {  // --fp-ops: the FP model's weights where its kinds stay float
      const LayerWeights& F = fp->weights().layers[size_t(l)];
      if (ops & kFpConv) le.fw[kConv] = F.conv_w.as_weight();
      if (ops & kFpLinear)
        for (Proj p : {kInProj, kXProj, kDtProj}) le.fw[p] = F.proj(p).as_weight();
      const Weight fo = F.out_proj.as_weight();
      if (ops & kFpLinear) {
        le.fw[kOutProj] = le.rotate ? fused_right(fo) : fo;
      } else if (!le.rotate && L.out_proj_rotated) {
        // hadamard kept: the unfused W, quantized as the stored out_proj was (same granularity, bits)
        const QTensor& so = L.out_proj;
        le.fw[kOutProj] =
            so.format == WFormat::F32
                ? fo
                : Weight::from_vector(dequantize_weight(quantize_weight(fo.data, so.rows(), so.cols(), so.granularity,
                                                                        so.bits, so.group)),
                                      fo.shape);
      }
    }
  }
  const bool head_a16 = !q || q->meta.a_bits != 8;
  if (q && q->meta.quantize_lm_head && head_a16 && plan.head[unsigned(OpKind::Head)] == Prec::Fake)
    plan.head[unsigned(OpKind::Head)] = Prec::F32;  // W4A16 head: nothing to simulate but its weights
  resolve_taps(cfg, q, -1, plan.head, true, head_a16, pp->head);
  if (!w.lm_head.f32() && plan.head[unsigned(OpKind::Head)] != Prec::Int8) pp->head_fw = float_view(w.lm_head);
  if (fp && (ops & kFpHead)) {  // the ends in float: the FP model's embedding and LM head
    pp->head_fw = fp->weights().lm_head.as_weight();
    pp->emb_fw = fp->weights().embedding.as_weight();
  }
  pp->plan = std::make_unique<ExecPlan>(std::move(plan));
  return pp;
}

Exec::Exec(const ModelConfig& cfg, const PreparedPlan& p, const Backend& kb, Tap* tap, std::span<const int> offs)
    : k(kb), T(offs.back()), nseq(int(offs.size()) - 1), cfg_(cfg), p_(p), tap_(tap), offs_(offs) {}

void Exec::set_layer(int l, const LayerWeights* L, float* const* conv_f, int8_t* const* conv_q, float* const* ssm_f,
                     int8_t* const* ssm_q) {
  l_ = l;
  L_ = L;
  le_ = l < 0 ? &p_.head : &p_.layers[size_t(l)];
  conv_f_ = conv_f, conv_q_ = conv_q, ssm_f_ = ssm_f, ssm_q_ = ssm_q;
}

void Exec::call_tap(std::string_view name, const Act& a) {
  if (!tap_) return;
  MQ_ASSERT(a.ld == a.cols);
  if (!a.codes()) return tap_->on(l_, name, a.f, a.rows, a.cols, offs_);
  float* v = scratch(kSlotTapView, size_t(a.rows) * a.cols);  // the tap sees the codes' values
  for (int r = 0; r < a.rows; ++r)
    for (int c = 0; c < a.cols; ++c) v[size_t(r) * a.cols + c] = float(a.q[size_t(r) * a.ld + c]) * a.scale[c];
  tap_->on(l_, name, v, a.rows, a.cols, offs_);
}

Act Exec::point(const char* name, Act a, int slot) {
  const TapExec* te = le_->tap(name);
  if (te && !a.codes()) {
    if (te->fake)
      for (const auto& u : te->uses)
        if (u.prec == Prec::Fake) k.fake_quantize(a.f + u.c0, a.rows, u.c1 - u.c0, a.ld, u.scale, p_.a_bits);
    if (te->int8) {
      int8_t* q = scratch_i8(slot, size_t(a.rows) * a.cols);
      for (const auto& u : te->uses) k.quantize(a.f + u.c0, a.rows, u.c1 - u.c0, a.ld, u.scale, q + u.c0, a.cols);
      a = Act{nullptr, q, te->col_scale.data(), a.rows, a.cols, a.cols};
    }
  }
  call_tap(name, a);
  return a;
}

Act Exec::fork(Act a, int slot) {
  if (a.codes() || (!tap_ && !le_->fake)) return a;
  float* f = scratch(slot, size_t(a.rows) * a.cols);
  for (int r = 0; r < a.rows; ++r) std::copy_n(a.f + size_t(r) * a.ld, a.cols, f + size_t(r) * a.cols);
  return Act::floats(f, a.rows, a.cols, a.cols);
}

Act Exec::linear(Proj p, Act in, const Weight& bias, float* out) {
  const QTensor& W = L_->proj(p);
  const int N = W.rows(), K = W.cols();
  MQ_ASSERT(in.cols == K && in.rows == T);
  const Weight& f = le_->fw[size_t(p)];
  if (in.codes() && W.s8()) {  // W8A8
    k.gemm_s8(T, N, K, in.q, in.ld, in.s(), W.s8(), W.scales.data(), W.granularity == Granularity::Channel, bias.data,
              out, N);
  } else if (in.codes()) {  // W4A8
    MQ_ASSERT(W.s4());
    k.gemm_s8w4(T, N, K, in.q, in.ld, in.s(), W.s4(), W.scales.data(), W.group, bias.data, out, N);
  } else if (f.data) {  // float weights (fp32, fake, or a float layer)
    MQ_ASSERT(f.dim(0) == N && f.dim(1) == K);
    k.gemm(T, N, K, in.f, in.ld, f.data, bias.data, out, N);
  } else {  // W4A16
    MQ_ASSERT(W.s4());
    k.gemm_w4(T, N, K, in.f, in.ld, W.s4(), W.scales.data(), W.group, bias.data, out, N);
  }
  return Act::floats(out, T, N, N);
}

Act Exec::conv1d_silu(Act in, const Weight& bias, const char* out_tap, int slot, int qslot) {
  const int C = in.cols, K = cfg_.d_conv;
  if (in.codes()) {
    const QTensor& W = L_->conv_w;
    MQ_ASSERT(W.s8() && W.granularity == Granularity::Tensor);
    const TapExec* te = le_->tap(out_tap);
    MQ_ASSERT(te && te->int8 && int(te->col_scale.size()) == C);
    int8_t* q = scratch_i8(qslot, size_t(T) * C);
    k.conv1d_s8_silu(nseq, offs_.data(), in.q, in.ld, in.s(), C, K, W.s8(), W.scales[0], bias.data, conv_q_,
                     te->col_scale.data(), q, C);
    return Act{nullptr, q, te->col_scale.data(), T, C, C};
  }
  const Weight& w = le_->fw[kConv];
  MQ_ASSERT(w.data && w.dim(0) == C);
  float* out = scratch(slot, size_t(T) * C);
  k.conv1d_silu(nseq, offs_.data(), in.f, in.ld, C, K, w.data, bias.data, conv_f_, out, C);
  return Act::floats(out, T, C, C);
}

// The SSM states of the sequences, int8 codes between calls (float for exact states), float
// during the scan; each use of the state's tap is a run of elements with one scale (one run, or
// Quamba2's grouped runs).
std::vector<float*> Exec::states_as_float(const TapExec& te) {
  const size_t n = cfg_.ssm_state_size();
  std::vector<float*> f(size_t(nseq), nullptr);
  float* buf = scratch(kSlotQState, n * size_t(nseq));
  for (int s = 0; s < nseq; ++s)
    if (ssm_q_[s]) {
      f[size_t(s)] = buf + n * size_t(s);
      if (const StateScales* g = te.state.get())
        k.state_dequantize(ssm_q_[s], f[size_t(s)], g->H, g->N, g->P, g->ndg, g->scale.data(), g->dim_end.data());
      else for (const auto& u : te.uses)
        k.dequantize(ssm_q_[s] + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, f[size_t(s)] + u.c0, u.c1 - u.c0);
    } else {
      f[size_t(s)] = ssm_f_[s];  // an exact state (or none)
    }
  return f;
}

void Exec::states_store(const std::vector<float*>& f, const TapExec& te) {
  for (int s = 0; s < nseq; ++s)
    if (!ssm_q_[s]) continue;  // exact float states are kept as they are
    else if (const StateScales* g = te.state.get(); f[size_t(s)] && g)
      k.state_quantize(f[size_t(s)], ssm_q_[s], g->H, g->N, g->P, g->ndg, g->scale.data(), g->dim_end.data());
    else if (f[size_t(s)])
      for (const auto& u : te.uses)
        k.quantize(f[size_t(s)] + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, ssm_q_[s] + u.c0, u.c1 - u.c0);
}

// The state kept for the next call: quantized as the plan says, then the caller's tap (one
// sample per sequence).
void Exec::state_point(const TapExec* te) {
  const int n = int(cfg_.ssm_state_size());
  const int one[2] = {0, 1};
  for (int s = 0; s < nseq; ++s) {
    float* st = ssm_f_[s];
    const bool exact = exact_ && exact_[s];
    if (te && te->int8 && !exact) {
      if (!ssm_q_[s] || !tap_) continue;
      st = scratch(kSlotTapView, size_t(n));
      if (const StateScales* g = te->state.get())
        k.state_dequantize(ssm_q_[s], st, g->H, g->N, g->P, g->ndg, g->scale.data(), g->dim_end.data());
      else for (const auto& u : te->uses)
        k.dequantize(ssm_q_[s] + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, st + u.c0, u.c1 - u.c0);
      tap_->on(l_, "ssm_state", st, 1, n, one);
      continue;
    }
    if (!st) continue;
    if (exact) {
      // kept as computed
    } else if (const StateScales* g = te ? te->state.get() : nullptr; g && te->fake)
      k.state_fake_quantize(st, g->H, g->N, g->P, g->ndg, g->scale.data(), g->dim_end.data(), p_.a_bits);
    else if (te && te->fake)
      for (const auto& u : te->uses) k.fake_quantize(st + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, p_.a_bits);
    if (tap_) tap_->on(l_, "ssm_state", st, 1, n, one);
  }
}

void Exec::selective_scan(Act u, Act delta, Act B, Act C, Act z, float* y) {
  const int D = cfg_.d_inner, N = cfg_.d_state;
  const LayerWeights& L = *L_;
  const TapExec* st = le_->tap("ssm_state");
  if (u.codes()) {
    MQ_ASSERT(delta.codes() && B.codes() && C.codes() && z.codes() && st && st->int8);
    const auto fs = states_as_float(*st);
    k.selective_scan_s8(nseq, offs_.data(), D, N, u.q, u.ld, u.s(), delta.q, delta.ld, delta.s(), L.dt_proj_b.data,
                        L.A.data(), B.q, B.ld, B.s(), C.q, C.ld, C.s(), L.D.data, z.q, z.ld, z.s(), fs.data(), y, D);
    states_store(fs, *st);
  } else {
    MQ_ASSERT(!delta.codes() && !B.codes() && !C.codes() && !z.codes());
    k.selective_scan(nseq, offs_.data(), D, N, u.f, u.ld, delta.f, delta.ld, L.dt_proj_b.data, L.A.data(), B.f, B.ld,
                     C.f, C.ld, L.D.data, z.f, z.ld, ssm_f_, y, D);
  }
  state_point(st);
}

void Exec::ssd_scan(Act x, Act dt, Act B, Act C, float* y) {
  const int H = cfg_.nheads, P = cfg_.headdim, G = cfg_.ngroups, N = cfg_.d_state, di = cfg_.d_inner;
  const LayerWeights& L = *L_;
  const TapExec* st = le_->tap("ssm_state");
  if (x.codes()) {
    MQ_ASSERT(dt.codes() && B.codes() && C.codes() && st && st->int8);
    // Decode (one token per sequence, every state int8 with grouped scales): the state is updated
    // in its codes, never written as floats; the same numbers as the path below.
    bool step = st->state != nullptr && ssm_q_ != nullptr;
    for (int s = 0; step && s < nseq; ++s) step = ssm_q_[s] != nullptr && offs_[size_t(s) + 1] - offs_[size_t(s)] == 1;
    if (step) {
      const StateScales& g = *st->state;
      MQ_ASSERT(g.H == H && g.N == N && g.P == P);
      k.ssd_step_s8_qstate(nseq, H, P, G, N, x.q, x.ld, x.scale, dt.q, dt.ld, dt.s(), L.dt_bias.data, L.A.data(), B.q,
                           B.ld, B.scale, C.q, C.ld, C.scale, L.D.data, ssm_q_, g.ndg, g.scale.data(),
                           g.dim_end.data(), y, di);
      state_point(st);
      return;
    }
    const auto fs = states_as_float(*st);
    k.ssd_scan_s8(nseq, offs_.data(), H, P, G, N, x.q, x.ld, x.scale, dt.q, dt.ld, dt.s(), L.dt_bias.data, L.A.data(),
                  B.q, B.ld, B.scale, C.q, C.ld, C.scale, L.D.data, fs.data(), y, di);
    states_store(fs, *st);
  } else {
    MQ_ASSERT(!dt.codes() && !B.codes() && !C.codes());
    k.ssd_scan(nseq, offs_.data(), H, P, G, N, x.f, x.ld, dt.f, dt.ld, L.dt_bias.data, L.A.data(), B.f, B.ld, C.f,
               C.ld, L.D.data, ssm_f_, y, di);
  }
  state_point(st);
}

void Exec::gated_rmsnorm(float* y, Act z) {
  const int di = cfg_.d_inner;
  const float* zf = z.f;
  int ldz = z.ld;
  if (z.codes()) {
    float* buf = scratch(kSlotGateZ, size_t(T) * di);
    k.dequantize(z.q, T, di, z.ld, z.s(), buf, di);
    zf = buf, ldz = di;
  }
  k.gated_rmsnorm(y, zf, ldz, L_->gnorm.data, T, di, di / cfg_.ngroups, cfg_.norm_eps, cfg_.norm_before_gate);
}

void Exec::rotate(float* y, int cols) {
  if (le_->rotate) k.hadamard(y, T, cols, cols, false);
}

}  // namespace mambaq
