// Exec: the ops the forward passes call, dispatched on the prepared plan, the formats of the
// activations and weights, and the backend.
#include "model/exec.h"

#include <algorithm>
#include <cmath>

#include "core/half.h"
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
    if (!te) te = &le.taps.emplace_back(TapExec{u.tap, {}, {}, nullptr, false, false, nullptr});
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

namespace {

// Copies of what the kernels read, in the backend's memory: host pointers as they are for a
// backend whose memory is the host's, one upload per distinct host buffer otherwise (a tied LM
// head is uploaded once).
struct Uploader {
  PreparedPlan& pp;
  WFormat wdt = WFormat::F32;  // the float GEMM weights' type on the backend (SessionOptions::dtype)
  std::vector<std::pair<const void*, void*>> seen, seen16;
  template <class T> const T* put(const T* host, size_t n) {
    if (!host) return nullptr;
    if (pp.backend->get().host_memory) return host;
    for (const auto& [h, d] : seen)
      if (h == host) return static_cast<const T*>(d);
    Buffer b = Buffer::from_host(pp.backend, host, n * sizeof(T));
    pp.uploaded_bytes += b.bytes();
    void* d = b.data();
    pp.owned.push_back(std::move(b));
    seen.emplace_back(host, d);
    return static_cast<const T*>(d);
  }
  const float* put(const Weight& w) { return w.data ? put(w.data, size_t(w.size())) : nullptr; }
  WeightView view(const QTensor& t) {
    WeightView v;
    if (t.empty()) return v;
    v.format = t.format;
    v.rows = t.rows(), v.cols = t.cols();
    v.granularity = t.granularity, v.group = t.group;
    v.scale = t.scales.empty() ? 0.f : t.scales[0];
    v.scales = put(t.scales.empty() ? nullptr : t.scales.data(), t.scales.size());
    const size_t n = t.format == WFormat::F32 ? size_t(t.size()) * 4
                     : t.format == WFormat::S8 ? size_t(t.size())
                                               : size_t(t.rows()) * size_t(t.cols() / 2);
    v.data = put(static_cast<const uint8_t*>(t.data), n);
    return v;
  }
  WeightView view(const Weight& w) {
    WeightView v;
    if (!w.data) return v;
    v.format = WFormat::F32;
    v.rows = int(w.dim(0)), v.cols = w.shape.size() < 2 ? 1 : int(w.shape.back());
    v.data = put(w);
    return v;
  }
  // A float GEMM weight in the session's type: as it is (F32), or converted (to nearest even) to
  // F16/BF16 in backend memory; `what` names it in the one error (beyond fp16's range).
  WeightView gemm_view(const Weight& w, const std::string& what) {
    if (wdt == WFormat::F32 || !w.data) return view(w);
    WeightView v;
    v.format = wdt;
    v.rows = int(w.dim(0)), v.cols = w.shape.size() < 2 ? 1 : int(w.shape.back());
    for (const auto& [h, d] : seen16)
      if (h == w.data) return v.data = d, v;
    const size_t n = size_t(w.size());
    std::vector<uint16_t> h(n);
    const bool bf = wdt == WFormat::BF16;
    int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
    for (int64_t i = 0; i < int64_t(n); ++i) {
      h[size_t(i)] = bf ? f32_to_bf16(w.data[i]) : f32_to_f16(w.data[i]);
      if (!bf && (h[size_t(i)] & 0x7c00) == 0x7c00) bad = std::max(bad, i);
    }
    if (bad >= 0)
      fail_option("dtype", "dtype fp16: {} holds {} (element {}), beyond fp16's range (65504); run it with --dtype "
                  "bf16 or fp32", what, w.data[bad], bad);
    Buffer b = Buffer::from_host(pp.backend, h.data(), n * 2);
    pp.uploaded_bytes += b.bytes();
    v.data = b.data();
    pp.owned.push_back(std::move(b));
    seen16.emplace_back(w.data, const_cast<void*>(v.data));
    return v;
  }
  LinW lin(const QTensor& q, const Weight& f, const std::string& gemm_what = {}) {
    LinW l;
    if (q.empty() && !f.data) return l;
    l.q = view(q);
    l.f = gemm_what.empty() ? view(f) : gemm_view(f, gemm_what);
    l.N = q.empty() ? int(f.dim(0)) : q.rows();
    l.K = q.empty() ? int(f.shape.back()) : q.cols();
    return l;
  }
  void taps(LayerExec& le) {
    for (auto& t : le.taps) {
      if (!t.col_scale.empty()) t.col_scale_dev = put(t.col_scale.data(), t.col_scale.size());
      if (t.state) {
        t.state->dev.ndg = t.state->ndg;
        t.state->dev.scale = put(t.state->scale.data(), t.state->scale.size());
        t.state->dev.dim_end = put(t.state->dim_end.data(), t.state->dim_end.size());
      }
    }
  }
};

}  // namespace

