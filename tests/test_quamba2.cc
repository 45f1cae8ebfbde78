// Quamba2 end to end on both fixtures: the residual-stream rotation (exact in float), int8 /
// W4 kernels against the fake-quant simulation, saved folders (formats, bit-identical reload),
// per-layer precision, GPTQ against round-to-nearest and against an independent plain
// implementation, bad options.
//
// Bounds. Rotation: the rotated model computes the same function up to float rounding of the
// rotated weights and of the transforms (relative ~1e-6 per op, 8 layers): 1e-4 on the logits.
// A8 presets: int8 and fake quantize at the same points with the same scales and differ by float
// rounding that now and then flips one code (test_quamba.cc explains the growth): end-to-end
// logits within 5e-2 relative, >= 90 % top-1 agreement, as for Quamba W8A8. W4A16: no activation
// is quantized; the fake simulation runs the float GEMM over the dequantized weights and the int8
// plan the W4A16 kernel (expanded weights + sgemm for prefill): 1e-5.
#include <filesystem>

#include <cstring>

#include "core/threads.h"
#include "io/safetensors.h"
#include "kernels/wquant.h"
#include "mambaq/checkpoint.h"
#include "mambaq/eval.h"
#include "quant/gptq.h"
#include "quant/head_groups.h"
#include "quant/quantized.h"
#include "quant/recipe.h"
#include "util.h"

using namespace mambaq;
namespace fs = std::filesystem;

namespace {

// A preset's settings without the Mamba2 head grouping (tested on its own below): the preset as
// it applies to a Mamba1 config.
QuantMeta preset(const std::string& p) {
  QuantMeta m;
  ModelConfig mamba1;
  mamba1.arch = Arch::Mamba1;
  apply_quamba2_preset(m, p, mamba1);
  return m;
}

const Model& fp_model(const std::string& rel) {
  static std::map<std::string, std::unique_ptr<Model>> cache;
  auto& m = cache[rel];
  if (!m) m = Model::load(mqtest::repo(rel));
  return *m;
}
QuantizeResult make(const std::string& rel, const QuantMeta& meta) {
  static const auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 256, 16);
  QuantizeInputs in;
  in.calib = &cs;
  in.calib_opts.progress = false;
  in.gptq_samples.assign(cs.samples.begin(), cs.samples.begin() + 8);
  in.progress = false;
  return quantize(fp_model(rel), meta, in);
}
const Model& quantized(const std::string& rel, const std::string& p) {
  static std::map<std::string, std::unique_ptr<Model>> cache;
  auto& m = cache[rel + "|" + p];
  if (!m) m = make(rel, preset(p)).model;
  return *m;
}

std::vector<float> run(Session& m) {
  return mqtest::packed_logits(m,
                               "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                               "must be in want of a wife. However little known the feelings or views of such a man",
                               "Call me Ishmael. Some years ago, never mind how long precisely, having little or no "
                               "money in my purse, and nothing particular to interest me on shore");
}
std::vector<float> run(const Model& m) {  // in its own mode (int8 when quantized)
  Session s(m);
  return run(s);
}

}  // namespace

class Quamba2 : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, Quamba2, ::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"));

TEST_P(Quamba2, ResidualRotationIsExactInFloat) {
  const Model& fp = fp_model(GetParam());
  QuantMeta meta = preset("w4a8");
  ModelWeights w = fp.weights();
  recipe("quamba2").transform(fp.config(), meta, w);
  // the weights did change: the embedding rows are rotated, the block norms folded to ones
  EXPECT_NE(w.embedding.f32()[5], fp.weights().embedding.f32()[5]);
  EXPECT_EQ(w.layers[3].norm.data[7], 1.f);
  EXPECT_NE(fp.weights().layers[3].norm.data[7], 1.f);
  EXPECT_FALSE(w.tied());  // the trained final norm is not all ones: the head gets its own matrix
  auto rot = Model::from_weights(fp.config(), std::move(w), {}, nullptr);
  const auto a = run(fp), b = run(*rot);
  const double e = mqtest::rel_err(b, a);
  std::printf("%s rotated vs original logits: rel err %.2e\n", GetParam(), e);
  EXPECT_LT(e, 1e-4);
}

// backend-independent end-to-end checks of the real kernels against the fake-quant simulation
class Quamba2Preset : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};
INSTANTIATE_TEST_SUITE_P(FixturesPresets, Quamba2Preset,
                         ::testing::Combine(::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"),
                                            ::testing::Values("w4a8", "w4a16", "w8a8")));

