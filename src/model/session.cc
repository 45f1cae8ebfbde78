// A Session runs a Model on one backend: the backbone shared by both architectures (embedding ->
// n_layer x (norm -> mixer -> residual add) -> final norm), the LM head and scoring. Sequences are
// packed back to back ({T, d_model} with T = sum of lengths) so the projections run as large
// matrix products; conv and scan respect the sequence boundaries. How each op computes is the
// execution plan's business (model/exec.h); nothing here names a device or a precision, and
// nothing here reads an activation on the host: tokens go in, hidden rows or scores come out.
#include "mambaq/session.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>

#include "kernels/backend.h"
#include "mambaq/error.h"
#include "model/exec.h"
#include "model/mixers.h"
#include "model/plan.h"
#include "model/quant_state.h"

namespace mambaq {

// ---- states ----
struct StateData {
  BackendRef b;
  bool exact = false;
  struct Layer {
    Buffer conv, ssm;
    bool conv8 = false, ssm8 = false;
  };
  std::vector<Layer> layers;
  const PreparedPlan* plan = nullptr;  // the plan it was made for (checked at use)
};

SeqState::SeqState() = default;
SeqState::~SeqState() = default;
SeqState::SeqState(SeqState&&) noexcept = default;
SeqState& SeqState::operator=(SeqState&&) noexcept = default;
bool SeqState::exact() const { return d_ && d_->exact; }
int SeqState::layers() const { return d_ ? int(d_->layers.size()) : 0; }
bool SeqState::conv_int8(int l) const { return d_->layers.at(size_t(l)).conv8; }
bool SeqState::ssm_int8(int l) const { return d_->layers.at(size_t(l)).ssm8; }
size_t SeqState::bytes() const {
  size_t n = 0;
  if (d_)
    for (const auto& l : d_->layers) n += l.conv.bytes() + l.ssm.bytes();
  return n;
}
std::vector<float> SeqState::ssm_values(int l) const {
  const auto& L = d_->layers.at(size_t(l));
  if (!L.ssm8) return L.ssm.to_vector<float>(L.ssm.bytes() / 4);
  const auto q = L.ssm.to_vector<int8_t>(L.ssm.bytes());
  return std::vector<float>(q.begin(), q.end());
}

Hidden::Hidden() = default;
Hidden::~Hidden() = default;
Hidden::Hidden(Hidden&&) noexcept = default;
Hidden& Hidden::operator=(Hidden&&) noexcept = default;

// ---- the session ----
struct SessionCore {
  const Model* m;
  BackendRef b;
  std::shared_ptr<PreparedPlan> pp;
  Workspace ws;
  SessionCore(const Model& model, BackendRef backend) : m(&model), b(backend), ws(backend) {}

  const ModelConfig& cfg() const { return m->config(); }
  const Backend& k() const { return b->get(); }
  void* ctx() const { return b->get().ctx; }

  // Host bytes into a workspace slot (for host-memory backends: the host pointer itself).
  template <class T>
  const T* to_dev(int slot, const T* host, size_t n) {
    if (k().host_memory) return host;
    void* d = ws.bytes(slot, n * sizeof(T));
    k().upload(ctx(), d, host, n * sizeof(T));
    return static_cast<const T*>(d);
  }

  void block_norm(const float* x, const float* w, const float* bias, float* out, int T) {
    if (cfg().rms_norm)
      k().rmsnorm(ctx(), x, w, out, T, cfg().d_model, cfg().norm_eps);
    else
      k().layernorm(ctx(), x, w, bias, out, T, cfg().d_model, cfg().norm_eps);
  }

  // NaN or Inf never leaves the forward pass as a result: the backend records the first layer
  // whose output holds one (a cheap pass over {T, d_model}, next to the layer's own work), read
  // once per forward (every layer when a tap is set, before the tap sees it).
  NonFinite* finite_rec() {
    auto* r = static_cast<NonFinite*>(ws.bytes(kSlotFinite, sizeof(NonFinite)));
    const NonFinite none;
    k().upload(ctx(), r, &none, sizeof none);
    return r;
  }
  static constexpr int32_t kTagLogits = -2;  // the LM head's output (decode)
  void raise_if_nonfinite(NonFinite* rec) {
    NonFinite h;
    k().download(ctx(), &h, rec, sizeof h);
    raise_record(h);
  }
  void raise_record(const NonFinite& h) {
    if (h.index < 0) return;
    if (h.tag == kTagLogits)
      fail("non-finite logit ({}) for token id {}: the LM head overflows on this input", h.value,
           h.index % cfg().padded_vocab);
    const int layer = h.tag;
    const std::string where =
        layer < 0 ? std::string("final norm output") : fmt::format("layer {} block output", layer);
    fail(
        "non-finite value ({}) first appears in the {} ({} mode, token {} of the batch): the weights{} overflow on "
        "this input",
        h.value, where, mode_name(pp->plan->mode), h.index / cfg().d_model,
        m->is_quantized() ? " or quantization scales" : "");
  }