std::shared_ptr<PreparedPlan> prepare_plan(const ModelConfig& cfg, const ModelWeights& w, const QuantState* q,
                                           ExecPlan plan, const Model* fp, BackendRef backend, WFormat wdt) {
  auto pp = std::make_shared<PreparedPlan>();
  pp->wdt = wdt;
  pp->backend = std::move(backend);
  pp->w = w;
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

  // What the backend's kernels read, in its memory.
  // Views into the plan's own copy of the weights (pp->w: its scale vectors and buffers live as
  // long as the plan).
  const ModelWeights& pw = pp->w;
  Uploader up{*pp, wdt, {}, {}};
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerWeights& L = pw.layers[size_t(l)];
    LayerExec& le = pp->layers[size_t(l)];
    LayerDev& d = le.dev;
    d.norm = up.put(L.norm), d.norm_b = up.put(L.norm_b), d.in_proj_b = up.put(L.in_proj_b);
    d.conv_b = up.put(L.conv_b), d.dt_proj_b = up.put(L.dt_proj_b), d.dt_bias = up.put(L.dt_bias);
    d.A = up.put(L.A.empty() ? nullptr : L.A.data(), L.A.size()), d.D = up.put(L.D), d.gnorm = up.put(L.gnorm);
    d.out_proj_b = up.put(L.out_proj_b);
    for (int p = 0; p < kProjs; ++p) {
      const QTensor& t = L.proj(Proj(p));
      const Weight& f = le.fw[size_t(p)];
      // the stored codes only where an integer kernel reads them (no copy of `t`: the views
      // point into the model's own buffers, which the plan keeps alive)
      // (nor of float weights the GEMMs read converted to 16 bits: --dtype bf16 holds no fp32 copy)
      static const QTensor none;
      const bool skip_q = f.data && (t.format != WFormat::F32 || (wdt != WFormat::F32 && p != kConv));
      d.proj[size_t(p)] = up.lin(skip_q ? none : t, f,
                                 p == kConv ? std::string() : fmt::format("layer {} {}", l, proj_name(Proj(p))));
      if (f.data && t.format != WFormat::F32) d.proj[size_t(p)].N = t.rows(), d.proj[size_t(p)].K = t.cols();
    }
    up.taps(le);
  }
  up.taps(pp->head);
  {
    static const QTensor none;
    const QTensor& W = pw.lm_head;
    const Weight f = pp->head_fw.data ? pp->head_fw : (W.f32() ? W.as_weight() : Weight{});
    pp->head_w = up.lin(f.data && !W.f32() ? none : W, f, "the LM head");
    if (f.data) pp->head_w.q = pp->head_w.f;  // float weights: nothing else is read
    pp->head_w.N = W.rows(), pp->head_w.K = W.cols();
  }
  pp->emb = pp->emb_fw.data ? up.view(pp->emb_fw) : up.view(pw.embedding);
  if (pp->emb_fw.data) pp->emb.rows = int(pp->emb_fw.dim(0)), pp->emb.cols = int(pp->emb_fw.dim(1));
  pp->norm_f = up.put(pw.norm_f), pp->norm_f_b = up.put(pw.norm_f_b);
  return pp;
}

void* Workspace::bytes(int slot, size_t n) {
  Buffer& b = slots_[size_t(slot)];
  if (b.bytes() < n || b.empty()) {
    b.reset();
    b = Buffer(b_, n);
    ++gen_;
  }
  return b.data();
}

size_t Workspace::held() const {
  size_t n = 0;
  for (const auto& b : slots_) n += b.bytes();
  return n;
}

Exec::Exec(const ModelConfig& cfg, const PreparedPlan& p, Workspace& ws, Tap* tap, Batch batch)
    : k(p.backend->get()), ctx(p.backend->get().ctx), T(batch.rows()), nseq(batch.nseq), cfg_(cfg), p_(p), ws_(ws),
      tap_(tap), b_(batch), offs_(batch.offs, size_t(batch.nseq) + 1) {}