TEST_P(Quamba2Preset, Int8AgreesWithFakeQuantAndStaysNearFp) {
  const auto [rel, p] = GetParam();
  const Model& q = quantized(rel, p);
  const Model& fp = fp_model(rel);
  Session fake(q, {.mode = ExecMode::Fake});
  const auto li = run(q), lf = run(fake), l0 = run(fp);
  const int V = q.config().padded_vocab, T = int(li.size() / size_t(V));
  const double e = mqtest::rel_err(li, lf), eq = mqtest::rel_err(lf, l0);
  const int agree = mqtest::top1_agreement(li, lf, V);
  std::printf("%s %s: int8 vs fake %.2e, fake vs fp32 %.2e, top-1 %d/%d\n", rel, p, e, eq, agree, T);
  if (std::string(p) == "w4a16") {
    EXPECT_LT(e, 1e-5);
  } else {
    EXPECT_LT(e, 5e-2);
    EXPECT_GE(agree, T * 9 / 10);
  }
  EXPECT_GT(eq, 0.0);  // quantization did change the model ...
  EXPECT_LT(eq, 0.5);  // ... and it still computes about the same function
  // the weights really are in their formats
  const auto& L = q.weights().layers[1];
  const WFormat wf = std::string(p) == "w8a8" ? WFormat::S8 : WFormat::S4;
  EXPECT_EQ(L.in_proj.format, wf);
  EXPECT_EQ(L.out_proj.format, wf);
  EXPECT_EQ(q.weights().embedding.format, wf);
  EXPECT_EQ(q.weights().lm_head.format, wf);
  EXPECT_EQ(L.conv_w.format, std::string(p) == "w4a16" ? WFormat::F32 : WFormat::S8);
  // the fixtures are embedding-dominated (50280 x 256 of 16.4 M parameters) and the rotation
  // unties the head: two matrices of the vocabulary at 4 (8) bits against one in float, so the
  // bytes a token reads fall to about 1/4 (1/2), scales included
  EXPECT_LT(decode_weight_bytes(q), decode_weight_bytes(fp) / (wf == WFormat::S4 ? 4 : 2));
}

TEST_P(Quamba2Preset, SavedFolderReloadsBitIdentically) {
  const auto [rel, p] = GetParam();
  const Model& q = quantized(rel, p);
  const std::string dir = mqtest::temp_dir(std::string("q2_") + p + (rel[13] == '2' ? "_m2" : "_m1"));
  save_quantized(q, dir, "");
  auto r = Model::load(dir);
  EXPECT_EQ(run(q), run(*r));
  Session f1(q, {.mode = ExecMode::Fake});
  Session rf(*r, {.mode = ExecMode::Fake});
  EXPECT_EQ(run(f1), run(rf));
  EXPECT_EQ(r->num_params(), q.num_params());
  // the folder, as docs/format.md says
  const TensorStore st = load_checkpoint(dir);
  const auto& cfg = q.config();
  const std::string ip = "backbone.layers.0.mixer.in_proj.weight", ips = "backbone.layers.0.mixer.in_proj.weight_scale";
  if (std::string(p) == "w8a8") {
    EXPECT_EQ(st.tensors.at(ip).dtype, DType::I8);
    // per split (Mamba2: z x B C dt) or per tensor (Mamba1), stored per row
    EXPECT_EQ(st.tensors.at(ips).shape, (std::vector<int64_t>{cfg.arch == Arch::Mamba2 ? cfg.in_proj_dim() : 1}));
    EXPECT_EQ(st.tensors.at("backbone.embedding.weight").dtype, DType::I8);
    EXPECT_EQ(st.tensors.at("lm_head.weight_scale").shape, (std::vector<int64_t>{1}));
  } else {
    EXPECT_EQ(st.tensors.at(ip).dtype, DType::U8);
    EXPECT_EQ(st.tensors.at(ip).shape, (std::vector<int64_t>{cfg.in_proj_dim(), cfg.d_model / 2}));
    EXPECT_EQ(st.tensors.at(ips).shape, (std::vector<int64_t>{cfg.in_proj_dim(), cfg.d_model / 128}));
    EXPECT_EQ(st.tensors.at("backbone.embedding.weight_scale").shape, (std::vector<int64_t>{cfg.padded_vocab, 1}));
  }
  // A16 has no activation scales at all; A8 has every layer's
  const bool a8 = std::string(p) != "w4a16";
  EXPECT_EQ(st.has("backbone.layers.0.mixer.in_proj.input_scale"), a8);
  EXPECT_EQ(st.has("lm_head.input_scale"), a8);
}

