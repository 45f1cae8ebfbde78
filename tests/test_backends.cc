// Whole models on several backends in one process: sessions of one Model on `ref` and `cpu` agree
// (both fixtures, fp32 and every quantized mode), and the test-only `checked` backend — ref behind
// a memory that refuses every pointer it did not allocate — runs a whole forward, a decode loop and
// an evaluation task: no host pointer reaches a kernel, the property a GPU backend depends on.
//
// Bounds: ref computes in double where cpu computes in fp32 with another summation order (kernel
// tests: 1e-6 relative per op, 2e-5 for scans); through 8 layers and the LM head the logits of
// fp32 plans agree to 1e-4 relative with every top-1 token equal; fake and int8 plans round
// activations to codes, where a last-bit difference can flip a code (as int8 vs fake,
// test_quamba.cc): 5e-2, top-1 equal at >= 90 % of positions. `checked` is ref itself, so it
// equals ref bit for bit.
#include <map>

#include "dev.h"
#include "kernels/backend.h"
#include "mambaq/eval.h"
#include "quant/quantized.h"
#include "util.h"

using namespace mambaq;

namespace {

// A fixture and its Quamba (W8A8) and Quamba2 W4A8 versions, made once.
struct Fixture {
  std::unique_ptr<Model> fp, q1, q2;
};
const Fixture& fixture(const std::string& rel) {
  static std::map<std::string, Fixture> cache;
  Fixture& f = cache[rel];
  if (!f.fp) {
    f.fp = Model::load(mqtest::repo(rel));
    static const auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 128, 4);
    QuantizeInputs in;
    in.calib = &cs;
    in.calib_opts.progress = false;
    in.progress = false;
    f.q1 = quantize(*f.fp, QuantMeta{}, in).model;
    QuantMeta m2;
    apply_quamba2_preset(m2, "w4a8", f.fp->config());
    m2.gptq = false;
    f.q2 = quantize(*f.fp, m2, in).model;
  }
  return f;
}

std::vector<float> logits(Session& s) {
  return mqtest::packed_logits(s, "It is a truth universally acknowledged, that a single man in possession",
                               "Call me Ishmael. Some years ago, never mind how long precisely");
}

// A small random Mamba1 or Mamba2 model (the shapes the EveryBackend tests run).
std::unique_ptr<Model> small_random_model(bool m2, uint64_t seed) {
  const nlohmann::json j = m2 ? nlohmann::json{{"d_model", 128},   {"n_layer", 3},   {"vocab_size", 1000},
                                               {"ssm_cfg", {{"layer", "Mamba2"}, {"d_state", 64}, {"headdim", 32}}}}
                              : nlohmann::json{{"d_model", 96}, {"n_layer", 3}, {"vocab_size", 1000}};
  return Model::random(parse_config(j, "synthetic"), seed);
}
// The logits of every position of a packed batch.
std::vector<float> all_logits(Session& s, const std::vector<int32_t>& toks, const std::vector<int>& lens) {
  const int T = int(toks.size()), V = s.config().padded_vocab, dm = s.config().d_model;
  std::vector<float> h(size_t(T) * dm), lg(size_t(T) * V);
  s.forward(toks, lens, nullptr, h.data());
  s.lm_head(h.data(), T, lg.data());
  return lg;
}
// Prefill `prefill` tokens, then `steps` one-token decode steps carrying the state: their logits.
std::vector<float> decode_logits(Session& s, const std::vector<int32_t>& toks, int prefill, int steps) {
  const int V = s.config().padded_vocab, dm = s.config().d_model;
  SeqState st = s.new_state();
  SeqState* sp[1] = {&st};
  const int lp[1] = {prefill}, l1[1] = {1};
  std::vector<float> h(size_t(prefill) * dm), lg(static_cast<size_t>(V)), out;
  s.forward(std::span(toks).first(size_t(prefill)), lp, sp, h.data());
  for (int t = prefill; t < prefill + steps; ++t) {
    s.forward(std::span(toks).subspan(size_t(t), 1), l1, sp, h.data());
    s.lm_head(h.data(), 1, lg.data());
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

}  // namespace

class WholeModel : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, WholeModel, ::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"));

TEST_P(WholeModel, RefAndCpuSessionsOfOneModelAgree) {
  const Fixture& f = fixture(GetParam());
  struct Case {
    const Model* m;
    ExecMode mode;
    const char* name;
  };
  const Case cases[] = {{f.fp.get(), ExecMode::FP32, "fp32"},         {f.q1.get(), ExecMode::Fake, "quamba1 fake"},
                        {f.q1.get(), ExecMode::Int8, "quamba1 int8"}, {f.q2.get(), ExecMode::Fake, "w4a8 fake"},
                        {f.q2.get(), ExecMode::Int8, "w4a8 int8"},    {f.q1.get(), ExecMode::FP32, "quamba1 fp32"}};
  const int V = f.fp->config().padded_vocab;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Session r(*c.m, {.backend = "ref", .mode = c.mode}), k(*c.m, {.backend = "cpu", .mode = c.mode});
    EXPECT_EQ(r.backend_name(), "ref");
    const auto a = logits(r), b = logits(k);
    const double e = mqtest::rel_err(b, a);
    const int T = int(a.size() / size_t(V));
    if (c.mode != ExecMode::FP32) {
      EXPECT_LT(e, 5e-2);
      EXPECT_GE(mqtest::top1_agreement(a, b, V), T * 9 / 10);
    } else {
      EXPECT_LT(e, 1e-4);
      EXPECT_EQ(mqtest::top1_agreement(a, b, V), T);
    }
    EXPECT_GT(e, 0.0);  // two implementations really ran
  }
}