void Exec::set_layer(int l, const LayerStates& st) {
  l_ = l;
  le_ = l < 0 ? &p_.head : &p_.layers[size_t(l)];
  L_ = l < 0 ? nullptr : &le_->dev;
  st_ = st;
}

void Exec::tap_floats(std::string_view name, float* data, int rows, int cols, std::span<const int> offs) {
  if (!tap_) return;
  if (k.host_memory) return tap_->on(l_, name, data, rows, cols, offs);
  const size_t n = size_t(rows) * cols;
  std::vector<float> h(n), before;
  k.download(ctx, h.data(), data, n * sizeof(float));
  before = h;
  tap_->on(l_, name, h.data(), rows, cols, offs);
  if (h != before) k.upload(ctx, data, h.data(), n * sizeof(float));  // an in-place edit
}

void Exec::call_tap(std::string_view name, const Act& a) {
  if (!tap_) return;
  MQ_ASSERT(a.ld == a.cols);
  if (!a.codes()) return tap_floats(name, a.f, a.rows, a.cols, offs_);
  // the tap sees the codes' values (changes are not read back)
  const size_t n = size_t(a.rows) * a.cols;
  std::vector<int8_t> q(n);
  k.download(ctx, q.data(), a.q, n);
  std::vector<float> v(n);
  for (int r = 0; r < a.rows; ++r)
    for (int c = 0; c < a.cols; ++c) v[size_t(r) * a.cols + c] = float(q[size_t(r) * a.ld + c]) * a.hscale[c];
  tap_->on(l_, name, v.data(), a.rows, a.cols, offs_);
}

Act Exec::quantize_at(const char* name, Act a, int slot) {
  const TapExec* te = le_->tap(name);
  if (te && !a.codes()) {
    if (te->fake)
      for (const auto& u : te->uses)
        if (u.prec == Prec::Fake) k.fake_quantize(ctx, a.f + u.c0, a.rows, u.c1 - u.c0, a.ld, u.scale, p_.a_bits);
    if (te->int8) {
      int8_t* q = ws_.q(slot, size_t(a.rows) * a.cols);
      for (const auto& u : te->uses) k.quantize(ctx, a.f + u.c0, a.rows, u.c1 - u.c0, a.ld, u.scale, q + u.c0, a.cols);
      a = Act{nullptr, q, te->col_scale.data(), te->col_scale_dev, a.rows, a.cols, a.cols};
    }
  }
  return a;
}

Act Exec::point(const char* name, Act a, int slot) {
  a = quantize_at(name, a, slot);
  call_tap(name, a);
  return a;
}

Act Exec::fork(Act a, int slot) {
  if (a.codes() || (!tap_ && !le_->fake)) return a;
  float* f = ws_.f(slot, size_t(a.rows) * a.cols);
  k.copy2d(ctx, f, sizeof(float) * size_t(a.cols), a.f, sizeof(float) * size_t(a.ld), sizeof(float) * size_t(a.cols),
           size_t(a.rows));
  return Act::floats(f, a.rows, a.cols, a.cols);
}

Act Exec::linear(Proj p, Act in, const float* bias, float* out) { return linear(L_->proj[size_t(p)], in, bias, out); }

Act Exec::linear(const LinW& W, Act in, const float* bias, float* out) {
  const int N = W.N, K = W.K;
  MQ_ASSERT(in.cols == K && in.rows == T);
  GemmArgs g;
  g.M = T, g.N = N, g.K = K;
  g.A = in.view();
  g.bias = bias;
  g.C = out, g.ldc = N;
  if (in.codes()) {  // W8A8 / W4A8: the stored codes
    MQ_ASSERT(W.q.format == WFormat::S8 || W.q.format == WFormat::S4);
    g.W = W.q;
  } else if (W.f.data) {  // float weights (fp32, fake, or a float layer)
    MQ_ASSERT(W.f.rows == N && W.f.cols == K);
    g.W = W.f;
  } else {  // W4A16
    MQ_ASSERT(W.q.format == WFormat::S4);
    g.W = W.q;
  }
  k.gemm(ctx, g);
  return Act::floats(out, T, N, N);
}