TEST(Quamba2, LayerConfigGivesEachLayerItsPrecision) {
  const char* rel = "models/mamba2-tiny-hf";
  QuantMeta meta = preset("w4a8");
  meta.gptq = false;
  for (const char* s : {"W4A8", "W4A16", "W8A8", "FP16", "W4A8", "W4A8", "W4A16", "W8A8"})
    meta.layers.push_back(LayerPrecision::parse(s, "test"));
  auto q = make(rel, meta).model;
  const auto& L = q->weights().layers;
  EXPECT_EQ(L[0].in_proj.format, WFormat::S4);
  EXPECT_EQ(L[0].conv_w.format, WFormat::S8);
  EXPECT_EQ(L[1].in_proj.format, WFormat::S4);
  EXPECT_EQ(L[1].conv_w.format, WFormat::F32);  // A16: float conv
  EXPECT_EQ(L[2].in_proj.format, WFormat::S8);
  EXPECT_EQ(L[3].in_proj.format, WFormat::F32);  // FP16: nothing quantized,
  EXPECT_FALSE(L[3].out_proj_rotated);           // no online transform
  // the plan: A16 and FP16 layers keep float states, A8 layers int8 ones
  SeqState s = Session(*q).new_state();
  EXPECT_TRUE(s.ssm_int8(0));
  EXPECT_FALSE(s.ssm_int8(1));
  EXPECT_FALSE(s.ssm_int8(3));
  // scales only where activations are quantized
  EXPECT_NE(q->quantized()->scales.find(0, "in_proj:input"), nullptr);
  EXPECT_EQ(q->quantized()->scales.find(1, "in_proj:input"), nullptr);
  Session fake(*q, {.mode = ExecMode::Fake});
  const auto li = run(*q), lf = run(fake);
  EXPECT_LT(mqtest::rel_err(li, lf), 5e-2);
  const std::string dir = mqtest::temp_dir("q2_layers");
  save_quantized(*q, dir, "");
  auto r = Model::load(dir);
  EXPECT_EQ(run(*r), li);
  ASSERT_EQ(r->quantized()->meta.layers.size(), 8u);
  EXPECT_EQ(r->quantized()->meta.layers[3].name(), "FP16");
  EXPECT_EQ(r->quantized()->meta.layers[1].name(), "W4A16");
}

// Which given settings act (issue 22, item 1): by hand from the recipes' rules.
TEST(Quamba2, SettingsThatCannotActAreNamed) {
  const auto flags = [](const std::vector<InertSetting>& v) {
    std::vector<std::string> f;
    for (const auto& s : v) {
      EXPECT_FALSE(s.why.empty()) << s.flag;
      f.push_back(s.flag);
    }
    return f;
  };
  const std::vector<std::string> all = {"percentile-alpha", "percentile-mode", "calib-num",  "calib-data",
                                        "weight-granularity", "group-size",     "gptq-num",   "output"};
  const auto arch = [](Arch a) {
    ModelConfig c;
    c.arch = a;
    return c;
  };
  QuantMeta q1;  // quamba1 W8A8: the percentile acts; group size and GPTQ's settings do not
  EXPECT_EQ(flags(inert_settings(q1, all)), (std::vector<std::string>{"group-size", "gptq-num"}));
  q1.gptq = true;
  EXPECT_EQ(flags(inert_settings(q1, all)), (std::vector<std::string>{"group-size"}));
  QuantMeta w4a8;  // Mamba2 W4A8 with grouped heads: every observer min-max
  apply_quamba2_preset(w4a8, "w4a8", arch(Arch::Mamba2));
  EXPECT_EQ(flags(inert_settings(w4a8, all)),
            (std::vector<std::string>{"percentile-alpha", "percentile-mode", "weight-granularity"}));
  EXPECT_NE(inert_settings(w4a8, {"percentile-alpha"}).at(0).why.find("--grouped-percentile"), std::string::npos);
  w4a8.grouped_percentile = true;
  EXPECT_EQ(flags(inert_settings(w4a8, all)), (std::vector<std::string>{"weight-granularity"}));
  QuantMeta w4a16;  // float activations: nothing is calibrated, but GPTQ reads the calibration file
  apply_quamba2_preset(w4a16, "w4a16", arch(Arch::Mamba2));
  EXPECT_EQ(flags(inert_settings(w4a16, all)),
            (std::vector<std::string>{"percentile-alpha", "percentile-mode", "calib-num", "weight-granularity"}));
  EXPECT_EQ(flags(inert_settings(w4a16, {"calib-data", "gptq-data"})), (std::vector<std::string>{"calib-data"}));
  QuantMeta w8a8;  // Quamba2 W8A8 on Mamba1: the percentile acts (no head groups), 8-bit weights have no groups
  apply_quamba2_preset(w8a8, "w8a8", arch(Arch::Mamba1));
  EXPECT_EQ(flags(inert_settings(w8a8, all)), (std::vector<std::string>{"weight-granularity", "group-size", "gptq-num"}));
}