TEST_P(WholeModel, CheckedBackendRunsForwardDecodeAndScoringWithoutHostPointers) {
  const Fixture& f = fixture(GetParam());
  const std::string checked = mqtest::checked_backend();
  for (const Model* m : {f.fp.get(), f.q1.get(), f.q2.get()})
    for (ExecMode mode : {ExecMode::FP32, ExecMode::Fake, ExecMode::Int8}) {
      if (mode != ExecMode::FP32 && !m->is_quantized()) continue;
      SCOPED_TRACE(std::string(m->is_quantized() ? m->quantized()->meta.summary() : "fp") + " " + mode_name(mode));
      Session c(*m, {.backend = checked, .mode = mode}), r(*m, {.backend = "ref", .mode = mode});
      EXPECT_FALSE(c.host_memory());
      EXPECT_GT(c.device_bytes(), 0u);  // the weights were uploaded
      const size_t before = mqtest::checked_pointer_count();
      // a whole packed forward: equal to ref's (the same kernels behind the checks)
      EXPECT_EQ(logits(c), logits(r));
      EXPECT_GT(mqtest::checked_pointer_count(), before);
      // prefill + decode with states in backend memory
      const auto ids = mqtest::tokenizer().encode("The President of the United States shall, from time to time, give");
      auto decode = [&](Session& s) {
        SeqState st = s.new_state();
        SeqState* sp[1] = {&st};
        const int l8[1] = {8}, l1[1] = {1};
        s.forward(std::span(ids).first(8), l8, sp, nullptr);
        std::vector<float> out, h(size_t(s.config().d_model)), lg(size_t(s.config().padded_vocab));
        for (size_t t = 8; t < 12; ++t) {
          s.forward(std::span(ids).subspan(t, 1), l1, sp, h.data());
          s.lm_head(h.data(), 1, lg.data());
          out.insert(out.end(), lg.begin(), lg.end());
        }
        EXPECT_EQ(st.pos, 12);
        return out;
      };
      EXPECT_EQ(decode(c), decode(r));
    }
  // an evaluation task (shared-prefix scoring: exact states cloned, rows gathered, scores only
  // downloaded) in int8 and fake
  EvalOptions eo;
  eo.data_dir = mqtest::repo("data");
  eo.progress = false;
  eo.limit = 6;
  for (ExecMode mode : {ExecMode::Int8, ExecMode::Fake}) {
    Session c(*f.q1, {.backend = checked, .mode = mode}), r(*f.q1, {.backend = "ref", .mode = mode});
    for (const char* task : {"arc_easy", "lastword:corpus/lastword.jsonl"}) {
      SCOPED_TRACE(task);
      const TaskResult a = run_task(c, mqtest::tokenizer(), task, eo), b = run_task(r, mqtest::tokenizer(), task, eo);
      EXPECT_EQ(a.per_doc, b.per_doc);
    }
  }
}