Act Exec::conv1d_silu(Act in, const float* bias, const char* out_tap, int slot, int qslot) {
  const int C = in.cols, K = cfg_.d_conv;
  const LinW& W = L_->proj[kConv];
  ConvArgs a;
  a.b = b_;
  a.C = C, a.K = K;
  a.x = in.view();
  a.bias = bias;
  if (in.codes()) {
    MQ_ASSERT(W.q.format == WFormat::S8 && W.q.granularity == Granularity::Tensor);
    const TapExec* te = le_->tap(out_tap);
    MQ_ASSERT(te && te->int8 && int(te->col_scale.size()) == C);
    int8_t* q = ws_.q(qslot, size_t(T) * C);
    a.w = W.q;
    a.st = {st_.conv_q, st_.conv_q_dev, DType::I8};
    a.out = q, a.ldo = C, a.out_scale = te->col_scale_dev;
    k.conv1d_silu(ctx, a);
    return Act{nullptr, q, te->col_scale.data(), te->col_scale_dev, T, C, C};
  }
  MQ_ASSERT(W.f.data && W.f.rows == C);
  float* out = ws_.f(slot, size_t(T) * C);
  a.w = W.f;
  a.st = {st_.conv_f, st_.conv_f_dev, DType::F32};
  a.out = out, a.ldo = C;
  k.conv1d_silu(ctx, a);
  return Act::floats(out, T, C, C);
}

// The states' pointer array `f` as a kernel reads it (with its copy in backend memory).
StateView Exec::float_states(const std::vector<void*>& f, int slot) {
  if (k.host_memory) return {f.data(), f.data(), DType::F32};
  void* d = ws_.bytes(slot, sizeof(void*) * f.size());
  k.upload(ctx, d, f.data(), sizeof(void*) * f.size());
  return {f.data(), static_cast<void* const*>(d), DType::F32};
}

// The SSM states of the sequences, int8 codes between calls (float for exact states), float
// during the scan; each use of the state's tap is a run of elements with one scale (one run, or
// Quamba2's grouped runs).
void Exec::states_as_float(const TapExec& te, std::vector<void*>& f) {
  const size_t n = cfg_.ssm_state_size();
  f.assign(size_t(nseq), nullptr);
  float* buf = ws_.f(kSlotQState, n * size_t(nseq));
  const int H = cfg_.nheads, N = cfg_.d_state, P = cfg_.headdim;
  for (int s = 0; s < nseq; ++s)
    if (auto* qs = static_cast<int8_t*>(st_.ssm_q ? st_.ssm_q[s] : nullptr)) {
      float* fs = buf + n * size_t(s);
      f[size_t(s)] = fs;
      if (const StateScales* g = te.state.get())
        k.state_dequantize(ctx, qs, fs, H, N, P, g->dev);
      else for (const auto& u : te.uses)
        k.dequantize(ctx, qs + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, fs + u.c0, u.c1 - u.c0);
    } else {
      f[size_t(s)] = st_.ssm_f ? st_.ssm_f[s] : nullptr;  // an exact state (or none)
    }
}

void Exec::states_store(const std::vector<void*>& f, const TapExec& te) {
  const int H = cfg_.nheads, N = cfg_.d_state, P = cfg_.headdim;
  for (int s = 0; s < nseq; ++s) {
    auto* qs = static_cast<int8_t*>(st_.ssm_q ? st_.ssm_q[s] : nullptr);
    auto* fs = static_cast<float*>(f[size_t(s)]);
    if (!qs) continue;  // exact float states are kept as they are
    if (const StateScales* g = te.state.get(); fs && g)
      k.state_quantize(ctx, fs, qs, H, N, P, g->dev);
    else if (fs)
      for (const auto& u : te.uses)
        k.quantize(ctx, fs + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, qs + u.c0, u.c1 - u.c0);
  }
}

// The state kept for the next call: quantized as the plan says, then the caller's tap (one
// sample per sequence).
void Exec::state_point(const TapExec* te) {
  const int n = int(cfg_.ssm_state_size());
  const int one[2] = {0, 1};
  const int H = cfg_.nheads, N = cfg_.d_state, P = cfg_.headdim;
  for (int s = 0; s < nseq; ++s) {
    auto* st = static_cast<float*>(st_.ssm_f ? st_.ssm_f[s] : nullptr);
    auto* qs = static_cast<int8_t*>(st_.ssm_q ? st_.ssm_q[s] : nullptr);
    const bool exact = exact_ && exact_[s];
    if (te && te->int8 && !exact) {
      if (!qs || !tap_) continue;
      st = ws_.f(kSlotTapView, size_t(n));
      if (const StateScales* g = te->state.get())
        k.state_dequantize(ctx, qs, st, H, N, P, g->dev);
      else for (const auto& u : te->uses)
        k.dequantize(ctx, qs + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, st + u.c0, u.c1 - u.c0);
      tap_floats("ssm_state", st, 1, n, one);
      continue;
    }
    if (!st) continue;
    if (exact) {
      // kept as computed
    } else if (const StateScales* g = te ? te->state.get() : nullptr; g && te->fake)
      k.state_fake_quantize(ctx, st, H, N, P, g->dev, p_.a_bits);
    else if (te && te->fake)
      for (const auto& u : te->uses) k.fake_quantize(ctx, st + u.c0, 1, u.c1 - u.c0, u.c1 - u.c0, u.scale, p_.a_bits);
    tap_floats("ssm_state", st, 1, n, one);
  }
}

