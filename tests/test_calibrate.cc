// Calibration: sample windows, and every point's scale against an independent recomputation
// from activations captured one sample at a time.
#include <map>

#include "mambaq/error.h"
#include "quant/calibrate.h"
#include "kernels/hadamard.h"
#include "util.h"

using namespace mambaq;

namespace {

// Captures whole tapped tensors of a single-sequence forward.
struct Capture : Tap {
  std::map<std::pair<int, std::string>, std::vector<float>> got;
  std::map<std::pair<int, std::string>, int> cols;
  void on(int layer, std::string_view point, float* data, int rows, int c, std::span<const int>) override {
    got[{layer, std::string(point)}].assign(data, data + size_t(rows) * c);
    cols[{layer, std::string(point)}] = c;
  }
};

float absmax(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}
}  // namespace

TEST(Calibration, SampleWindows) {
  const std::string d = mqtest::temp_dir("calib_samples");
  // 9 tokens ("a" repeated is one token each with spaces: " a" x 9 after the first)
  mqtest::write_file(d + "/c.jsonl", R"({"text": "one two three four five six seven eight nine"})" "\n"
                                     R"({"text": "short"})" "\n");
  auto cs = make_calib_samples(mqtest::tokenizer(), d + "/c.jsonl", 4, 100);
  EXPECT_EQ(cs.documents, 2u);
  ASSERT_EQ(cs.available, 3u);  // two full windows of 4 (tail of 1 dropped) + the short document
  EXPECT_EQ(cs.samples[0].size(), 4u);
  EXPECT_EQ(cs.samples[1].size(), 4u);
  EXPECT_EQ(cs.samples[2], mqtest::tokenizer().encode("short"));
  auto few = make_calib_samples(mqtest::tokenizer(), d + "/c.jsonl", 4, 2);
  EXPECT_EQ(few.samples.size(), 2u);
  EXPECT_EQ(few.available, 3u);
  mqtest::write_file(d + "/raw.txt", "one two three four five six seven eight nine");
  EXPECT_EQ(make_calib_samples(mqtest::tokenizer(), d + "/raw.txt", 4, 100).samples.size(), 2u);
  EXPECT_ERROR(make_calib_samples(mqtest::tokenizer(), d + "/none.jsonl", 4, 1), "none.jsonl", "not found");
  mqtest::write_file(d + "/empty.txt", "");
  EXPECT_ERROR(make_calib_samples(mqtest::tokenizer(), d + "/empty.txt", 4, 1), "empty.txt", "empty");
  mqtest::write_file(d + "/bad.jsonl", "{\"text\": 3}\n");
  EXPECT_ERROR(make_calib_samples(mqtest::tokenizer(), d + "/bad.jsonl", 4, 1), "bad.jsonl:1");
  EXPECT_ERROR(make_calib_samples(mqtest::tokenizer(), d + "/c.jsonl", 0, 1), "calib_seqlen");
}

class CalibBoth : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, CalibBoth, ::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"));

TEST_P(CalibBoth, ScalesEqualAnIndependentRecomputation) {
  auto m = Model::load(mqtest::repo(GetParam()));
  Session S(*m);
  const auto& c = m->config();
  auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 64, 5);
  ASSERT_EQ(cs.samples.size(), 5u);
  CalibOptions ema;
  ema.progress = false;
  ema.batch_tokens = 128;  // two samples per forward: exercises per-sample splitting of packed batches
  CalibOptions exact1 = ema;
  exact1.alpha = 1.0;
  exact1.mode = PercentileMode::Exact;
  auto a = calibrate(*m, cs, ema), b = calibrate(*m, cs, exact1);
  // capture each sample alone
  std::vector<Capture> caps(cs.samples.size());
  std::vector<SeqState> states;
  for (size_t s = 0; s < cs.samples.size(); ++s) {
    states.push_back(S.new_state());
    SeqState* sp[1] = {&states.back()};
    std::vector<float> h(cs.samples[s].size() * size_t(c.d_model));
    const int lens[1] = {int(cs.samples[s].size())};
    S.forward(cs.samples[s], lens, sp, h.data(), &caps[s]);
  }
  const std::string u = c.arch == Arch::Mamba1 ? "x_proj:input" : "xBC_conv_out";
  for (int l : {0, c.n_layer - 1}) {
    // min-max point: max over all samples
    float mx = 0;
    for (auto& cap : caps) mx = std::max(mx, absmax(cap.got[{l, "in_proj:input"}]));
    EXPECT_NEAR(a.find(l, "in_proj:input")->amax, mx, 1e-5 * mx);
    EXPECT_EQ(a.find(l, "in_proj:input")->observer, "minmax");
    EXPECT_FLOAT_EQ(a.find(l, "in_proj:input")->scale, a.find(l, "in_proj:input")->amax / 127.f);
    // SSM input: ema of per-sample quantiles (alpha 0.9995), and the plain max with alpha 1 exact
    double e = 0, umax = 0;
    for (size_t s = 0; s < caps.size(); ++s) {
      std::vector<float> x = caps[s].got[{l, u}];
      if (c.arch == Arch::Mamba2) {  // the x part of xBC
        const int cd = c.conv_dim();
        std::vector<float> xs;
        for (size_t r = 0; r < x.size() / size_t(cd); ++r)
          xs.insert(xs.end(), x.begin() + std::ptrdiff_t(r * cd), x.begin() + std::ptrdiff_t(r * cd + size_t(c.d_inner)));
        x = xs;
      }
      const double q = ref::abs_quantile_sorted(x, 0.9995);
      e = s == 0 ? q : e + 0.01 * (q - e);
      umax = std::max(umax, double(absmax(x)));
    }
    const std::string un = c.arch == Arch::Mamba1 ? "x_proj:input" : "x_conv_out";
    EXPECT_NEAR(a.find(l, un)->amax, e, 1e-4 * e) << un;
    EXPECT_EQ(a.find(l, un)->observer, "percentile");
    EXPECT_NEAR(b.find(l, un)->amax, umax, 1e-5 * umax);
    // SSM state at the end of each sample, percentile over all of them (exact, alpha 1 = max)
    float smax = 0;
    for (auto& st : states) smax = std::max(smax, absmax(st.ssm_values(l)));
    EXPECT_NEAR(b.find(l, "ssm_state_act:input")->amax, smax, 1e-5 * smax);
    // out_proj input is observed after the Hadamard transform
    float hmax = 0;
    for (auto& cap : caps) {
      auto y = cap.got[{l, "out_proj:input"}];
      hadamard_transform(y.data(), int(y.size() / size_t(c.d_inner)), c.d_inner, c.d_inner);
      hmax = std::max(hmax, absmax(y));
    }
    EXPECT_NEAR(a.find(l, "out_proj:input")->amax, hmax, 1e-5 * hmax);
  }
  float hl = 0;
  for (auto& cap : caps) hl = std::max(hl, absmax(cap.got[{-1, "lm_head:input"}]));
  EXPECT_NEAR(a.find(-1, "lm_head:input")->amax, hl, 1e-5 * hl);
  const size_t per_layer = c.arch == Arch::Mamba1 ? 7 : 9;  // Mamba2: + z, xBC, dt
  EXPECT_EQ(a.points.size(), per_layer * size_t(c.n_layer) + 1);
  for (const auto& p : a.points) EXPECT_GT(p.scale, 0.f) << p.layer << " " << p.point;
}