// The checked backend does refuse a host pointer (a test of the test).
TEST(CheckedBackend, RefusesPointersItDidNotAllocate) {
  mqtest::Dev d(mqtest::checked_backend());
  std::vector<float> host(16, 1.f), w(4, 1.f);
  float* dev = d.up(host);
  EXPECT_ERROR(d.k.rmsnorm(d.ctx, host.data(), d.up(w), dev, 4, 4, 1e-5f), "checked backend", "rmsnorm", "x");
  EXPECT_ERROR(d.k.add(d.ctx, dev, host.data(), 16), "checked backend", "add", "y");
  d.k.add(d.ctx, dev, dev, 16);  // its own buffers are fine
  EXPECT_EQ(d.down(dev, 1)[0], 2.f);
}

TEST(Backends, RegistryNamesAndErrors) {
  const auto names = backend_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "ref"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "cpu"), names.end());
  EXPECT_ERROR(open_backend("nope"), "backend 'nope'", "registered:", "ref", "cpu");
  for (const auto& n : names) {  // every registered table is complete and says what it supports
    const BackendRef b = open_backend(n);
    EXPECT_TRUE(b->get().can(Op::Gemm, {DType::F32, WFormat::F32}));
    if (b->get().host_memory) {  // the host kernels: int8 and 4-bit, not 16-bit floats
      EXPECT_TRUE(b->get().can(Op::Gemm, {DType::I8, WFormat::S4}));
      EXPECT_FALSE(b->get().can(Op::Gemm, {DType::BF16, WFormat::F32})) << n << ": host kernels compute in fp32";
    }
  }
  const auto m = Model::random(parse_config(nlohmann::json{{"d_model", 64}, {"n_layer", 1}, {"vocab_size", 100}}, "t"), 1);
  SessionOptions o;
  o.backend = "cuda:99";
  EXPECT_ERROR(Session(*m, o), "backend 'cuda");  // not in this build, not here, or no device 99
}

// Every backend this machine runs (a GPU's too, where there is one) against ref on seeded random
// models of both architectures, no files needed: a packed ragged forward in fp32 and a prefill +
// decode with states. Bound: as RefAndCpuSessionsOfOneModelAgree's fp32 (1e-4, every top-1 equal).
class EveryBackend : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Backends, EveryBackend, ::testing::ValuesIn(mqtest::test_backends()));
// --dtype bf16 / fp16 (mode fp32): the projections and LM head in 16 bits on every backend.
// Against the same dtype on ref: only fp32 sums differ, but an activation one fp32 ulp either side
// of a 16-bit rounding boundary moves by a 16-bit ulp, so the bound is 16-bit-sized: 5e-3
// relative, top-1 equal on all but one position. Against fp32: a real change (not a no-op) within
// what 8 (bf16) / 11 (fp16) significant bits allow: 5e-2 / 1e-2 relative; fewer bytes per token.
TEST_P(EveryBackend, SixteenBitWeights) {
  for (bool m2 : {false, true}) {
    SCOPED_TRACE(m2 ? "mamba2" : "mamba1");
    auto m = small_random_model(m2, 12);
    std::vector<int32_t> toks;
    for (int i = 0; i < 40; ++i) toks.push_back(int32_t((i * 41 + 3) % 1000));
    const std::vector<int> lens = {17, 1, 22};
    const int T = 40, V = m->config().padded_vocab;
    Session f32(*m, {.backend = "ref"});
    const auto base = all_logits(f32, toks, lens);
    for (const DType dt : {DType::BF16, DType::F16}) {
      SCOPED_TRACE(float_type_name(dt));
      Session r(*m, {.backend = "ref", .dtype = dt}), b(*m, {.backend = GetParam(), .dtype = dt});
      const auto a = all_logits(r, toks, lens), c = all_logits(b, toks, lens);
      EXPECT_LT(mqtest::rel_err(c, a), 5e-3);
      EXPECT_GE(mqtest::top1_agreement(a, c, V), T - 1);
      const double off = mqtest::rel_err(a, base);
      EXPECT_LT(off, dt == DType::BF16 ? 5e-2 : 1e-2);
      EXPECT_GT(off, dt == DType::BF16 ? 1e-4 : 1e-5) << "16-bit weights changed nothing";
      EXPECT_LT(double(b.weight_bytes()), 0.6 * double(f32.weight_bytes()));
      // decode: 8 tokens of prefill, then 4 one-token steps carrying the state (M = 1 products)
      EXPECT_LT(mqtest::rel_err(decode_logits(b, toks, 8, 4), decode_logits(r, toks, 8, 4)), 5e-3);
    }
  }
}