void Exec::selective_scan(Act u, Act delta, Act B, Act C, Act z, float* y) {
  const int D = cfg_.d_inner, N = cfg_.d_state;
  const LayerDev& L = *L_;
  const TapExec* st = le_->tap("ssm_state");
  ScanArgs a;
  a.b = b_;
  a.D = D, a.N = N;
  a.u = u.view(), a.delta = delta.view(), a.B = B.view(), a.C = C.view(), a.z = z.view();
  a.delta_bias = L.dt_proj_b, a.A = L.A, a.Dskip = L.D;
  a.y = y, a.ldy = D;
  if (u.codes()) {
    MQ_ASSERT(delta.codes() && B.codes() && C.codes() && z.codes() && st && st->int8);
    std::vector<void*> fs;
    states_as_float(*st, fs);
    a.st = float_states(fs, kSlotStatePtrsF);
    k.selective_scan(ctx, a);
    states_store(fs, *st);
  } else {
    MQ_ASSERT(!delta.codes() && !B.codes() && !C.codes() && !z.codes());
    a.st = {st_.ssm_f, st_.ssm_f_dev, DType::F32};
    k.selective_scan(ctx, a);
  }
  state_point(st);
}

void Exec::ssd_scan(Act x, Act dt, Act B, Act C, float* y) {
  const int H = cfg_.nheads, P = cfg_.headdim, G = cfg_.ngroups, N = cfg_.d_state, di = cfg_.d_inner;
  const LayerDev& L = *L_;
  const TapExec* st = le_->tap("ssm_state");
  SsdArgs a;
  a.b = b_;
  a.H = H, a.P = P, a.G = G, a.N = N;
  a.x = x.view(), a.dt = dt.view(), a.B = B.view(), a.C = C.view();
  a.dt_bias = L.dt_bias, a.A = L.A, a.Dskip = L.D;
  a.y = y, a.ldy = di;
  if (x.codes()) {
    MQ_ASSERT(dt.codes() && B.codes() && C.codes() && st && st->int8);
    // Decode (one token per sequence, every state int8 with grouped scales): the state is updated
    // in its codes, never written as floats; the same numbers as the path below.
    bool step = st->state != nullptr && st_.ssm_q != nullptr;
    for (int s = 0; step && s < nseq; ++s) step = st_.ssm_q[s] != nullptr && b_.len(s) == 1;
    if (step) {
      const StateScales& g = *st->state;
      MQ_ASSERT(g.H == H && g.N == N && g.P == P);
      a.st = {st_.ssm_q, st_.ssm_q_dev, DType::I8};
      a.qs = g.dev;
      k.ssd_scan(ctx, a);
      state_point(st);
      return;
    }
    std::vector<void*> fs;
    states_as_float(*st, fs);
    a.st = float_states(fs, kSlotStatePtrsF);
    k.ssd_scan(ctx, a);
    states_store(fs, *st);
  } else {
    MQ_ASSERT(!dt.codes() && !B.codes() && !C.codes());
    a.st = {st_.ssm_f, st_.ssm_f_dev, DType::F32};
    k.ssd_scan(ctx, a);
  }
  state_point(st);
}

void Exec::gated_rmsnorm(float* y, Act z) {
  const int di = cfg_.d_inner;
  const float* zf = z.f;
  int ldz = z.ld;
  if (z.codes()) {
    float* buf = ws_.f(kSlotGateZ, size_t(T) * di);
    k.dequantize(ctx, z.q, T, di, z.ld, z.s(), buf, di);
    zf = buf, ldz = di;
  }
  k.gated_rmsnorm(ctx, y, zf, ldz, L_->gnorm, T, di, di / cfg_.ngroups, cfg_.norm_eps, cfg_.norm_before_gate);
}

void Exec::rotate(float* y, int cols) {
  if (le_->rotate) k.hadamard(ctx, y, T, cols, cols, false);
}

}  // namespace mambaq