TEST(Quamba2, BadOptionsAreRefusedByName) {
  const Model& fp = fp_model("models/mamba2-tiny-hf");
  QuantMeta m = preset("w4a8");
  m.a_bits = 16, m.w_bits = 8;
  EXPECT_ERROR(make("models/mamba2-tiny-hf", m), "a_bits", "W8A16");
  m = preset("w4a8");
  m.group_heads = true;
  EXPECT_ERROR(make("models/mamba-tiny", m), "group_heads", "Mamba1");
  m = preset("w4a8");
  m.layers = {LayerPrecision{4, 8}};
  EXPECT_ERROR(make("models/mamba2-tiny-hf", m), "layer_config", "1 layer precisions for a model of 8 layers");
  EXPECT_ERROR(LayerPrecision::parse("W2A8", "cfg.json: layer 3"), "cfg.json: layer 3", "W2A8");
  // --fp-ops that would need the FP model's (unrotated) weights are refused; ssm works
  const Model& q8 = quantized("models/mamba2-tiny-hf", "w8a8");
  EXPECT_ERROR(Session(q8, {.mode = ExecMode::Fake, .fp_ops = kFpLinear, .fp = &fp}), "fp_ops linear", "rotated",
               "fp_in_quantized_basis");
  Session f(q8, {.mode = ExecMode::Fake, .fp_ops = kFpSsm | kFpHead});
  EXPECT_EQ(f.fp_ops(), unsigned(kFpSsm | kFpHead));
}

// ---- GPTQ ----

namespace {
// A layer's inputs with correlated features (GPTQ's error feedback has something to exploit).
std::vector<float> inputs(int n, int d, uint32_t seed) {
  auto z = mqtest::randn(size_t(n) * d, seed);
  std::vector<float> x(size_t(n) * d);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j)
      x[size_t(t) * d + j] = z[size_t(t) * d + j] + 0.8f * z[size_t(t) * d + (j + 1) % d] + (j % 7 == 0 ? 3.f : 0.f) * z[size_t(t) * d];
  return x;
}
// ||X W^T - X Q^T||
double output_err(const std::vector<float>& X, int n, const std::vector<float>& W, const QTensor& Q) {
  const int rows = Q.rows(), cols = Q.cols();
  const auto D = dequantize_weight(Q);
  double s = 0;
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r) {
      double a = 0;
      for (int c = 0; c < cols; ++c) a += double(X[size_t(t) * cols + c]) * (W[size_t(r) * cols + c] - D[size_t(r) * cols + c]);
      s += a * a;
    }
  return std::sqrt(s);
}

// GPTQ written plainly (double, no lazy blocks, explicit inverse by Gauss-Jordan, Cholesky by
// hand), for 4-bit groups: an independent implementation of the same algorithm.
std::vector<int> plain_gptq(std::vector<double> W, int rows, int cols, std::vector<double> H, int group, double damp) {
  double mean = 0;
  for (int i = 0; i < cols; ++i) mean += H[size_t(i) * cols + i];
  mean /= cols;
  for (int i = 0; i < cols; ++i) H[size_t(i) * cols + i] += damp * mean;
  // inverse
  std::vector<double> A = H, I(size_t(cols) * cols, 0.0);
  for (int i = 0; i < cols; ++i) I[size_t(i) * cols + i] = 1;
  for (int c = 0; c < cols; ++c) {
    const double p = A[size_t(c) * cols + c];
    for (int j = 0; j < cols; ++j) A[size_t(c) * cols + j] /= p, I[size_t(c) * cols + j] /= p;
    for (int r = 0; r < cols; ++r) {
      if (r == c) continue;
      const double f = A[size_t(r) * cols + c];
      for (int j = 0; j < cols; ++j) A[size_t(r) * cols + j] -= f * A[size_t(c) * cols + j], I[size_t(r) * cols + j] -= f * I[size_t(c) * cols + j];
    }
  }
  // upper Cholesky factor U of the inverse: Hinv = U^T U
  std::vector<double> U(size_t(cols) * cols, 0.0);
  for (int i = 0; i < cols; ++i)
    for (int j = i; j < cols; ++j) {
      double s = I[size_t(i) * cols + j];
      for (int k = 0; k < i; ++k) s -= U[size_t(k) * cols + i] * U[size_t(k) * cols + j];
      U[size_t(i) * cols + j] = i == j ? std::sqrt(s) : s / U[size_t(i) * cols + i];
    }
  std::vector<int> q(size_t(rows) * cols);
  std::vector<double> sc(static_cast<size_t>(rows));
  for (int i = 0; i < cols; ++i) {
    if (i % group == 0)
      for (int r = 0; r < rows; ++r) {
        double m = 0;
        for (int k = i; k < i + group; ++k) m = std::max(m, std::abs(W[size_t(r) * cols + k]));
        sc[size_t(r)] = double(float(m) / 7.f);
      }
    for (int r = 0; r < rows; ++r) {
      const double w = W[size_t(r) * cols + i], s = sc[size_t(r)];
      const double c = std::clamp(std::nearbyint(w / s), -7.0, 7.0);
      q[size_t(r) * cols + i] = int(c);
      const double err = (w - c * s) / U[size_t(i) * cols + i];
      for (int j = i + 1; j < cols; ++j) W[size_t(r) * cols + j] -= err * U[size_t(i) * cols + j];
    }
  }
  return q;
}
}  // namespace