  Batch batch(const std::vector<int>& offs) {
    Batch bt;
    bt.nseq = int(offs.size()) - 1;
    bt.offs = offs.data();
    bt.offs_dev = to_dev(kSlotOffs, offs.data(), offs.size());
    return bt;
  }

  void embed_dev(std::span<const int32_t> tokens, float* r) {
    const int V = cfg().padded_vocab;
    for (int32_t id : tokens)
      if (id < 0 || id >= V) fail("token id {} is outside the model's vocabulary [0, {})", id, V);
    EmbedArgs a;
    a.T = int(tokens.size());
    a.ids = to_dev(kSlotTokens, tokens.data(), tokens.size());
    a.table = pp->emb;
    a.out = r, a.ldo = cfg().d_model;
    k().embed(ctx(), a);
  }

  std::vector<void*> state_ptrs(size_t nseq, int l0, int l1, SeqState* const* states) const;
  // the pointer array in backend memory (the host's own on host-memory backends)
  void* const* dev_ptrs(const std::vector<void*>& ptrs) {
    if (k().host_memory || ptrs.empty()) return ptrs.data();
    void* d = ws.bytes(kSlotStatePtrs, sizeof(void*) * ptrs.size());
    k().upload(ctx(), d, ptrs.data(), sizeof(void*) * ptrs.size());
    return static_cast<void* const*>(d);
  }
  void add_norm(float* r, const float* y, const float* w, const float* bias, float* out, int T, int32_t tag,
                NonFinite* rec);
  void run_layers(float* r, const Batch& bt, int l0, int l1, SeqState* const* states, const std::vector<void*>& ptrs,
                  void* const* dptrs, Tap* tap, NonFinite* rec, float* final_out);
  void forward_dev(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states, float* hidden,
                   Tap* tap);
  void lm_head_dev(const float* hidden, int rows, float* logits);
  void decode(std::span<const int32_t> tokens, SeqState* const* states, float* logits);