TEST_P(EveryBackend, RandomModelsAgreeWithRef) {
  for (bool m2 : {false, true}) {
    SCOPED_TRACE(m2 ? "mamba2" : "mamba1");
    auto m = small_random_model(m2, 11);
    Session r(*m, {.backend = "ref"}), b(*m, {.backend = GetParam()});
    std::vector<int32_t> toks;
    for (int i = 0; i < 40; ++i) toks.push_back(int32_t((i * 37 + 5) % 1000));
    const std::vector<int> lens = {17, 1, 22};
    const int T = 40, V = m->config().padded_vocab;
    const auto a = all_logits(r, toks, lens), c = all_logits(b, toks, lens);
    EXPECT_LT(mqtest::rel_err(c, a), 1e-4);
    EXPECT_EQ(mqtest::top1_agreement(a, c, V), T);
    // prefill 10 tokens, then 5 decode steps carrying the state
    EXPECT_LT(mqtest::rel_err(decode_logits(b, toks, 10, 5), decode_logits(r, toks, 10, 5)), 1e-4);
  }
}

// Session::decode (one batched step; on a backend with graphs: eager on the first step with a
// batch of states, captured on the second, replayed after) gives the logits of forward + lm_head
// of the same tokens bit for bit: the same ops in the same order. Three sequences prefilled to
// different lengths, 5 steps; then a batch of two of them (a new graph), 3 steps; fp32 and bf16.
TEST_P(EveryBackend, DecodeStepsAreForwardAndLmHeadBitForBit) {
  for (bool m2 : {false, true})
    for (const DType dt : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(::testing::Message() << (m2 ? "mamba2 " : "mamba1 ") << float_type_name(dt));
      auto m = small_random_model(m2, 21);
      Session s(*m, {.backend = GetParam(), .dtype = dt});
      const int V = m->config().padded_vocab, dm = m->config().d_model;
      std::vector<int32_t> toks;
      for (int i = 0; i < 30; ++i) toks.push_back(int32_t((i * 53 + 11) % 1000));
      const std::vector<int> lens = {13, 4, 13};
      std::vector<SeqState> a, b;
      for (int i = 0; i < 3; ++i) a.push_back(s.new_state());
      SeqState* pa[3] = {&a[0], &a[1], &a[2]};
      s.forward(toks, lens, pa, nullptr);
      for (int i = 0; i < 3; ++i) b.push_back(s.clone_state(a[size_t(i)]));
      SeqState* pb[3] = {&b[0], &b[1], &b[2]};
      int32_t next[3] = {7, 500, 999};
      auto check = [&](int n, SeqState** sa, SeqState** sb, int steps) {
        std::vector<float> la(size_t(n) * V), lb(size_t(n) * V), h(size_t(n) * dm);
        const std::vector<int> ones(size_t(n), 1);
        for (int step = 0; step < steps; ++step) {
          SCOPED_TRACE(::testing::Message() << n << " sequences, step " << step);
          s.decode(std::span<const int32_t>(next, size_t(n)), sa, la.data());
          s.forward(std::span<const int32_t>(next, size_t(n)), ones, sb, h.data());
          s.lm_head(h.data(), n, lb.data());
          ASSERT_EQ(la, lb);
          for (int i = 0; i < n; ++i) {
            EXPECT_EQ(sa[i]->pos, sb[i]->pos);
            next[i] = int32_t(std::max_element(la.begin() + i * V, la.begin() + (i + 1) * V) - la.begin() - i * V);
          }
        }
      };
      check(3, pa, pb, 5);
      SeqState* qa[2] = {&a[2], &a[0]};
      SeqState* qb[2] = {&b[2], &b[0]};
      check(2, qa, qb, 3);
      check(3, pa, pb, 2);
    }
}