TEST(Gptq, BeatsRoundToNearestOnTheLayerOutput) {
  const int rows = 48, cols = 256, n = 1024;
  const auto W = mqtest::randn(size_t(rows) * cols, 11, 0.05f);
  const auto X = inputs(n, cols, 12);
  Hessian h(cols);
  h.add(X.data(), n / 2, cols);
  h.add(X.data() + size_t(n / 2) * cols, n / 2, cols);
  for (const WeightSpec& s : {WeightSpec{4, Granularity::Group, 128, {}}, WeightSpec{8, Granularity::Tensor, 0, {}},
                              WeightSpec{4, Granularity::Group, 64, {}}}) {
    const QTensor rtn = quantize_rtn(W.data(), rows, cols, s);
    const QTensor g = gptq_quantize(W.data(), rows, cols, h.matrix(), s, GptqOptions{});
    const QTensor ga = gptq_quantize(W.data(), rows, cols, h.matrix(), s, GptqOptions{0.01, 128, true});
    const double er = output_err(X, n, W, rtn), eg = output_err(X, n, W, g), ea = output_err(X, n, W, ga);
    std::printf("%d-bit %s: ||XW - XQ|| rtn %.4f gptq %.4f (act-order %.4f)\n", s.bits,
                s.granularity == Granularity::Group ? "groups" : "tensor", er, eg, ea);
    EXPECT_LT(eg, 0.8 * er);
    EXPECT_LT(ea, er);
    EXPECT_EQ(g.format, s.bits == 4 ? WFormat::S4 : WFormat::S8);
  }
}

TEST(Gptq, EqualsAPlainImplementation) {
  const int rows = 8, cols = 64, n = 300, group = 32;
  const auto W = mqtest::randn(size_t(rows) * cols, 21, 0.1f);
  const auto X = inputs(n, cols, 22);
  Hessian h(cols);
  h.add(X.data(), n, cols);
  const auto H = h.matrix();
  // the Hessian itself: 2 X^T X / n, by hand at one entry
  double h35 = 0;
  for (int t = 0; t < n; ++t) h35 += 2.0 * X[size_t(t) * cols + 3] * X[size_t(t) * cols + 5] / n;
  EXPECT_NEAR(H[3 * cols + 5], h35, 1e-4 * std::abs(h35));
  const QTensor g = gptq_quantize(W.data(), rows, cols, H, WeightSpec{4, Granularity::Group, group, {}},
                                  GptqOptions{0.01, 16, false});  // lazy blocks of 16: several per group
  const auto want = plain_gptq(std::vector<double>(W.begin(), W.end()), rows, cols, H, group, 0.01);
  int diff = 0;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) diff += g.code(r, c) != want[size_t(r) * cols + c];
  EXPECT_EQ(diff, 0);
}

TEST(Gptq, IsDeterministicAcrossThreadCounts) {
  const int rows = 16, cols = 128, n = 600;
  const auto W = mqtest::randn(size_t(rows) * cols, 31, 0.1f);
  const auto X = inputs(n, cols, 32);
  std::vector<QTensor> out;
  for (int th : {1, 2}) {
    set_num_threads(th);
    Hessian h(cols);
    h.add(X.data(), n, cols);
    out.push_back(gptq_quantize(W.data(), rows, cols, h.matrix(), WeightSpec{4, Granularity::Group, 128, {}}, {}));
  }
  set_num_threads(0);
  EXPECT_EQ(out[0].scales, out[1].scales);
  EXPECT_EQ(0, std::memcmp(out[0].s4(), out[1].s4(), size_t(rows) * cols / 2));
}

// ---- head reordering and grouping ----