  // decode's graph (backends with graphs): the one for the last batch of states
  void run_step(const std::vector<void*>& key, const std::function<void()>& step);
  void drop_graph();
  void* graph = nullptr;
  std::vector<void*> graph_key, warm_key;
  uint64_t graph_gen = 0, warm_gen = 0;
  bool graphs_off = false;
  ~SessionCore() { drop_graph(); }
};

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

const char* float_type_name(DType d) {
  return d == DType::F32 ? "fp32" : d == DType::F16 ? "fp16" : d == DType::BF16 ? "bf16" : dtype_name(d);
}

void check_session_options(const Model& m, const SessionOptions& o) {
  const ExecMode mode = o.mode ? *o.mode : (m.is_quantized() ? ExecMode::Int8 : ExecMode::FP32);
  const ModelConfig& cfg = m.config();
  const QuantState* q = m.quantized();
  if (o.dtype != DType::F32 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    fail_option("dtype", "dtype {}: the float weights run in fp32, fp16 or bf16", float_type_name(o.dtype));
  if (o.dtype != DType::F32 && mode != ExecMode::FP32)
    fail_option("dtype",
                "dtype {}: 16-bit weights are for mode fp32; mode {} keeps the quantized model's own precision "
                "(leave --dtype out, or run mode fp32)",
                float_type_name(o.dtype), mode_name(mode));
  if (mode != ExecMode::FP32 && !q)
    fail_option("mode", "mode {}: the model is not quantized (make one with `mambaq quantize`, or run it in mode fp32)",
                mode_name(mode));
  const unsigned mask = o.fp_ops;
  if (mask == 0) return;
  if (mode != ExecMode::Fake)
    fail_option("fp_ops", "fp_ops runs in the fake-quant simulation (mode fake), not in mode {}", mode_name(mode));
  if ((mask & kFpNorm) && cfg.arch == Arch::Mamba1)
    fail_option("fp_ops",
                "fp_ops norm: a Mamba1 model has no quantized norm input (its norms always run in FP32); leave it out");
  if ((mask & kFpHead) && !m.quantized_head() && !(q && q->meta.quantize_embedding))
    fail_option("fp_ops",
                "fp_ops head: this model's LM head and embedding are not quantized (the {} recipe keeps them "
                "in FP32 without --quantize-lm-head / --quantize-embedding), so there is nothing to keep in float; "
                "leave it out",
                q ? q->meta.recipe : "fp");
  // a rotated model (Quamba2) takes float weights from the FP model in its basis
  // (quant/quantized.h fp_in_quantized_basis), whose block norms are folded to ones
  const Model* fp = o.fp;
  if ((mask & (kFpLinear | kFpConv | kFpHadamard | kFpHead)) && q && q->meta.rotate_residual && fp &&
      !std::all_of(fp->weights().layers[0].norm.data, fp->weights().layers[0].norm.data + cfg.d_model,
                   [](float g) { return g == 1.f; }))
    fail_option("fp_ops",
                "fp_ops {}: this model's weights are rotated by the {} recipe; the FP model must be brought "
                "into its basis first (fp_in_quantized_basis)",
                fp_ops_str(mask & (kFpLinear | kFpConv | kFpHadamard | kFpHead)), q->meta.recipe);
}

Session::Session(const Model& m, const SessionOptions& o) {
  BackendRef b = open_backend(o.backend.empty() ? default_backend_name() : o.backend);
  const ExecMode mode = o.mode ? *o.mode : (m.is_quantized() ? ExecMode::Int8 : ExecMode::FP32);
  check_session_options(m, o);
  c_ = std::make_unique<SessionCore>(m, b);
  const ModelConfig& cfg = m.config();
  ExecPlan plan = make_plan(mode, o.fp_ops, cfg.n_layer, m.quantized_head());
  // what this backend declines is refused here, naming it, before anything is uploaded
  const Backend& k = b->get();
  bool int8 = false;
  for (int l = -1; l < cfg.n_layer; ++l)
    for (int kind = 0; kind < kOpKinds; ++kind) int8 |= plan.at(l, OpKind(kind)) == Prec::Int8;
  if (int8 && !(k.can(Op::Gemm, {DType::I8, WFormat::S8, DType::I8}) && k.can(Op::Gemm, {DType::I8, WFormat::S4})))
    fail_option("mode", "mode int8: backend '{}' does not run the integer kernels (yet); run this model in mode fake "
                "(the same quantization, simulated in float) or on a cpu backend", k.name);
  const WFormat wdt = o.dtype == DType::F16 ? WFormat::F16 : o.dtype == DType::BF16 ? WFormat::BF16 : WFormat::F32;
  if (wdt != WFormat::F32 && !k.can(Op::Gemm, {DType::F32, wdt}))
    fail_option("dtype", "dtype {}: backend '{}' has no GEMM over {} weights; use --dtype fp32", float_type_name(o.dtype),
                k.name, float_type_name(o.dtype));
  c_->pp = prepare_plan(cfg, m.weights(), m.quantized(), std::move(plan), o.fp_ops ? o.fp : nullptr, b, wdt);
  bool rotate = false;
  for (const auto& le : c_->pp->layers) rotate |= le.rotate;
  if (rotate && !k.can(Op::Hadamard))
    fail("backend '{}' has no online Hadamard transform (yet), which this model's out_proj needs (the {} recipe "
         "fuses it into the weights); run it on a cpu backend", k.name, m.quantized() ? m.quantized()->meta.recipe : "");
}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Model& Session::model() const { return *c_->m; }
const ModelConfig& Session::config() const { return c_->cfg(); }
ExecMode Session::mode() const { return c_->pp->plan->mode; }
unsigned Session::fp_ops() const { return c_->pp->plan->fp_ops; }
const ExecPlan& Session::plan() const { return *c_->pp->plan; }
std::string Session::backend_name() const { return c_->k().name; }
std::string Session::backend_isa() const { return c_->k().isa; }
bool Session::host_memory() const { return c_->k().host_memory; }
size_t Session::device_bytes() const { return c_->pp->uploaded_bytes + c_->ws.held(); }

size_t Session::weight_bytes() const {
  // What a decoded token reads: each projection in the format its plan runs (int8 codes, or
  // floats), the other tensors as float, the embedding once (tied LM head).
  const PreparedPlan& p = *c_->pp;
  const ModelWeights& w = p.w;
  size_t n = 0;
  auto f = [&](const Weight& x) { n += x.data ? size_t(x.size()) * 4 : 0; };
  // a float GEMM weight in the session's type (--dtype)
  const size_t gb = p.wdt == WFormat::F32 ? 4 : 2;
  auto g = [&](const Weight& x) { n += x.data ? size_t(x.size()) * gb : 0; };
  if (w.tied() && gb == 2 && w.embedding.f32())
    n += size_t(w.embedding.size()) * 2;  // the head's 16-bit copy (a token's embedding row is negligible)
  else
    n += w.embedding.bytes();
  f(w.norm_f), f(w.norm_f_b);
  if (!w.tied()) {
    if (p.head_fw.data)
      g(p.head_fw);
    else if (w.lm_head.f32())
      g(w.lm_head.as_weight());
    else
      n += w.lm_head.bytes();
  }
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const auto& L = w.layers[l];
    for (const Weight* x : {&L.norm, &L.norm_b, &L.in_proj_b, &L.conv_b, &L.dt_proj_b, &L.dt_bias, &L.A_log, &L.D,
                            &L.gnorm, &L.out_proj_b})
      f(*x);
    for (int q = 0; q < kProjs; ++q) {
      const Weight& fw = p.layers[l].fw[size_t(q)];
      if (fw.data && q != kConv)
        g(fw);
      else if (fw.data)
        f(fw);
      else
        n += L.proj(Proj(q)).bytes();
    }
  }
  return n;
}

size_t decode_weight_bytes(const Model& m, std::optional<ExecMode> mode) {
  return Session(m, {.backend = "ref", .mode = mode}).weight_bytes();  // a host backend: nothing is uploaded
}

SeqState Session::new_state(bool exact) {
  const ModelConfig& cfg = c_->cfg();
  const ExecPlan& plan = *c_->pp->plan;
  SeqState s;
  s.d_ = std::make_unique<StateData>();
  s.d_->b = c_->b;
  s.d_->exact = exact;
  s.d_->plan = c_->pp.get();
  const size_t L = size_t(cfg.n_layer), conv = size_t(cfg.d_conv - 1) * cfg.conv_dim(), ssm = cfg.ssm_state_size();
  s.d_->layers.resize(L);
  for (size_t l = 0; l < L; ++l) {
    auto& ly = s.d_->layers[l];
    ly.conv8 = plan.at(int(l), OpKind::Conv) == Prec::Int8;
    ly.ssm8 = plan.at(int(l), OpKind::Ssm) == Prec::Int8 && !exact;
    ly.conv = Buffer(c_->b, conv * (ly.conv8 ? 1 : 4));
    ly.ssm = Buffer(c_->b, ssm * (ly.ssm8 ? 1 : 4));
    c_->k().fill(c_->ctx(), ly.conv.data(), 0, ly.conv.bytes());  // zero bytes: 0.f and code 0
    c_->k().fill(c_->ctx(), ly.ssm.data(), 0, ly.ssm.bytes());
  }
  return s;
}

void Session::copy_state(SeqState& dst, const SeqState& src) {
  MQ_ASSERT(dst.d_ && src.d_ && dst.d_->layers.size() == src.d_->layers.size());
  for (size_t l = 0; l < src.d_->layers.size(); ++l) {
    const auto& a = src.d_->layers[l];
    auto& b = dst.d_->layers[l];
    MQ_ASSERT(a.conv.bytes() == b.conv.bytes() && a.ssm.bytes() == b.ssm.bytes());
    c_->k().copy(c_->ctx(), b.conv.data(), a.conv.data(), a.conv.bytes());
    c_->k().copy(c_->ctx(), b.ssm.data(), a.ssm.data(), a.ssm.bytes());
  }
  dst.pos = src.pos;
}

SeqState Session::clone_state(const SeqState& s) {
  SeqState d = new_state(s.exact());
  copy_state(d, s);
  return d;
}

// Every layer's per-sequence state pointers for layers [l0, l1): four arrays {nseq} per layer
// (conv float, conv int8, ssm float, ssm int8), null where a sequence has no state.
std::vector<void*> SessionCore::state_ptrs(size_t nseq, int l0, int l1, SeqState* const* states) const {
  const size_t per = 4 * nseq;
  std::vector<void*> ptrs(size_t(l1 - l0) * per, nullptr);
  for (size_t s = 0; s < nseq && states; ++s) {
    SeqState* st = states[s];
    if (!st) continue;
    if (!st->d_ || st->d_->plan != pp.get() || st->d_->layers.size() != size_t(cfg().n_layer))
      fail(
          "internal error: sequence state made for another session or execution plan (make states with this session's "
          "new_state)");
    for (int l = l0; l < l1; ++l) {
      auto& ly = st->d_->layers[size_t(l)];
      void** p = ptrs.data() + size_t(l - l0) * per;
      (ly.conv8 ? p[nseq + s] : p[s]) = ly.conv.data();
      (ly.ssm8 ? p[3 * nseq + s] : p[2 * nseq + s]) = ly.ssm.data();
    }
  }
  return ptrs;
}

// The residual stream's block boundary: r += y (y may be null), r checked under `tag`, out =
// norm(r); one backend op where the backend has it.
void SessionCore::add_norm(float* r, const float* y, const float* w, const float* bias, float* out, int T, int32_t tag,
                           NonFinite* rec) {
  const size_t n = size_t(T) * cfg().d_model;
  if (k().add_norm) {
    AddNormArgs a;
    a.r = r, a.y = y, a.w = w, a.b = bias, a.out = out, a.T = T, a.d = cfg().d_model, a.eps = cfg().norm_eps;
    a.layer_norm = !cfg().rms_norm, a.tag = tag, a.rec = rec;
    return k().add_norm(ctx(), a);
  }
  if (y) k().add(ctx(), r, y, n);
  k().check_finite(ctx(), r, int64_t(n), tag, rec);
  block_norm(r, w, bias, out, T);
}

// Layers [l0, l1) over the residual r {T, d_model}; `ptrs` from state_ptrs (host) with its copy
// in backend memory (`dptrs`). With `final_out`, the model's final norm of the residual follows
// (into final_out), fused with the last layer's residual add. No host copies happen here.
void SessionCore::run_layers(float* r, const Batch& bt, int l0, int l1, SeqState* const* states,
                             const std::vector<void*>& ptrs, void* const* dptrs, Tap* tap, NonFinite* rec,
                             float* final_out) {
  const ModelConfig& c = cfg();
  const int dm = c.d_model, T = bt.rows();
  const size_t nseq = size_t(bt.nseq);
  Exec X(c, *pp, ws, tap, bt);
  float* x = ws.f(kSlotNormed, size_t(T) * dm);
  float* mix = ws.f(kSlotMixerOut, size_t(T) * dm);
  std::vector<char> exact(nseq, 0);
  for (size_t s = 0; s < nseq && states; ++s) exact[s] = states[s] && states[s]->exact();
  X.set_exact(exact.data());
  const std::vector<int> offs(bt.offs, bt.offs + nseq + 1);  // for the taps
  const size_t per = 4 * nseq;
  // a tap sees (and may edit) the block output before the next norm reads it: no fusion then
  const bool fuse = tap == nullptr;
  if (l0 < l1) block_norm(r, pp->layers[size_t(l0)].dev.norm, pp->layers[size_t(l0)].dev.norm_b, x, T);
  for (int l = l0; l < l1; ++l) {
    const LayerDev& L = pp->layers[size_t(l)].dev;
    const size_t o = size_t(l - l0) * per;
    LayerStates ls;
    if (states) {
      ls = {ptrs.data() + o, ptrs.data() + o + nseq, ptrs.data() + o + 2 * nseq, ptrs.data() + o + 3 * nseq,
            dptrs + o,       dptrs + o + nseq,       dptrs + o + 2 * nseq,       dptrs + o + 3 * nseq};
    }
    X.set_layer(l, ls);
    if (c.arch == Arch::Mamba1)
      mixer_mamba1(X, c, L, x, mix);
    else
      mixer_mamba2(X, c, L, x, mix);
    X.tap_floats(kTapMixerOut, mix, T, dm, offs);
    const bool last = l + 1 == l1;
    if (fuse && (!last || final_out)) {
      // r += mix, checked; then the next layer's norm (or the final norm) of r
      const LayerDev* next = last ? nullptr : &pp->layers[size_t(l + 1)].dev;
      add_norm(r, mix, next ? next->norm : pp->norm_f, next ? next->norm_b : pp->norm_f_b, next ? x : final_out, T, l,
               rec);
      continue;
    }
    k().add(ctx(), r, mix, size_t(T) * dm);
    k().check_finite(ctx(), r, int64_t(T) * dm, l, rec);
    if (tap) raise_if_nonfinite(rec);  // before the tap reads it
    X.tap_floats(kTapBlockOut, r, T, dm, offs);
    if (!last) block_norm(r, pp->layers[size_t(l + 1)].dev.norm, pp->layers[size_t(l + 1)].dev.norm_b, x, T);
  }
  if (final_out && (l0 == l1 || !fuse)) block_norm(r, pp->norm_f, pp->norm_f_b, final_out, T);
}

void SessionCore::forward_dev(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                              float* hidden, Tap* tap) {
  const int dm = cfg().d_model;
  const std::vector<int> offs = offsets(lens);
  const int T = offs.back();
  MQ_ASSERT(size_t(T) == tokens.size());
  if (T == 0) return;
  NonFinite* rec = finite_rec();
  // r: the residual stream {T, d_model}
  float* r = ws.f(kSlotResidual, size_t(T) * dm);
  embed_dev(tokens, r);
  const Batch bt = batch(offs);
  const std::vector<void*> ptrs = state_ptrs(offs.size() - 1, 0, cfg().n_layer, states);
  run_layers(r, bt, 0, cfg().n_layer, states, ptrs, dev_ptrs(ptrs), tap, rec, hidden);
  k().check_finite(ctx(), hidden, int64_t(T) * dm, -1, rec);
  raise_if_nonfinite(rec);
  Exec X(cfg(), *pp, ws, tap, bt);
  X.set_layer(-1, {});
  X.point("lm_head:input", Act::floats(hidden, T, dm, dm), kSlotQIn);
  if (states)
    for (size_t s = 0; s < lens.size(); ++s)
      if (states[s]) states[s]->pos += lens[s];
}

// One decoding step: the inputs go up in one copy (state pointers, token ids, offsets), the
// step's ops run from them (eagerly, or as one captured graph where the backend has graphs),
// the logits and the non-finite record come back in one copy.
void SessionCore::decode(std::span<const int32_t> tokens, SeqState* const* states, float* logits) {
  const ModelConfig& c = cfg();
  const int nseq = int(tokens.size()), dm = c.d_model, V = c.padded_vocab;
  if (nseq == 0) return;
  for (int s = 0; s < nseq; ++s)
    if (!states || !states[s]) fail("internal error: decode needs every sequence's state");
  for (int32_t id : tokens)
    if (id < 0 || id >= V) fail("token id {} is outside the model's vocabulary [0, {})", id, V);
  const std::vector<void*> ptrs = state_ptrs(size_t(nseq), 0, c.n_layer, states);
  std::vector<int> offs(size_t(nseq) + 1);
  for (int s = 0; s <= nseq; ++s) offs[size_t(s)] = s;
  // staged inputs: [pointers][ids {nseq}][offsets {nseq + 1}]
  const size_t pb = ptrs.size() * sizeof(void*), ib = size_t(nseq) * 4, ob = offs.size() * 4;
  std::vector<char> in(pb + ib + ob);
  std::memcpy(in.data(), ptrs.data(), pb);
  std::memcpy(in.data() + pb, tokens.data(), ib);
  std::memcpy(in.data() + pb + ib, offs.data(), ob);
  // outputs: [logits {nseq, V}][record]
  const size_t lb = size_t(nseq) * V * sizeof(float);
  char* din = static_cast<char*>(ws.bytes(kSlotDecodeIn, in.size()));
  char* dout = static_cast<char*>(ws.bytes(kSlotDecodeOut, lb + sizeof(NonFinite)));
  k().upload(ctx(), din, in.data(), in.size());
  auto* dlogits = reinterpret_cast<float*>(dout);
  auto* rec = reinterpret_cast<NonFinite*>(dout + lb);
  const auto* dptrs = reinterpret_cast<void* const*>(din);
  const auto* dids = reinterpret_cast<const int32_t*>(din + pb);
  Batch bt;
  bt.nseq = nseq, bt.offs = offs.data(), bt.offs_dev = reinterpret_cast<const int*>(din + pb + ib);
  auto step = [&] {
    k().fill(ctx(), rec, 0xff, sizeof(NonFinite));  // index -1: no record
    float* r = ws.f(kSlotResidual, size_t(nseq) * dm);
    float* hidden = ws.f(kSlotHidden, size_t(nseq) * dm);
    EmbedArgs e;
    e.T = nseq, e.ids = dids, e.table = pp->emb, e.out = r, e.ldo = dm;
    k().embed(ctx(), e);
    run_layers(r, bt, 0, c.n_layer, states, ptrs, dptrs, nullptr, rec, hidden);
    k().check_finite(ctx(), hidden, int64_t(nseq) * dm, -1, rec);
    Exec X(c, *pp, ws, nullptr, bt);
    X.set_layer(-1, {});
    X.point("lm_head:input", Act::floats(hidden, nseq, dm, dm), kSlotQIn);  // as forward, then lm_head
    Act h = Act::floats(hidden, nseq, dm, dm);
    const TapExec* te = pp->head.tap("lm_head:input");
    if (te && te->int8) h = X.quantize_at("lm_head:input", h, kSlotQHead);
    X.linear(pp->head_w, h, nullptr, dlogits);
    k().check_finite(ctx(), dlogits, int64_t(nseq) * V, kTagLogits, rec);
  };
  run_step(ptrs, step);
  std::vector<char> out(lb + sizeof(NonFinite));
  k().download(ctx(), out.data(), dout, out.size());
  NonFinite h;
  std::memcpy(&h, out.data() + lb, sizeof h);
  raise_record(h);
  if (logits) std::memcpy(logits, out.data(), lb);
  for (int s = 0; s < nseq; ++s) states[s]->pos += 1;
}

// Runs `step` (queued ops only): eagerly the first time for a batch of states (which also sizes
// every buffer it uses), captured into a graph the second time, then replayed; a capture the
// backend declines leaves the session eager.
void SessionCore::run_step(const std::vector<void*>& key, const std::function<void()>& step) {
  if (!k().has_graphs() || graphs_off) return step();
  const uint64_t gen = ws.generation();
  if (graph && (graph_key != key || graph_gen != gen)) drop_graph();
  if (graph) return k().graph_launch(ctx(), graph);
  if (warm_key != key || warm_gen != gen) {
    step();
    warm_key = key, warm_gen = ws.generation();
    return;
  }
  // graphs are only a faster way to run the same ops: a failed capture says so once and the
  // session decodes eagerly from then on
  std::string why;
  k().graph_begin(ctx());
  try {
    step();
  } catch (const std::exception& e) {
    why = e.what();
  }
  graph = k().graph_end(ctx());
  if (!why.empty() || !graph) {
    if (graph) k().graph_free(ctx(), graph);
    graph = nullptr;
    graphs_off = true;
    std::fprintf(stderr, "mambaq: backend '%s' could not capture a decode step as a graph (%s); decoding without\n",
                 k().name, why.empty() ? "the capture failed" : why.c_str());
    return step();
  }
  MQ_ASSERT(ws.generation() == gen);
  graph_key = key, graph_gen = gen;
  k().graph_launch(ctx(), graph);
}

void SessionCore::drop_graph() {
  if (graph) k().graph_free(ctx(), graph);
  graph = nullptr;
  graph_key.clear();
}

void SessionCore::lm_head_dev(const float* hidden, int rows, float* logits) {
  const int dm = cfg().d_model;
  const std::vector<int> offs = {0, rows};
  Exec X(cfg(), *pp, ws, nullptr, batch(offs));
  X.set_layer(-1, {});
  Act in = Act::floats(const_cast<float*>(hidden), rows, dm, dm);
  // int8 heads read the hidden state as codes (fake plans quantize-dequantized it in forward)
  const TapExec* te = pp->head.tap("lm_head:input");
  if (te && te->int8) in = X.quantize_at("lm_head:input", in, kSlotQHead);
  X.linear(pp->head_w, in, nullptr, logits);
}

void Session::forward(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                      float* hidden, Tap* tap) {
  const size_t n = tokens.size() * size_t(c_->cfg().d_model);
  if (c_->k().host_memory && hidden) return c_->forward_dev(tokens, lens, states, hidden, tap);
  float* h = c_->ws.f(kSlotHidden, std::max<size_t>(n, 1));
  c_->forward_dev(tokens, lens, states, h, tap);
  if (hidden && n) c_->k().download(c_->ctx(), hidden, h, n * sizeof(float));
}

void Session::decode(std::span<const int32_t> tokens, SeqState* const* states, float* logits) {
  c_->decode(tokens, states, logits);
}

Hidden Session::forward_hidden(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                               Tap* tap) {
  const size_t n = tokens.size() * size_t(c_->cfg().d_model);
  auto buf = std::make_shared<Buffer>(c_->b, std::max<size_t>(n, 1) * sizeof(float));
  c_->forward_dev(tokens, lens, states, buf->as<float>(), tap);
  Hidden h;
  h.buf_ = buf;
  h.rows_ = int(tokens.size());
  return h;
}

void Session::download(const Hidden& h, float* out) {
  const auto* b = static_cast<const Buffer*>(h.buf_.get());
  const size_t n = size_t(h.rows_) * c_->cfg().d_model;
  if (n) c_->k().download(c_->ctx(), out, b->data(), n * sizeof(float));
}

namespace {
// Host logits {rows, V}: a non-finite one (an overflow of the LM head's sums) fails naming the token.
void check_logits(const float* logits, int rows, int V) {
  const int64_t i = first_non_finite(logits, int64_t(rows) * V);
  if (i >= 0) fail("non-finite logit ({}) for token id {}: the LM head overflows on this input", logits[i], i % V);
}
}  // namespace

void Session::logits_rows(const Hidden& h, std::span<const int> rows, float* logits) {
  SessionCore& c = *c_;
  const int V = c.cfg().padded_vocab, dm = c.cfg().d_model, n = int(rows.size());
  if (n == 0) return;
  for (int r : rows) MQ_ASSERT(r >= 0 && r < h.rows());
  const std::vector<int32_t> idx(rows.begin(), rows.end());
  float* g = c.ws.f(kSlotScoreRows, size_t(n) * dm);
  const int32_t* di = c.to_dev(kSlotScoreIdx, idx.data(), idx.size());
  c.k().gather_rows(c.ctx(), static_cast<const Buffer*>(h.buf_.get())->as<float>(), dm, di, n, dm, g, dm);
  float* lg = c.k().host_memory ? logits : c.ws.f(kSlotLogits, size_t(n) * V);
  c.lm_head_dev(g, n, lg);
  if (!c.k().host_memory) c.k().download(c.ctx(), logits, lg, sizeof(float) * size_t(n) * V);
  check_logits(logits, n, V);
}

void Session::lm_head(const float* hidden, int rows, float* logits) {
  const int V = c_->cfg().padded_vocab, dm = c_->cfg().d_model;
  if (c_->k().host_memory) {
    c_->lm_head_dev(hidden, rows, logits);
  } else {
    float* h = c_->ws.f(kSlotScoreRows, size_t(rows) * dm);
    c_->k().upload(c_->ctx(), h, hidden, sizeof(float) * size_t(rows) * dm);
    float* lg = c_->ws.f(kSlotLogits, size_t(rows) * V);
    c_->lm_head_dev(h, rows, lg);
    c_->k().download(c_->ctx(), logits, lg, sizeof(float) * size_t(rows) * V);
  }
  // The inputs are finite (checked in forward) and so are the weights (checked at load); only an
  // overflow of the dot products is left. Checked for the few rows of decoding and `logits`;
  // scoring checks its log-likelihoods instead of a second pass over {rows, vocab}.
  if (rows <= 16) check_logits(logits, rows, V);
}

std::vector<float> Session::last_logits(std::span<const int32_t> tokens) {
  if (tokens.empty()) fail("cannot compute logits of an empty prompt");
  const int T = int(tokens.size());
  std::vector<float> hidden(size_t(T) * c_->cfg().d_model);
  const int lens[1] = {T};
  forward(tokens, lens, nullptr, hidden.data());
  std::vector<float> logits(size_t(c_->cfg().padded_vocab));
  lm_head(hidden.data() + size_t(T - 1) * c_->cfg().d_model, 1, logits.data());
  return logits;
}

namespace {
// Every LM-head product of scoring has at least this many rows: below it the kernels switch to
// decode paths (oneDNN's small-M sgemm, the int8/int4 GEMVs) whose float rounding differs, and a
// quantized model amplifies a last-bit difference into a flipped activation code. Padding keeps a
// document's numbers independent of how few rows its batch had.
constexpr int kMinRows = 16;
}  // namespace

void Session::score_rows(const std::vector<RowRef>& rows, const std::vector<int32_t>& targets,
                         std::vector<RowScore>& out) {
  MQ_ASSERT(rows.size() == targets.size());
  SessionCore& c = *c_;
  const int V = c.cfg().padded_vocab, dm = c.cfg().d_model;
  constexpr int kChunk = 256;
  out.resize(rows.size());
  for (int32_t tgt : targets)  // a tokenizer larger than the model's vocabulary
    if (tgt < 0 || tgt >= V)
      fail("scored token id {} is outside the model's vocabulary [0, {}): the tokenizer does not belong to this model",
           tgt, V);
  float* h = c.ws.f(kSlotScoreRows, size_t(kChunk) * dm);
  float* logits = c.ws.f(kSlotLogits, size_t(kChunk) * V);
  auto* lp = static_cast<double*>(c.ws.bytes(kSlotScores, sizeof(double) * kChunk));
  auto* am = static_cast<int32_t*>(c.ws.bytes(kSlotArgmax, sizeof(int32_t) * kChunk));
  std::vector<double> hlp(kChunk);
  std::vector<int32_t> ham(kChunk), idx;
  for (size_t r0 = 0; r0 < rows.size(); r0 += kChunk) {
    const int n = int(std::min<size_t>(kChunk, rows.size() - r0));
    // at least kMinRows rows (copies of the first), for the reason given at kMinRows
    const int np = std::max(n, std::min(kMinRows, kChunk));
    // gather the rows, one gather per run of rows from one hidden buffer
    for (int i = 0; i < np;) {
      const Hidden* src = rows[r0 + size_t(i < n ? i : 0)].h;
      int j = i;
      idx.clear();
      while (j < np && rows[r0 + size_t(j < n ? j : 0)].h == src)
        idx.push_back(rows[r0 + size_t(j < n ? j : 0)].row), ++j;
      const int32_t* di = c.to_dev(kSlotScoreIdx, idx.data(), idx.size());
      c.k().gather_rows(c.ctx(), static_cast<const Buffer*>(src->buf_.get())->as<float>(), dm, di, int(idx.size()), dm,
                        h + size_t(i) * dm, dm);
      i = j;
    }
    c.lm_head_dev(h, np, logits);
    ScoreArgs a;
    a.rows = n, a.V = V, a.ld = V;
    a.logits = logits;
    a.targets = c.to_dev(kSlotTokens, targets.data() + r0, size_t(n));
    a.logprob = lp, a.argmax = am;
    c.k().score_rows(c.ctx(), a);
    c.k().download(c.ctx(), hlp.data(), lp, sizeof(double) * size_t(n));
    c.k().download(c.ctx(), ham.data(), am, sizeof(int32_t) * size_t(n));
    for (int i = 0; i < n; ++i) {
      out[r0 + size_t(i)] = {hlp[size_t(i)], ham[size_t(i)] == targets[r0 + size_t(i)]};
      if (!std::isfinite(hlp[size_t(i)]))
        fail("the log-likelihood of a scored token is {} (the LM head's logits overflow): refusing to report it",
             hlp[size_t(i)]);
    }
  }
}

void Session::embed(std::span<const int32_t> tokens, float* residual) {
  SessionCore& c = *c_;
  const size_t n = tokens.size() * size_t(c.cfg().d_model);
  if (c.k().host_memory) return c.embed_dev(tokens, residual);
  float* r = c.ws.f(kSlotResidual, std::max<size_t>(n, 1));
  c.embed_dev(tokens, r);
  c.k().download(c.ctx(), residual, r, n * sizeof(float));
}

void Session::forward_layers(float* residual, std::span<const int> lens, int l0, int l1, Tap* tap) {
  SessionCore& c = *c_;
  MQ_ASSERT(0 <= l0 && l0 <= l1 && l1 <= c.cfg().n_layer);
  const std::vector<int> offs = offsets(lens);
  if (offs.back() == 0) return;
  const size_t n = size_t(offs.back()) * c.cfg().d_model;
  NonFinite* rec = c.finite_rec();
  float* r = residual;
  if (!c.k().host_memory) {
    r = c.ws.f(kSlotResidual, n);
    c.k().upload(c.ctx(), r, residual, n * sizeof(float));
  }
  c.run_layers(r, c.batch(offs), l0, l1, nullptr, {}, nullptr, tap, rec, nullptr);
  c.raise_if_nonfinite(rec);
  if (!c.k().host_memory) c.k().download(c.ctx(), residual, r, n * sizeof(float));
}

void Session::final_norm(const float* residual, int T, float* hidden) {
  SessionCore& c = *c_;
  const size_t n = size_t(T) * c.cfg().d_model;
  if (c.k().host_memory) return c.block_norm(residual, c.pp->norm_f, c.pp->norm_f_b, hidden, T);
  float* r = c.ws.f(kSlotResidual, n);
  float* h = c.ws.f(kSlotNormed, n);
  c.k().upload(c.ctx(), r, residual, n * sizeof(float));
  c.block_norm(r, c.pp->norm_f, c.pp->norm_f_b, h, T);
  c.k().download(c.ctx(), hidden, h, n * sizeof(float));
}

}  // namespace mambaq