// Session::logits_rows (rows gathered and multiplied in the backend, only the logits downloaded)
// gives lm_head of the downloaded rows bit for bit, for rows in any order and repeated.
TEST_P(EveryBackend, LogitsOfKeptRowsAreLmHeadOfThoseRows) {
  for (bool m2 : {false, true}) {
    SCOPED_TRACE(m2 ? "mamba2" : "mamba1");
    auto m = small_random_model(m2, 24);
    Session s(*m, {.backend = GetParam(), .dtype = DType::BF16});
    const int V = m->config().padded_vocab, dm = m->config().d_model;
    std::vector<int32_t> toks;
    for (int i = 0; i < 21; ++i) toks.push_back(int32_t((i * 37 + 5) % 1000));
    const std::vector<int> lens = {9, 12};
    const Hidden h = s.forward_hidden(toks, lens, nullptr);
    std::vector<float> all(size_t(h.rows()) * dm);
    s.download(h, all.data());
    const std::vector<int> rows = {20, 8, 0, 8};
    std::vector<float> got(rows.size() * size_t(V)), want(rows.size() * size_t(V)), sel;
    for (int r : rows) sel.insert(sel.end(), all.begin() + size_t(r) * dm, all.begin() + size_t(r + 1) * dm);
    s.logits_rows(h, rows, got.data());
    s.lm_head(sel.data(), int(rows.size()), want.data());
    EXPECT_EQ(got, want);
  }
}

// An overflow inside a decode step names its place as forward does: a layer's block output, or
// the LM head's logits (the token id), never a NaN handed back as a result.
TEST_P(EveryBackend, DecodeOverflowIsNamed) {
  for (bool m2 : {false, true}) {
    SCOPED_TRACE(m2 ? "mamba2" : "mamba1");
    {
      auto m = small_random_model(m2, 22);
      for (float& v : std::span(const_cast<float*>(m->weights().layers[1].norm.data), size_t(m->config().d_model)))
        v = 3e38f;  // layer 1's in_proj overflows
      Session s(*m, {.backend = GetParam()});
      SeqState st = s.new_state();
      SeqState* sp[1] = {&st};
      const int32_t t[1] = {5};
      for (int i = 0; i < 3; ++i) EXPECT_ERROR(s.decode(t, sp, nullptr), "non-finite", "layer 1", "fp32 mode");
    }
    auto m = small_random_model(m2, 23);
    ASSERT_TRUE(m->weights().tied());
    for (float& v : std::span(const_cast<float*>(m->weights().embedding.f32()) + size_t(77) * m->config().d_model,
                              size_t(m->config().d_model)))
      v = 3e38f;  // the logit of token 77 overflows
    Session s(*m, {.backend = GetParam()});
    SeqState st = s.new_state();
    SeqState* sp[1] = {&st};
    const int32_t t[1] = {5};
    for (int i = 0; i < 3; ++i) EXPECT_ERROR(s.decode(t, sp, nullptr), "non-finite logit", "token id 77");
  }
}

// --dtype where it would mean nothing or cannot be: one error naming the option.
TEST(SixteenBitWeights, RefusedByName) {
  const Fixture& f = fixture("models/mamba-tiny");
  EXPECT_ERROR(Session(*f.q1, {.backend = "ref", .mode = ExecMode::Fake, .dtype = DType::BF16}), "dtype bf16",
               "mode fp32", "mode fake");
  EXPECT_ERROR(Session(*f.fp, {.backend = "ref", .dtype = DType::I8}), "dtype I8", "fp32, fp16 or bf16");
  // a quantized folder in mode fp32 runs its float weights: allowed
  (void)Session(*f.q1, {.backend = "ref", .mode = ExecMode::FP32, .dtype = DType::BF16});
  // beyond fp16's range: named, with the way out
  const ModelConfig cfg = parse_config(nlohmann::json{{"d_model", 64}, {"n_layer", 2}, {"vocab_size", 300}}, "synthetic");
  auto big = Model::random(cfg, 3);
  const_cast<float*>(big->weights().layers[1].out_proj.f32())[5] = 1e5f;
  EXPECT_ERROR(Session(*big, {.backend = "ref", .dtype = DType::F16}), "dtype fp16", "layer 1 out_proj", "65504", "bf16");
  (void)Session(*big, {.backend = "ref", .dtype = DType::BF16});
  // the CLI flag
  const std::string m = mqtest::repo("models/mamba-tiny");
  mqtest::expect_one_line_error(mqtest::run_cli("logits " + m + " --prompt hi --dtype int4"), "--dtype: 'int4'");
  const auto ok = mqtest::run_cli("bench " + m + " --prompt-len 16 --decode 4 --repeats 1 --no-bandwidth --dtype bf16");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find("float weights bf16"), std::string::npos) << ok.out;
}