TEST(HeadGroups, WardByHand) {
  // 1-D points 0, 10, 0.1, 10.2, 5, 20 into 3 clusters: (0, 0.1) and (10, 10.2) merge first, then
  // 5 joins (0, 0.1) (increase 2/3 * 4.95^2 = 16.3 < 2/3 * 5.1^2 = 17.3 for (10, 10.2));
  // labels numbered by each cluster's first point
  const std::vector<double> p{0, 10, 0.1, 10.2, 5, 20};
  EXPECT_EQ(ward_clusters(p, 6, 1, 3), (std::vector<int>{0, 1, 0, 1, 0, 2}));
  EXPECT_EQ(ward_clusters(p, 6, 1, 6), (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST(HeadGroups, KmeansByHand) {
  // centres start at 0 and 1: the first assignment puts 2, 10, 11, 12 with 1; the means (0, 7.2)
  // move 1 and 2 to the first cluster; then (1, 11) is stable
  const std::vector<double> p{0, 1, 2, 10, 11, 12};
  EXPECT_EQ(kmeans(p, 6, 1, {0, 1}, 2), (std::vector<int>{0, 0, 0, 1, 1, 1}));
  // 8 sorted positions, centres at positions 0, 2, 4, 6 (1, 1.2, 3, 3.2): converges to
  // {1, 1.08, 1.2}, {2}, {3, 3.08, 3.2}, {4}
  const std::vector<double> q{1, 1.08, 1.2, 2, 3, 3.08, 3.2, 4};
  EXPECT_EQ(kmeans(q, 8, 1, {1, 1.2, 3, 3.2}, 4), (std::vector<int>{0, 0, 0, 1, 2, 2, 2, 3}));
}

TEST(HeadGroups, GroupingByHand) {
  ModelConfig c = fp_model("models/mamba2-tiny-hf").config();
  c.nheads = 4, c.headdim = 8, c.ngroups = 1, c.d_inner = 32;
  // heads 0 and 2 share profile A (up to scale), heads 1 and 3 profile B; channels scrambled by pi
  const double A[8] = {1, 1.08, 1.2, 2, 3, 3.08, 3.2, 4}, B[8] = {1, 1, 1, 1, 1, 1, 1, 10};
  const int pi[8] = {3, 0, 7, 1, 5, 2, 6, 4};
  std::vector<float> stat(32);
  const float scale[4] = {1.f, 2.f, 3.f, 0.5f};
  for (int h = 0; h < 4; ++h)
    for (int i = 0; i < 8; ++i) stat[size_t(h * 8 + pi[i])] = float((h % 2 ? B : A)[i]) * scale[h];
  const HeadOrder o = group_heads(c, stat, 2, 4);
  EXPECT_EQ(o.head, (std::vector<int>{0, 2, 1, 3}));
  EXPECT_EQ(o.groups.head_end, (std::vector<int32_t>{2, 4}));
  // profile A's positions cluster as k-means found by hand above: 3, 1, 3, 1; profile B's
  // positions tie to one centre (empty clusters): equal dim groups
  EXPECT_EQ(o.groups.dim_end, (std::vector<int32_t>{3, 4, 7, 8, 2, 4, 6, 8}));
  // each head's channels in ascending order of the statistic: pi (channels of head 2 are 16 + pi)
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(o.channel[size_t(i)], pi[i]);
    EXPECT_EQ(o.channel[size_t(8 + i)], 16 + pi[i]);
  }
  // the lookup: channel 5 of head group 0 is in dim group 2 ([4, 7)); head 3 (within the SSD
  // group) is in head group 1
  EXPECT_EQ(o.groups.dim_group(0, 0, 5), 2);
  EXPECT_EQ(o.groups.head_group(0, 3), 1);
}

TEST(HeadGroups, ReorderingKeepsTheFunction) {
  const Model& fp = fp_model("models/mamba2-tiny-hf");
  auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 128, 4);
  const auto stats = channel_stats(fp, cs.samples, false);
  ModelWeights w = fp.weights();
  int moved = 0;
  for (int l = 0; l < fp.config().n_layer; ++l) {
    const HeadOrder o = group_heads(fp.config(), stats[size_t(l)]);
    for (size_t i = 0; i < o.channel.size(); ++i) moved += o.channel[i] != int(i);
    reorder_layer(fp.config(), o, w.layers[size_t(l)]);
  }
  EXPECT_GT(moved, 1000);  // the permutation is not the identity
  auto r = Model::from_weights(fp.config(), std::move(w), {}, nullptr);
  EXPECT_LT(mqtest::rel_err(run(*r), run(fp)), 1e-5);  // a permutation: float rounding only
}

TEST(HeadGroups, GroupedModelRunsSavesAndDecodes) {
  const char* rel = "models/mamba2-tiny-hf";
  QuantMeta meta = preset("w4a8");
  meta.group_heads = true;
  auto q = make(rel, meta).model;
  ASSERT_EQ(q->quantized()->groups.size(), 8u);
  const PointScale* xs = q->quantized()->scales.find(2, "x_conv_out");
  ASSERT_NE(xs, nullptr);
  EXPECT_EQ(xs->shape, (std::vector<int64_t>{1, 4, 4}));
  EXPECT_EQ(xs->observer, "grouped-minmax");
  EXPECT_EQ(q->quantized()->scales.find(2, "ssm_state_act:input")->shape, (std::vector<int64_t>{1, 4, 4, 64}));
  EXPECT_EQ(q->quantized()->scales.find(2, "B_conv_out")->shape, (std::vector<int64_t>{1}));
  // the grouped scales differ between blocks (the point of grouping)
  EXPECT_NE(*std::min_element(xs->values.begin(), xs->values.end()), *std::max_element(xs->values.begin(), xs->values.end()));
  Session fake(*q, {.mode = ExecMode::Fake});
  const auto li = run(*q), lf = run(fake);
  const int V = q->config().padded_vocab;
  EXPECT_LT(mqtest::rel_err(li, lf), 5e-2);
  EXPECT_GE(mqtest::top1_agreement(li, lf, V), int(li.size() / size_t(V)) * 9 / 10);
  // prefill then decode with int8 states (grouped state scales) against fake
  auto ids = mqtest::tokenizer().encode("The President of the United States shall, from time to time, give to the Congress "
                                        "information of the state of the union, and recommend to their consideration");
  auto decode = [&](Session& m) {
    SeqState st = m.new_state();
    SeqState* sp[1] = {&st};
    const int dm = m.config().d_model;
    std::vector<float> h(20 * size_t(dm)), out;
    const int l20[1] = {20}, l1[1] = {1};
    m.forward(std::span(ids).first(20), l20, sp, h.data());
    for (size_t t = 20; t < 26; ++t) {
      m.forward(std::span(ids).subspan(t, 1), l1, sp, h.data());
      std::vector<float> lg(static_cast<size_t>(V));
      m.lm_head(h.data(), 1, lg.data());
      out.insert(out.end(), lg.begin(), lg.end());
    }
    return out;
  };
  Session qi(*q);
  EXPECT_LT(mqtest::rel_err(decode(qi), decode(fake)), 5e-2);
  // saved and reloaded: bit-identical, head groups and shaped scales in the folder
  const std::string dir = mqtest::temp_dir("q2_grouped");
  save_quantized(*q, dir, "");
  auto r = Model::load(dir);
  EXPECT_EQ(run(*r), li);
  EXPECT_EQ(r->quantized()->groups[3].dim_end, q->quantized()->groups[3].dim_end);
  const TensorStore st = load_checkpoint(dir);
  EXPECT_EQ(st.tensors.at("backbone.layers.0.mixer.conv1d.x_head_group_range").dtype, DType::I32);
  EXPECT_EQ(st.tensors.at("backbone.layers.0.mixer.conv1d.x_dim_group_range").shape, (std::vector<int64_t>{1, 4, 4}));
  EXPECT_EQ(st.tensors.at("backbone.layers.0.mixer.conv1d.x_scale").shape, (std::vector<int64_t>{1, 4, 4}));
  // the FP model brought into the quantized basis (rotation + the saved permutation) computes the
  // original function, and with every op kind kept in float the fake run is exactly that model
  const Model& fp = fp_model(rel);
  auto basis = fp_in_quantized_basis(fp, *r->quantized());
  const auto lb = run(*basis);
  EXPECT_LT(mqtest::rel_err(lb, run(fp)), 1e-4);
  Session rall(*r, {.mode = ExecMode::Fake, .fp_ops = kFpLinear | kFpConv | kFpSsm | kFpNorm | kFpHadamard | kFpHead,
                    .fp = basis.get()});
  EXPECT_EQ(run(rall), lb);
  // each kind alone moves the fake run towards it
  const double e_all = mqtest::rel_err(lf, lb);
  for (unsigned k : {kFpLinear, kFpSsm, kFpHead}) {
    Session one(*q, {.mode = ExecMode::Fake, .fp_ops = k, .fp = basis.get()});
    const auto lk = run(one);
    EXPECT_NE(lk, lf) << fp_ops_str(k);
    EXPECT_LT(mqtest::rel_err(lk, lb), e_all * 1.05) << fp_ops_str(k);
  }
}

TEST(HeadGroups, GroupedPercentileObserver) {
  // exact mode with alpha 1 is the maximum over all values: the min-max scales, bit for bit;
  // a lower alpha clips every block at or below them, and some strictly
  const char* rel = "models/mamba2-tiny-hf";
  QuantMeta meta = preset("w8a8");
  meta.group_heads = true;
  const auto mm = make(rel, meta);
  meta.grouped_percentile = true;
  meta.pmode = PercentileMode::Exact;
  meta.alpha = 1.0;
  QuantizeInputs in;
  static const auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 256, 16);
  in.calib = &cs;
  in.calib_opts.progress = false;
  in.calib_opts.mode = PercentileMode::Exact;
  in.calib_opts.alpha = 1.0;
  in.progress = false;
  const auto p1 = quantize(fp_model(rel), meta, in);
  in.calib_opts.alpha = 0.999;
  meta.alpha = 0.999;
  const auto p9 = quantize(fp_model(rel), meta, in);
  int lower = 0;
  for (const char* pt : {"x_conv_out", "ssm_state_act:input"}) {
    const PointScale* a = mm.calibration.find(4, pt);
    const PointScale* b = p1.calibration.find(4, pt);
    const PointScale* c = p9.calibration.find(4, pt);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(b->observer, "grouped-percentile");
    EXPECT_EQ(a->values, b->values) << pt;
    for (size_t i = 0; i < a->values.size(); ++i) {
      EXPECT_LE(c->values[i], a->values[i]) << pt << " " << i;
      lower += c->values[i] < a->values[i];
    }
  }
  EXPECT_GT(lower, 0);
  // B and C stay min-max (the recipe's percentile points are x and the state)
  EXPECT_EQ(p9.calibration.find(4, "B_conv_out")->observer, "grouped-minmax");
}

// Every published width: the rotation (Hadamard of 768 = 12 * 64, 2560 = 20 * 128, 4096; d_inner
// 1536, 5120, 8192) and the W4A8 recipe with grouped heads (mamba2-8b's 8 SSD groups), on
// one-layer models with the published shapes and a small vocabulary (seeded random weights).
class Quamba2Widths : public ::testing::TestWithParam<std::tuple<bool, int, int>> {};  // mamba2, d_model, ngroups
INSTANTIATE_TEST_SUITE_P(Published, Quamba2Widths,
                         ::testing::Values(std::tuple{false, 768, 1}, std::tuple{false, 2560, 1}, std::tuple{true, 768, 1},
                                           std::tuple{true, 2560, 1}, std::tuple{true, 4096, 8}));
TEST_P(Quamba2Widths, RotationAndW4A8Work) {
  // not a structured binding: clang 14 does not let lambdas capture those
  const bool m2 = std::get<0>(GetParam());
  const int dm = std::get<1>(GetParam()), G = std::get<2>(GetParam());
  nlohmann::json j = {{"d_model", dm}, {"n_layer", 1}, {"vocab_size", 512}, {"pad_vocab_size_multiple", 16},
                      {"rms_norm", true}, {"residual_in_fp32", true}, {"tie_embeddings", true}};
  j["ssm_cfg"] = m2 ? nlohmann::json{{"layer", "Mamba2"}, {"d_state", 128}, {"headdim", 64}, {"ngroups", G}, {"chunk_size", 256}}
                    : nlohmann::json::object();
  const ModelConfig cfg = parse_config(j, "synthetic");
  auto fp = Model::random(cfg, 7);
  // non-unit norms, so that the folding is exercised
  ModelWeights& fw = fp->weights_mut();
  std::vector<float> g(static_cast<size_t>(dm));
  for (int i = 0; i < dm; ++i) g[size_t(i)] = 0.5f + float(i % 7) / 7.f;
  fw.layers[0].norm = Weight::from_vector(g, {dm});
  fw.norm_f = Weight::from_vector(g, {dm});
  std::vector<int32_t> toks(48);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t((i * 37 + 11) % 500);
  const auto logits_in = [&](Session& m) {
    const int lens[1] = {48};
    std::vector<float> h(48 * size_t(dm)), lg(48 * size_t(cfg.padded_vocab));
    m.forward(toks, lens, nullptr, h.data());
    m.lm_head(h.data(), 48, lg.data());
    return lg;
  };
  const auto logits = [&](const Model& m) {
    Session s(m);
    return logits_in(s);
  };
  QuantMeta meta;
  apply_quamba2_preset(meta, "w4a8", cfg);
  meta.gptq = false;
  ModelWeights w = fp->weights();
  recipe("quamba2").transform(cfg, meta, w);
  auto rot = Model::from_weights(cfg, std::move(w), {}, nullptr);
  const auto l0 = logits(*fp);
  EXPECT_LT(mqtest::rel_err(logits(*rot), l0), 1e-4);
  CalibSamples cs;
  cs.samples.push_back(std::vector<int32_t>(toks.begin(), toks.begin() + 32));
  cs.samples.push_back(std::vector<int32_t>(toks.begin() + 16, toks.end()));
  QuantizeInputs in;
  in.calib = &cs;
  in.calib_opts.progress = false;
  in.progress = false;
  auto q = quantize(*fp, meta, in).model;
  EXPECT_EQ(q->weights().layers[0].in_proj.format, WFormat::S4);
  if (m2) {
    EXPECT_EQ(q->quantized()->groups[0].G, G);
  }
  Session fake(*q, {.mode = ExecMode::Fake});
  const auto li = logits(*q), lf = logits_in(fake);
  EXPECT_LT(mqtest::rel_err(li, lf), 5e-2);
}
