// Analysis tools: compare (statistics checked against hand-computed cases, self-compare, FP32 vs
// int8), scales (listing, diff, errors).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analysis/compare.h"
#include "analysis/explog.h"
#include "analysis/report.h"
#include "analysis/sweep.h"
#include "io/json_file.h"
#include "io/npz.h"
#include "util.h"

using namespace mambaq;
using mqtest::run_cli;

namespace {
// One quantized mamba-tiny for the tests of this file.
const std::string& quantized_tiny(const std::string& extra = "") {
  static std::map<std::string, std::string> made;
  auto it = made.find(extra);
  if (it != made.end()) return it->second;
  const std::string out = mqtest::temp_dir("analysis_q" + std::to_string(made.size())) + "/q";
  auto r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + out + " -q --no-log --calib-num 8 " + extra);
  EXPECT_EQ(r.code, 0) << r.err;
  return made[extra] = out;
}
}  // namespace

TEST(CompareStats, HandComputed) {
  // ref = 1, 2, 3, 4; cand = 1, 2, 3, 6: diff = 0, 0, 0, 2
  const float ref[] = {1, 2, 3, 4}, cand[] = {1, 2, 3, 6};
  const TensorStats s = compare_tensors(ref, cand, 4);
  EXPECT_DOUBLE_EQ(s.mse, 1.0);                 // 4 / 4
  EXPECT_DOUBLE_EQ(s.rmse, 1.0);
  EXPECT_DOUBLE_EQ(s.mae, 0.5);                 // 2 / 4
  EXPECT_DOUBLE_EQ(s.max_abs, 2.0);
  EXPECT_DOUBLE_EQ(s.rel_mse, 1.0 / 7.5);       // mean(ref^2) = 30 / 4
  EXPECT_DOUBLE_EQ(s.rel_mae, 0.5 / 2.5);       // mean|ref| = 2.5
  EXPECT_DOUBLE_EQ(s.ref_mean, 2.5);
  EXPECT_DOUBLE_EQ(s.cand_mean, 3.0);
  EXPECT_DOUBLE_EQ(s.diff_mean, 0.5);
  EXPECT_NEAR(s.ref_std, std::sqrt(1.25), 1e-12);
  // Pearson: x - mean = -1.5 -0.5 0.5 1.5; y - mean = -2 -1 0 3: sxy = 3+0.5+0+4.5 = 8, sxx = 5, syy = 14
  EXPECT_NEAR(s.corr, 8.0 / std::sqrt(5.0 * 14.0), 1e-12);
  // |diff| sorted 0 0 0 2: numpy percentile (linear): p50 = 0, p90 = pos 2.7 -> 0 + 0.7 * 2 = 1.4
  EXPECT_DOUBLE_EQ(s.p50, 0.0);
  EXPECT_NEAR(s.p90, 1.4, 1e-6);
  EXPECT_NEAR(s.p99, 0.0 + 0.97 * 2, 1e-6);
  EXPECT_EQ(rel_mae_band(0.0005), "excellent");
  EXPECT_EQ(rel_mae_band(0.005), "very good");
  EXPECT_EQ(rel_mae_band(0.03), "good");
  EXPECT_EQ(rel_mae_band(0.07), "fair");
  EXPECT_EQ(rel_mae_band(0.2), "poor");
  // one band, scale-free: the same relative error reads the same at ten times the magnitude
  const float r1[] = {1.f, -2.f, 3.f, -4.f}, c1[] = {1.02f, -2.04f, 3.06f, -4.08f};
  float r10[4], c10[4];
  for (int i = 0; i < 4; ++i) r10[i] = 10 * r1[i], c10[i] = 10 * c1[i];
  EXPECT_EQ(compare_tensors(r1, c1, 4).to_json()["quality"], compare_tensors(r10, c10, 4).to_json()["quality"]);
}

TEST(CompareStats, KlAndTop1) {
  // two rows, V = 2: identical row -> KL 0; second row: p = (0.5, 0.5) vs q = softmax(0, ln 3) = (0.25, 0.75)
  const float ref[] = {0.f, 1.f, 0.f, 0.f};
  const float cand[] = {0.f, 1.f, 0.f, std::log(3.f)};
  LogitStats ls;
  ls.add(ref, cand, 2, 2);
  const double kl2 = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  EXPECT_NEAR(ls.kl(), kl2 / 2, 1e-7);
  EXPECT_DOUBLE_EQ(ls.top1(), 0.5);  // row 2: the tie resolves to index 0 in ref, cand picks 1
}

TEST(CompareCli, ModelAgainstItselfIsExact) {
  const std::string d = mqtest::temp_dir("compare_self");
  auto r = run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + mqtest::model_dir("mamba-tiny") +
                   " --samples 2 --seqlen 64 --layers all -q --json " + d + "/c.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/c.json");
  ASSERT_EQ(j["layers"].size(), 16u);  // 8 layers x 2 tensors
  for (const auto& l : j["layers"]) {
    EXPECT_EQ(l["mse"].get<double>(), 0.0);
    EXPECT_EQ(l["corr"].get<double>(), 1.0);
    EXPECT_EQ(l["max_abs"].get<double>(), 0.0);
  }
  EXPECT_EQ(j["logits"]["kl"].get<double>(), 0.0);
  EXPECT_EQ(j["logits"]["top1"].get<double>(), 1.0);
}

TEST(CompareCli, Fp32AgainstInt8) {
  const std::string d = mqtest::temp_dir("compare_q");
  const std::string q = quantized_tiny();
  auto r = run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --cand-modes int8,fake --samples 2 "
                   "--seqlen 128 -q --json " + d + "/c.json --save-dir " + d + "/npy");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/c.json");
  EXPECT_EQ(j["cand_mode"], "int8");
  EXPECT_FALSE(j["reference_reused"].get<bool>());
  const auto& l0 = j["layers"][0];
  EXPECT_EQ(l0["layer"], 0);
  EXPECT_EQ(l0["tensor"], "block_out");
  EXPECT_GT(l0["corr"].get<double>(), 0.99);
  EXPECT_GT(l0["mse"].get<double>(), 0.0);
  EXPECT_GT(j["logits"]["kl"].get<double>(), 0.0);
  for (const char* k : {"mse", "rmse", "mae", "rel_mse", "rel_mae", "corr", "p50", "p90", "p95", "p99", "max_abs"})
    EXPECT_TRUE(l0.contains(k)) << k;
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_NE(r.out.find("avg corr"), std::string::npos) << r.out;  // the summary across modes
  // the saved arrays, one folder per run: the reference's layer 0 block output is {positions, d_model}
  const std::string ref_dir = j["runs"][0]["reference_saved"], int8_dir = j["runs"][0]["saved"];
  EXPECT_EQ(ref_dir, j["runs"][1]["reference_saved"]);  // one reference for both modes
  std::vector<size_t> shape;
  auto v = load_npy(ref_dir + "/layer_0_block_out.npy", &shape);
  EXPECT_EQ(shape, (std::vector<size_t>{256, 256}));
  EXPECT_TRUE(std::filesystem::exists(int8_dir + "/layer_7_mixer_out.npy"));
  EXPECT_NE(int8_dir, j["runs"][1]["saved"].get<std::string>());
  // a second run reuses the saved reference and gets the same numbers
  r = run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --samples 2 --seqlen 128 -q --json " + d +
              "/c2.json --save-dir " + d + "/npy");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j2 = read_json_file(d + "/c2.json");
  EXPECT_TRUE(j2["reference_reused"].get<bool>());
  EXPECT_EQ(j2["layers"], j["layers"]);
  EXPECT_EQ(j2["logits"]["kl"], j["logits"]["kl"]);
  // other inputs: not reused
  r = run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --samples 1 --seqlen 128 -q --json " + d +
              "/c3.json --save-dir " + d + "/npy");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(read_json_file(d + "/c3.json")["reference_reused"].get<bool>());
}

TEST(CompareCli, FpOpsAttribution) {
  const std::string d = mqtest::temp_dir("compare_fpops");
  const std::string q = quantized_tiny();
  auto kl = [&](const std::string& ops) {
    auto r = run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --cand-mode fake --samples 1 "
                     "--seqlen 128 -q --force --json " + d + "/c.json" + (ops.empty() ? "" : " --fp-ops " + ops));
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = read_json_file(d + "/c.json");
    EXPECT_EQ(j["runs"][0]["fp_ops"], ops);
    return j["logits"]["kl"].get<double>();
  };
  const double all = kl("linear,conv,ssm,hadamard"), none = kl(""), lin = kl("linear");
  EXPECT_LT(all, 1e-9);   // nothing quantized left, no rotation: the FP32 computation itself
  EXPECT_GT(none, 1e-4);  // plain fake quantization
  EXPECT_LT(lin, none);   // keeping the projections in FP32 removes part of the error
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --fp-ops ssm"),
                        "--cand-mode fake");
  mqtest::expect_one_line_error(run_cli("compare --ref " + q + " --cand " + q + " --cand-mode fake --fp-ops linear"),
                        "FP model");
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --cand-mode fake --fp-ops x"),
                        "--fp-ops: unknown op kind 'x'");
  // eval's per-op spellings in --cand-modes: one run each, the same numbers as --fp-ops
  auto r = run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q +
                   " --cand-modes int8,fake+fp-ops=linear --samples 1 --seqlen 128 -q --force --json " + d + "/m.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/m.json");
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["fp_ops"], "");
  EXPECT_EQ(j["runs"][1]["fp_ops"], "linear");
  EXPECT_EQ(j["runs"][1]["mode"], "fake");
  EXPECT_DOUBLE_EQ(j["runs"][1]["logits"]["kl"].get<double>(), lin);
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q +
                                        " --cand-modes int8+fp-ops=ssm"), "mode fake");
  // the library names its options; the CLI says them as flags
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q + " --cand-mode fake --fp-ops norm"),
                        "--fp-ops norm: a Mamba1 model has no quantized norm input");
}

TEST(CompareStats, DifferenceHistogramAsNumpy) {
  // d = -1, -0.5, 0, 0.5, 1 in 4 bins of 0.5 over [-1, 1], the last closed:
  // numpy.histogram(d, 4) -> [1, 1, 1, 2]
  const float ref[] = {0, 0, 0, 0, 0}, cand[] = {-1, -0.5f, 0, 0.5f, 1};
  DiffHistogram h = diff_histogram(ref, cand, 5, 4);
  EXPECT_EQ(h.lo, -1.0);
  EXPECT_EQ(h.hi, 1.0);
  EXPECT_EQ(h.counts, (std::vector<uint64_t>{1, 1, 1, 2}));
  // every difference equal (2): numpy takes [1.5, 2.5] -> numpy.histogram([2, 2, 2], 2) = [0, 3]
  const float r2[] = {1, 2, 3}, c2[] = {3, 4, 5};
  h = diff_histogram(r2, c2, 3, 2);
  EXPECT_EQ(h.lo, 1.5);
  EXPECT_EQ(h.hi, 2.5);
  EXPECT_EQ(h.counts, (std::vector<uint64_t>{0, 3}));
}

TEST(CompareStats, CandidateNamesTellFoldersApart) {
  EXPECT_EQ(candidate_names({"runs/a9995/q", "runs/a1/q", "x/q8/"}),
            (std::vector<std::string>{"a9995/q", "a1/q", "q8"}));
  EXPECT_EQ(candidate_names({"out/alpha1", "out/alpha9995"}), (std::vector<std::string>{"alpha1", "alpha9995"}));
}

// Two candidates side by side: both kept (JSON, table, one folder each under --save-dir), every
// statistic recomputed here from the saved arrays, runs reused or recomputed as their inputs say.
TEST(CompareCli, TwoCandidatesSideBySide) {
  const std::string d = mqtest::temp_dir("compare_two");
  const std::string a = quantized_tiny(), b = quantized_tiny("--percentile-alpha 1.0");
  const std::string ref = mqtest::model_dir("mamba-tiny");
  const std::string base = "compare --ref " + ref + " --layers 0,2,-1 --seqlen 64 -q --save-dir " + d + "/sd ";
  auto r = run_cli(base + "--cand " + a + " --cand " + b + " --cand-mode int8 --samples 3 --per-sample --json " + d + "/c.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/c.json");
  ASSERT_EQ(j["runs"].size(), 2u);
  const auto &ra = j["runs"][0], &rb = j["runs"][1];
  EXPECT_EQ(ra["cand"], a);
  EXPECT_EQ(rb["cand"], b);
  EXPECT_EQ(ra["cand_id"], model_identity(a));
  EXPECT_EQ(rb["cand_id"], model_identity(b));
  EXPECT_NE(ra["cand_id"], rb["cand_id"]);
  // labelled by what differs between them: alpha
  EXPECT_EQ(ra["label"], "percentile_alpha=0.9995 int8");
  EXPECT_EQ(rb["label"], "percentile_alpha=1.0 int8");
  EXPECT_NE(ra["saved"], rb["saved"]);
  // the summary table has a row per candidate
  EXPECT_NE(r.out.find(ra["label"].get<std::string>() + " "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("avg corr"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sample  tokens"), std::string::npos) << r.out;  // --per-sample
  // what each folder holds is recorded; the statistics follow from the saved arrays
  const std::string ref_dir = ra["reference_saved"];
  for (const auto* run : {&ra, &rb}) {
    const std::string dir = (*run)["saved"];
    auto man = read_json_file(dir + "/manifest.json");
    EXPECT_EQ(man["key"]["model_id"], (*run)["cand_id"]);
    EXPECT_EQ(man["key"]["mode"], "int8");
    EXPECT_EQ(man["inputs"]["sample_tokens"], nlohmann::json({64, 64, 64}));
    EXPECT_EQ(man["files"]["layer_2_mixer_out.npy"]["tensor"], "mixer_out");
    for (const auto& l : (*run)["layers"]) {
      const std::string f = fmt::format("/layer_{}_{}.npy", l["layer"].get<int>(), l["tensor"].get<std::string>());
      const auto rv = load_npy(ref_dir + f), cv = load_npy(dir + f);
      ASSERT_EQ(rv.size(), cv.size());
      const TensorStats s = compare_tensors(rv.data(), cv.data(), rv.size());
      EXPECT_EQ(l["mse"].get<double>(), s.mse);
      EXPECT_EQ(l["corr"].get<double>(), s.corr);
      // the histogram holds every difference, from the smallest to the largest
      double lo = 1e300, hi = -1e300;
      for (size_t i = 0; i < rv.size(); ++i) lo = std::min(lo, double(cv[i]) - rv[i]), hi = std::max(hi, double(cv[i]) - rv[i]);
      const auto& h = l["diff_histogram"];
      EXPECT_EQ(h["lo"].get<double>(), lo);
      EXPECT_EQ(h["hi"].get<double>(), hi);
      uint64_t total = 0;
      for (const auto& c : h["counts"]) total += c.get<uint64_t>();
      EXPECT_EQ(total, rv.size());
      EXPECT_EQ(h["counts"].size(), 100u);
      // per sample: 3 slices of 64 positions; their mean squared errors average to the whole one
      ASSERT_EQ(l["per_sample"].size(), 3u);
      double mse = 0;
      for (const auto& p : l["per_sample"]) mse += p["mse"].get<double>() / 3;
      EXPECT_NEAR(mse, s.mse, 1e-12 * s.mse + 1e-300);
      const size_t n1 = rv.size() / 3;
      EXPECT_EQ(l["per_sample"][1]["mse"].get<double>(), compare_tensors(rv.data() + n1, cv.data() + n1, n1).mse);
    }
    // logits: KL per sample, and their mean is the whole mean (equal token counts)
    const auto& lg = (*run)["logits"];
    ASSERT_EQ(lg["per_sample"].size(), 3u);
    double kl = 0;
    for (const auto& p : lg["per_sample"]) kl += p["kl"].get<double>() / 3;
    EXPECT_NEAR(kl, lg["kl"].get<double>(), 1e-12);
    const auto rl = load_npy(ref_dir + "/logits.npy"), cl = load_npy(dir + "/logits.npy");
    LogitStats ls;
    const int V = int(rl.size() / 192);
    ls.add(rl.data() + 64 * size_t(V), cl.data() + 64 * size_t(V), 64, V);
    EXPECT_EQ(lg["per_sample"][1]["kl"].get<double>(), ls.kl());
  }
  const std::string index = mqtest::read_file(d + "/sd/compare-index.json");
  for (const auto* run : {&ra, &rb})
    EXPECT_NE(index.find(std::filesystem::path((*run)["saved"].get<std::string>()).filename().string()), std::string::npos);

  // B alone, same inputs: reused; A's folder is left as it was
  const std::string a_manifest = mqtest::read_file(ra["saved"].get<std::string>() + "/manifest.json");
  r = run_cli(base + "--cand " + b + " --cand-mode int8 --samples 3 --json " + d + "/c2.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j2 = read_json_file(d + "/c2.json");
  EXPECT_TRUE(j2["runs"][0]["reused"].get<bool>());
  EXPECT_TRUE(j2["runs"][0]["reference_reused"].get<bool>());
  EXPECT_EQ(j2["runs"][0]["layers"], rb["layers"]);
  EXPECT_EQ(mqtest::read_file(ra["saved"].get<std::string>() + "/manifest.json"), a_manifest);
  // other inputs: the stale reference and candidate are recomputed, and say why
  r = run_cli(base + "--cand " + b + " --cand-mode int8 --samples 2 --json " + d + "/c3.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j3 = read_json_file(d + "/c3.json");
  EXPECT_FALSE(j3["runs"][0]["reference_reused"].get<bool>());
  EXPECT_FALSE(j3["runs"][0]["reused"].get<bool>());
  EXPECT_NE(r.err.find("recomputed: it was saved for other inputs"), std::string::npos) << r.err;
  EXPECT_EQ(read_json_file(rb["saved"].get<std::string>() + "/manifest.json")["inputs"]["sample_tokens"],
            nlohmann::json({64, 64}));
  // a damaged folder is recomputed, not read
  std::filesystem::remove(rb["saved"].get<std::string>() + "/layer_2_block_out.npy");
  r = run_cli(base + "--cand " + b + " --cand-mode int8 --samples 2 --json " + d + "/c4.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("missing or damaged"), std::string::npos) << r.err;
  EXPECT_EQ(read_json_file(d + "/c4.json")["runs"][0]["layers"], j3["runs"][0]["layers"]);
  EXPECT_TRUE(std::filesystem::exists(rb["saved"].get<std::string>() + "/layer_2_block_out.npy"));
}

TEST(CompareCli, BadInput) {
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + mqtest::model_dir("mamba2-tiny-hf")),
                        "not the same architecture (architecture mamba vs mamba2");
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + mqtest::model_dir("mamba-tiny") +
                                " --layers 0,9"),
                        "--layers: layer 9");
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + mqtest::model_dir("mamba-tiny") +
                                " --cand-mode int8"),
                        "not quantized");
  mqtest::expect_one_line_error(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + mqtest::model_dir("mamba-tiny") +
                                " --data /nonexistent.txt"),
                        "--data");
}

TEST(ScalesCli, ListMarksObserversAndSummarises) {
  const std::string d = mqtest::temp_dir("scales");
  auto r = run_cli("scales " + quantized_tiny() + " --json " + d + "/s.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/s.json");
  int pct = 0, mm = 0;
  for (const auto& s : j["scales"]) {
    const std::string k = s["kind"], ob = s["observer"];
    if (k == "x_proj:input" || k == "ssm_state_act:input") {
      EXPECT_EQ(ob, "percentile") << k;
    }
    if (k == "in_proj:input" || k == "out_proj:input") {
      EXPECT_EQ(ob, "minmax") << k;
    }
    pct += ob == "percentile";
    mm += ob == "minmax";
    EXPECT_GT(s["scale"].get<double>(), 0.0);
  }
  EXPECT_EQ(pct, 16);           // 8 layers x (SSM input, SSM state)
  EXPECT_EQ(mm, 8 * 5 + 1);     // 5 min-max points per layer + lm_head:input
  EXPECT_EQ(j["summary"]["x_proj:input"]["count"], 8);
  EXPECT_NE(r.out.find("backbone.layers.3.mixer.conv1d.output_scale"), std::string::npos);
}

// Quamba2's grouped kinds are long ("x_proj:input (max/h0g1d2)"-like names): the columns stay
// aligned, as wide as the longest name.
TEST(ScalesCli, ColumnsStayAlignedWithLongKinds) {
  const std::string d = mqtest::temp_dir("scales_cols"), q = d + "/q";
  ASSERT_EQ(run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + q +
                    " --preset w4a8 --calib-num 2 --calib-seqlen 32 --gptq-num 2 --gptq-seqlen 32 --no-log -q").code, 0);
  const auto r = run_cli("scales " + q);
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream in(r.out);
  std::string line;
  size_t end_of_scale = 0, rows = 0;
  bool table = false;
  while (std::getline(in, line)) {
    if (line.find("observer") != std::string::npos && line.find("scale") != std::string::npos) {
      table = true;
      end_of_scale = line.rfind("  ");  // the tensor column follows the scale after two spaces
      continue;
    }
    if (!table) continue;
    if (line.empty()) break;
    EXPECT_EQ(line.rfind("  "), end_of_scale) << line;
    ++rows;
  }
  EXPECT_GT(rows, 10u);
  EXPECT_GT(end_of_scale, 0u);
}

TEST(ScalesCli, DiffOfAlphaSettings) {
  const std::string d = mqtest::temp_dir("scales_diff");
  const std::string a = quantized_tiny(), b = quantized_tiny("--percentile-alpha 1.0");
  auto r = run_cli("scales " + a + " " + b + " --json " + d + "/s.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/s.json");
  // alpha only changes the percentile points: min-max scales are identical, percentile ones grow
  EXPECT_EQ(j["summary"]["in_proj:input"]["max"].get<double>(), 0.0);
  EXPECT_GT(j["summary"]["x_proj:input"]["median"].get<double>(), 0.0);
  for (const auto& s : j["over_threshold"]) {
    EXPECT_EQ(s["observer"], "percentile") << s.dump();
    EXPECT_GT(s["rel_diff"].get<double>(), 0.0);  // alpha 1 clips at the max: larger scales
  }
  EXPECT_GT(j["over_threshold"].size(), 0u);
  // self-diff: nothing differs
  r = run_cli("scales " + a + " " + a + " --json " + d + "/self.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_json_file(d + "/self.json")["over_threshold"].size(), 0u);
  // errors: an FP model, two models of different shapes
  mqtest::expect_one_line_error(run_cli("scales " + mqtest::model_dir("mamba-tiny")), "not a quantized model");
  const std::string m2 = mqtest::temp_dir("scales_m2") + "/q2";
  ASSERT_EQ(run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + m2 + " -q --no-log --calib-num 2").code, 0);
  mqtest::expect_one_line_error(run_cli("scales " + a + " " + m2), "different shapes");
}

// ---- sweeps ----

namespace {
std::string sweep_spec(const std::string& dir, int ncells_alpha = 2) {
  const std::string p = dir + "/s.toml";
  std::string alphas = ncells_alpha == 2 ? "[0.9995, 1.0]" : "[0.9995]";
  mqtest::write_file(p, "[sweep]\nname = \"t\"\ntasks = [\"ppl:corpus/heldout.txt\"]\nlimit = 2\nout_dir = \"" + dir +
                            "/models\"\nlog = \"" + dir + "/log.jsonl\"\n[matrix]\nmodel = [\"" + mqtest::model_dir("mamba-tiny") +
                            "\"]\npercentile_alpha = " + alphas + "\ncalib_num = [4]\ncalib_seqlen = [128]\n");
  return p;
}
// d/s.toml: held-out ppl, limit 2, models in d/o, log d/log.jsonl, mamba-tiny x `matrix` lines.
void tiny_sweep(const std::string& d, const std::string& matrix) {
  mqtest::write_file(d + "/s.toml", "[sweep]\ntasks = [\"ppl:corpus/heldout.txt\"]\nlimit = 2\nout_dir = \"" + d +
                                    "/o\"\nlog = \"" + d + "/log.jsonl\"\n[matrix]\nmodel = [\"" +
                                    mqtest::model_dir("mamba-tiny") + "\"]\n" + matrix);
}
}  // namespace

TEST(Sweep, Quamba2SpecAndFlagValues) {
  auto s = load_sweep(mqtest::repo("examples/sweeps/quamba2.toml"));
  ASSERT_EQ(s.cells.size(), 3u);  // the three presets
  EXPECT_EQ(s.varying, (std::vector<std::string>{"preset"}));
  EXPECT_EQ(s.cells[1].quantize.at("--preset"), "w4a8");
  // a boolean flag becomes one --flag=true|false argument
  const std::string d = mqtest::temp_dir("sweep_q2");
  mqtest::write_file(d + "/s.toml", "[sweep]\nname = \"g\"\ntasks = [\"ppl:corpus/heldout.txt\"]\n[matrix]\n"
                                    "model = [\"m\"]\nrecipe = [\"quamba1\"]\ngptq = [true, false]\n");
  auto g = load_sweep(d + "/s.toml");
  ASSERT_EQ(g.cells.size(), 2u);
  const auto a = sweep_cell_commands(g.cells[0], g, 1, "data").quantize;
  const auto b = sweep_cell_commands(g.cells[1], g, 1, "data").quantize;
  EXPECT_NE(std::find(a.begin(), a.end(), "--gptq=true"), a.end());
  EXPECT_NE(std::find(b.begin(), b.end(), "--gptq=false"), b.end());
}

TEST(Sweep, SpecExpandsToStableCells) {
  const std::string d = mqtest::temp_dir("sweep_spec");
  auto s = load_sweep(mqtest::repo("examples/sweeps/percentile.toml"));
  ASSERT_EQ(s.cells.size(), 4u);  // 2 models x 2 alphas
  EXPECT_EQ(s.varying, (std::vector<std::string>{"model", "percentile_alpha"}));
  std::set<std::string> ids;
  for (const auto& c : s.cells) ids.insert(c.id);
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(s.cells[0].model, "models/mamba-tiny");
  EXPECT_EQ(s.cells[0].quantize.at("--percentile-alpha"), 0.9995);
  EXPECT_EQ(s.cells[1].quantize.at("--percentile-alpha"), 1.0);
  EXPECT_EQ(s.cells[2].model, "models/mamba2-tiny-hf");
  EXPECT_EQ(s.cells[0].eval.at("--mode"), "int8");
  EXPECT_EQ(load_sweep(mqtest::repo("examples/sweeps/percentile.toml")).cells[3].id, s.cells[3].id);  // stable
  const std::string id0 = s.cells[0].id;
  set_sweep_limit(s, 200);
  EXPECT_NE(s.cells[0].id, id0);  // a limited run is another experiment
  // the same spec as JSON
  mqtest::write_file(d + "/s.json", R"({"sweep": {"tasks": ["wikitext2"]}, "matrix": {"model": ["m"], "calib_num": [8, 16]}})");
  EXPECT_EQ(load_sweep(d + "/s.json").cells.size(), 2u);
  // errors name the file and the key or line
  mqtest::write_file(d + "/bad1.toml", "[sweep]\ntasks = [\"wikitext2\"]\n[matrix]\nmodel = [\"m\"]\nalpha = [1.0]\n");
  EXPECT_ERROR(load_sweep(d + "/bad1.toml"), "bad1.toml", "'alpha'");
  mqtest::write_file(d + "/bad2.toml", "[sweep]\ntasks = [\"wikitext2\"\n");
  EXPECT_ERROR(load_sweep(d + "/bad2.toml"), "bad2.toml:", "bad TOML");
  mqtest::write_file(d + "/bad3.toml", "[sweep]\ntasks = [\"wikitext2\"]\n[matrix]\nmodel = []\n");
  EXPECT_ERROR(load_sweep(d + "/bad3.toml"), "bad3.toml", "no values");
  mqtest::write_file(d + "/bad4.toml", "[matrix]\nmodel = [\"m\"]\n");
  EXPECT_ERROR(load_sweep(d + "/bad4.toml"), "bad4.toml", "tasks");
  EXPECT_ERROR(load_sweep(d + "/none.toml"), "none.toml", "not found");
}

TEST(Sweep, ExamplePercentileSweepWithLimit) {
  // The issue's command, from the repository root, logging to a fresh file.
  const std::string d = mqtest::temp_dir("sweep_example");
  const std::string cmd = "cd " + mqtest::repo("") + " && " + MAMBAQ_CLI +
                          " sweep examples/sweeps/percentile.toml --yes --limit 200 --log " + d + "/log.jsonl --out-dir " +
                          d + "/models > " + d + "/out 2> " + d + "/err";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << mqtest::read_file(d + "/err");
  const std::string out = mqtest::read_file(d + "/out");
  EXPECT_NE(out.find("4 cells to run"), std::string::npos) << out;
  size_t evals = 0;
  for (const auto& r : mambaq::read_log(d + "/log.jsonl"))
    if (r.value("kind", "") == "eval") {
      ++evals;
      EXPECT_EQ(r["flags"]["limit"], 200);
      EXPECT_EQ(r["sweep"], "percentile");
    }
  EXPECT_EQ(evals, 4u);
  EXPECT_NE(out.find("lastword acc"), std::string::npos) << out;  // the final table
  EXPECT_NE(out.find(" ±0.0"), std::string::npos) << out;          // differences to the first cell, with stderr
}

// A fresh checkout has no sweeps/ folder: the spec's log folder is created when the sweep runs
// (not by a dry run), as the out_dir is.
TEST(Sweep, CreatesTheLogFolderOfTheSpec) {
  const std::string d = mqtest::temp_dir("sweep_logdir");
  mqtest::write_file(d + "/s.toml", "[sweep]\nname = \"t\"\ntasks = [\"ppl:corpus/heldout.txt\"]\nlimit = 2\nout_dir = \"" + d +
                                    "/new/models\"\nlog = \"" + d + "/new/logs/log.jsonl\"\n[matrix]\nmodel = [\"" +
                                    mqtest::model_dir("mamba-tiny") + "\"]\ncalib_num = [4]\ncalib_seqlen = [128]\n");
  auto r = run_cli("sweep " + d + "/s.toml --dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(d + "/new"));
  r = run_cli("sweep " + d + "/s.toml --yes");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_log(d + "/new/logs/log.jsonl").size(), 2u);  // quantize + eval
  // a log folder that cannot be made is still refused before any work
  mqtest::write_file(d + "/afile", "x");
  mqtest::write_file(d + "/s2.toml", "[sweep]\nname = \"t\"\ntasks = [\"ppl:corpus/heldout.txt\"]\nlog = \"" + d +
                                     "/afile/log.jsonl\"\n[matrix]\nmodel = [\"" + mqtest::model_dir("mamba-tiny") + "\"]\n");
  mqtest::expect_one_line_error(run_cli("sweep " + d + "/s2.toml --yes"), "--log");
}

TEST(Sweep, Quamba1MatrixExamplePlansEightCells) {
  // The Quamba1 part of the user's 20-experiment plan: 4 Mamba1 sizes x alpha {0.9995, 1.0}. The
  // checkpoints are the user's downloads: the plan shows them missing; a run refuses before work.
  const std::string spec = mqtest::repo("examples/sweeps/quamba1_matrix.toml");
  const std::string d = mqtest::temp_dir("sweep_q1");
  auto r = run_cli("sweep " + spec + " --dry-run --log " + d + "/log.jsonl --out-dir " + d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("8 cells"), std::string::npos) << r.out;
  for (const char* m : {"mamba-130m", "mamba-370m", "mamba-1.4b", "mamba-2.8b"}) EXPECT_NE(r.out.find(m), std::string::npos) << m;
  EXPECT_NE(r.out.find("1.0 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model not found"), std::string::npos) << r.out;
  mqtest::expect_one_line_error(run_cli("sweep " + spec + " --yes --log " + d + "/log.jsonl --out-dir " + d),
                                "not found: pretrained_models/mamba-130m");
}

TEST(Sweep, SeveralMatricesReadableFoldersAndActivations) {
  const std::string d = mqtest::temp_dir("sweep_mx");
  mqtest::write_file(d + "/s.toml", "[sweep]\ntasks = [\"wikitext2\"]\nout_dir = \"o\"\n"
                                    "[[matrix]]\nmodel = [\"a/m1\"]\nrecipe = \"quamba1\"\npercentile_alpha = [0.9995, 1.0]\n"
                                    "save_activations = true\n"
                                    "[[matrix]]\nmodel = [\"b/m2\"]\npreset = [\"w4a8\", \"w4a16\"]\ngptq = false\n");
  auto s = load_sweep(d + "/s.toml");
  ASSERT_EQ(s.cells.size(), 4u);  // 2 + 2, in matrix order
  EXPECT_EQ(s.varying, (std::vector<std::string>{"model", "gptq", "percentile_alpha", "preset", "recipe"}));
  EXPECT_EQ(s.cells[0].folder, "pa-0.9995_quamba1/m1");
  EXPECT_EQ(s.cells[1].folder, "pa-1.0_quamba1/m1");
  EXPECT_EQ(s.cells[2].folder, "no-gptq_w4a8/m2");
  EXPECT_EQ(s.cells[3].folder, "no-gptq_w4a16/m2");
  // the quantized folder is the readable one; activations beside it, for the first matrix only
  const auto q0 = sweep_cell_commands(s.cells[1], s, 1, "data").quantize;
  EXPECT_EQ(q0[3], "o/pa-1.0_quamba1/m1");
  auto npz = std::find(q0.begin(), q0.end(), "--save-activations");
  ASSERT_NE(npz, q0.end());
  EXPECT_EQ(*(npz + 1), "o/pa-1.0_quamba1/m1.activations.npz");
  const auto q2 = sweep_cell_commands(s.cells[2], s, 1, "data").quantize;
  EXPECT_EQ(std::find(q2.begin(), q2.end(), "--save-activations"), q2.end());
  // save_activations is an output, not a setting: the cells' ids are those of the spec without it
  mqtest::write_file(d + "/s2.toml", "[sweep]\ntasks = [\"wikitext2\"]\nout_dir = \"o\"\n"
                                     "[[matrix]]\nmodel = [\"a/m1\"]\nrecipe = \"quamba1\"\npercentile_alpha = [0.9995, 1.0]\n");
  EXPECT_TRUE(s.cells[0].save_activations);
  EXPECT_EQ(load_sweep(d + "/s2.toml").cells[1].id, s.cells[1].id);
  // a template: keys in braces; one that leaves out a differing key is refused, naming both cells
  mqtest::write_file(d + "/t.toml", "[sweep]\ntasks = [\"wikitext2\"]\nfolder = \"alpha/{percentile_alpha}/{model}-{id}\"\n"
                                    "[matrix]\nmodel = [\"m\"]\npercentile_alpha = [1.0]\n");
  const auto t = load_sweep(d + "/t.toml");
  EXPECT_EQ(t.cells[0].folder, "alpha/pa-1.0/m-" + t.cells[0].id);
  mqtest::write_file(d + "/u.toml", "[sweep]\ntasks = [\"wikitext2\"]\nfolder = \"{model}\"\n"
                                    "[matrix]\nmodel = [\"m\"]\npercentile_alpha = [0.99, 1.0]\n");
  EXPECT_ERROR(load_sweep(d + "/u.toml"), "u.toml", "cells 0 and 1", "share the folder 'm'");
  mqtest::write_file(d + "/v.toml", "[sweep]\ntasks = [\"wikitext2\"]\nfolder = \"../{model}\"\n[matrix]\nmodel = [\"m\"]\n");
  EXPECT_ERROR(load_sweep(d + "/v.toml"), "v.toml", "relative path inside out_dir");
  mqtest::write_file(d + "/w.toml", "[sweep]\ntasks = [\"wikitext2\"]\n[[matrix]]\nmodel = [\"m\"]\n[[matrix]]\nalpha = 1\n");
  EXPECT_ERROR(load_sweep(d + "/w.toml"), "w.toml", "[[matrix]] 2", "needs model");
}

// The user's 20-experiment plan (examples/sweeps/matrix20.toml) on folders holding only the
// published configs: 20 cells, the 6 Quamba2 cells whose alpha cannot act marked as duplicates of
// the cells they equal, readable folders, an estimate from the work.
TEST(Sweep, TwentyExperimentPlanHasFourteenDistinctCells) {
  const std::string d = mqtest::temp_dir("sweep_m20");
  struct Shape {
    const char* name;
    bool m2;
    int d_model, n_layer, vocab, ngroups;
  };
  for (const Shape& m : {Shape{"mamba-130m", false, 768, 24, 50277, 1}, Shape{"mamba-370m", false, 1024, 48, 50277, 1},
                         Shape{"mamba-1.4b", false, 2048, 48, 50277, 1}, Shape{"mamba-2.8b", false, 2560, 64, 50277, 1},
                         Shape{"mamba2-2.7b", true, 2560, 64, 50277, 1}, Shape{"mamba2-8b", true, 4096, 56, 256000, 8}}) {
    nlohmann::json j = {{"d_model", m.d_model}, {"n_layer", m.n_layer}, {"vocab_size", m.vocab},
                        {"pad_vocab_size_multiple", m.m2 ? 16 : 8}, {"rms_norm", true}, {"residual_in_fp32", true},
                        {"tie_embeddings", true}};
    j["ssm_cfg"] = m.m2 ? nlohmann::json{{"layer", "Mamba2"}, {"d_state", 128}, {"headdim", 64}, {"ngroups", m.ngroups}}
                        : nlohmann::json::object();
    std::filesystem::create_directories(d + "/pretrained_models/" + m.name);
    mqtest::write_file(d + "/pretrained_models/" + m.name + "/config.json", j.dump());
  }
  const std::string cmd = "cd " + d + " && " + MAMBAQ_CLI + " sweep " + mqtest::repo("examples/sweeps/matrix20.toml") +
                          " --dry-run --data-dir " + mqtest::repo("data") + " > out 2> err";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << mqtest::read_file(d + "/err");
  const std::string out = mqtest::read_file(d + "/out");
  EXPECT_NE(out.find("20 cells to run (6 duplicates), 14 distinct settings, estimated"), std::string::npos) << out;
  for (const char* dup : {"duplicate of #8 ", "duplicate of #9 ", "duplicate of #10 ", "duplicate of #14 ",
                          "duplicate of #15 ", "duplicate of #16 "})
    EXPECT_NE(out.find(dup), std::string::npos) << dup << "\n" << out;
  EXPECT_NE(out.find("--percentile-alpha cannot act here"), std::string::npos) << out;
  EXPECT_EQ(out.find("duplicate of #0 "), std::string::npos) << out;  // Quamba1's alpha acts
  EXPECT_NE(out.find("pa-1.0_quamba1/mamba-130m"), std::string::npos) << out;
  EXPECT_NE(out.find("pa-0.99999_w4a16/mamba2-8b"), std::string::npos) << out;
  // the estimate grows with the model: each cell's figure is on its row
  EXPECT_NE(out.find("extrapolated from a synthetic 130m"), std::string::npos) << out;
  // --skip-duplicates plans the 14
  const std::string cmd2 = "cd " + d + " && " + MAMBAQ_CLI + " sweep " + mqtest::repo("examples/sweeps/matrix20.toml") +
                           " --dry-run --skip-duplicates --data-dir " + mqtest::repo("data") + " > out2 2> err2";
  ASSERT_EQ(std::system(cmd2.c_str()), 0) << mqtest::read_file(d + "/err2");
  const std::string out2 = mqtest::read_file(d + "/out2");
  EXPECT_NE(out2.find("14 cells to run (6 duplicates skipped)"), std::string::npos) << out2;
  // no model at all: nothing can run, and the plan says so rather than estimating
  const auto none = run_cli("sweep " + mqtest::repo("examples/sweeps/quamba1_matrix.toml") + " --dry-run --log " + d +
                            "/l.jsonl --out-dir " + d + "/o");
  ASSERT_EQ(none.code, 0) << none.err;
  EXPECT_NE(none.out.find("0 runnable cells (8 without their model)"), std::string::npos) << none.out;
}

// A cell whose settings quantize refuses is shown invalid with quantize's own error, and the run
// refuses before any work.
TEST(Sweep, InvalidCellIsRefusedBeforeWork) {
  const std::string d = mqtest::temp_dir("sweep_invalid");
  tiny_sweep(d, "w_bits = [8, 5]\ncalib_num = [4]\n");
  auto r = run_cli("sweep " + d + "/s.toml --dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("invalid: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("w-bits 5"), std::string::npos) << r.out;
  r = run_cli("sweep " + d + "/s.toml --yes");
  mqtest::expect_one_line_error(r, "cell #1");
  EXPECT_FALSE(std::filesystem::exists(d + "/log.jsonl"));
}

// Cells that differ only in a setting that cannot act (group_size with 8-bit weights) are one
// experiment: --skip-duplicates runs it once and the table shows its result on both rows.
TEST(Sweep, DuplicatesRunOnceOnRequest) {
  const std::string d = mqtest::temp_dir("sweep_dups");
  tiny_sweep(d, "group_size = [64, 128]\ncalib_num = [4]\ncalib_seqlen = [128]\n");
  const auto r = run_cli("sweep " + d + "/s.toml --yes --skip-duplicates");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("duplicate of #0 (--group-size cannot act here): skipped"), std::string::npos) << r.out;
  size_t evals = 0;
  for (const auto& rec : read_log(d + "/log.jsonl")) evals += rec.value("kind", "") == "eval";
  EXPECT_EQ(evals, 1u);
  EXPECT_NE(r.out.find("(= #0)"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("sweep [1/1] #0 g64/mamba-tiny: eval"), std::string::npos) << r.err;  // each step said
  EXPECT_TRUE(std::filesystem::exists(d + "/o/g64/mamba-tiny/config.json"));
}

TEST(Sweep, ResultTextShowsDifferenceToTheFirstCellWithStderr) {
  const nlohmann::json a = {{"results", {{"arc_easy", {{"acc", 0.5}, {"acc_stderr", 0.03}}}}}};
  const nlohmann::json b = {{"results", {{"arc_easy", {{"acc", 0.54}, {"acc_stderr", 0.04}}}}}};
  EXPECT_EQ(mambaq::sweep_result_text(a, "arc_easy acc", &a), "0.5000");
  EXPECT_EQ(mambaq::sweep_result_text(b, "arc_easy acc", &a), "0.5400 (+0.0400 ±0.0500)");  // sqrt(.03^2 + .04^2)
  EXPECT_EQ(mambaq::sweep_result_text(b, "arc_easy acc_norm", &a), "-");
  const nlohmann::json old = {{"results", {{"arc_easy", {{"acc", 0.52}}}}}};  // a record without stderr
  EXPECT_EQ(mambaq::sweep_result_text(old, "arc_easy acc", &a), "0.5200 (+0.0200)");
}

TEST(Sweep, ResumesAfterBeingKilled) {
  const std::string d = mqtest::temp_dir("sweep_kill");
  const std::string spec = sweep_spec(d), log = d + "/log.jsonl";
  // Start it in its own process group, kill the whole group once the first cell is logged.
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    const std::string out = d + "/run1.out";
    freopen(out.c_str(), "w", stdout);
    freopen((d + "/run1.err").c_str(), "w", stderr);
    execl(MAMBAQ_CLI, MAMBAQ_CLI, "sweep", spec.c_str(), "--yes", static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(pid, pid);
  // Ctrl-C (SIGINT to the group) once the second cell's quantize has started: the sweep says which
  // cell it interrupted and how to resume, instead of "failed"
  bool second_started = false;
  for (int i = 0; i < 1200 && !second_started; ++i) {  // up to 2 minutes
    usleep(100000);
    second_started = mqtest::read_file(d + "/run1.err").find("sweep [2/2] #1") != std::string::npos;
  }
  ASSERT_TRUE(second_started) << mqtest::read_file(d + "/run1.err");
  usleep(300000);
  kill(-pid, SIGINT);
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0);
  const std::string err1 = mqtest::read_file(d + "/run1.err");
  EXPECT_NE(err1.find("interrupted by signal 2 during "), std::string::npos) << err1;  // quantize, or eval if it was quick
  EXPECT_NE(err1.find("again to resume"), std::string::npos) << err1;
  size_t evals = 0;
  for (const auto& r : mambaq::read_log(log)) evals += r.value("kind", "") == "eval";
  ASSERT_EQ(evals, 1u) << "killed after the first cell";
  // Run again: the done cell is skipped, the other runs, the table has both.
  auto r = run_cli("sweep " + spec + " --yes");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("done (skipped)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 cell to run (1 done)"), std::string::npos) << r.out;
  evals = 0;
  for (const auto& rec : mambaq::read_log(log)) evals += rec.value("kind", "") == "eval";
  EXPECT_EQ(evals, 2u);
  EXPECT_NE(r.out.find("heldout ppl"), std::string::npos) << r.out;
  // And once more: nothing left to do.
  r = run_cli("sweep " + spec + " --yes");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("0 runnable cells (2 done)"), std::string::npos) << r.out;
  // Without --yes and without a terminal it refuses rather than guess.
  const std::string spec2 = sweep_spec(mqtest::temp_dir("sweep_ask"), 1);
  r = run_cli("sweep " + spec2 + " < /dev/null");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--yes"), std::string::npos) << r.err;
}

// ---- report ----
namespace {
// Well-formedness: every element closed in order (void elements written as <x/>), attributes
// quoted, no stray '<' or '&'. Returns "" or the first problem.
std::string check_well_formed(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = s.find("<html");
  if (i == std::string::npos) return "no <html>";
  while (i < s.size()) {
    const size_t lt = s.find('<', i);
    const size_t amp = s.find('&', i);
    if (amp < lt) {
      const size_t semi = s.find(';', amp);
      if (semi == std::string::npos || semi - amp > 6) return "bare & at " + std::to_string(amp);
    }
    if (lt == std::string::npos) break;
    const size_t gt = s.find('>', lt);
    if (gt == std::string::npos) return "unterminated tag at " + std::to_string(lt);
    std::string tag = s.substr(lt + 1, gt - lt - 1);
    if (tag.find('<') != std::string::npos) return "'<' inside tag at " + std::to_string(lt);
    if (std::count(tag.begin(), tag.end(), '"') % 2) return "unbalanced quotes in <" + tag + ">";
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return "</" + name + "> closes <" + (stack.empty() ? "" : stack.back()) + ">";
      stack.pop_back();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
    }
    i = gt + 1;
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}
// The <svg id="ID"> ... </svg> element of a report.
std::string svg_of(const std::string& html, const std::string& id) {
  const size_t a = html.find("<svg id=\"" + id + "\"");
  if (a == std::string::npos) return "";
  return html.substr(a, html.find("</svg>", a) + 6 - a);
}
size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST(Report, WellFormedWithTheExpectedCharts) {
  EXPECT_EQ(check_well_formed("<html><body><p>a &amp; b</p><br/></body></html>"), "");
  EXPECT_NE(check_well_formed("<html><body><p>a</body></html>"), "");  // the checker can fail
  const std::string d = mqtest::temp_dir("report");
  const std::string a = quantized_tiny(), b = quantized_tiny("--percentile-alpha 1.0");
  ASSERT_EQ(run_cli("compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + a + " --cand-modes int8,fake --layers all "
                    "--samples 1 --seqlen 64 -q --json " + d + "/c.json").code, 0);
  ASSERT_EQ(run_cli("scales " + a + " " + b + " --json " + d + "/s.json").code, 0);
  ASSERT_EQ(run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + d + "/q -q --no-log --calib-num 2 "
                    "--save-activations " + d + "/act.npz").code, 0);
  auto r = run_cli("report --compare " + d + "/c.json --scales " + d + "/s.json --npz " + d + "/act.npz -o " + d +
                   "/r.html --title 'W8A8 <mamba-tiny>'");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = mqtest::read_file(d + "/r.html");
  EXPECT_EQ(check_well_formed(html), "");
  EXPECT_NE(html.find("W8A8 &lt;mamba-tiny&gt;"), std::string::npos);   // escaped title
  EXPECT_EQ(html.find("<script"), std::string::npos);                   // self-contained, static
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org"));       // no external resources
  // 4 error curves, 2 scale charts, 3 layers x 7 histograms, 2 modes x 8 layers x 2 tensors difference
  // histograms, a sample x layer heatmap per mode
  EXPECT_EQ(count(html, "<svg"), 4u + 2u + 21u + 32u + 2u);
  EXPECT_EQ(count(svg_of(html, "samples-0-1"), "<rect"), 8u);  // 1 sample x 8 layers
  EXPECT_NE(html.find("id=\"overlay-mse-block_out\""), std::string::npos);
  EXPECT_NE(html.find("id=\"diff-0-1-7-mixer_out\""), std::string::npos);
  EXPECT_EQ(count(html, "<details"), 1u + 1u + 2u + 1u + 1u);  // overlay, details (+1 per run), scales, snapshot
  EXPECT_NE(html.find("id=\"hist-2-layer_0.x_proj:input\""), std::string::npos);
  EXPECT_EQ(count(html, "<polyline"), 8u);  // 4 charts x 2 modes
  EXPECT_NE(html.find("alpha 0.9999"), std::string::npos);
  // errors: nothing given, an existing file, a wrong JSON
  EXPECT_NE(run_cli("report -o " + d + "/r.html --compare " + d + "/c.json").code, 0);  // exists, no --force
  EXPECT_NE(run_cli("report -o " + d + "/r2.html --compare " + d + "/s.json").err.find("not a `mambaq compare"),
            std::string::npos);
  EXPECT_NE(run_cli("report -o " + d + "/r3.html").err.find("nothing to report"), std::string::npos);
}

namespace {
// A hand-written compare run: block_out and mixer_out of `layers`, MSE = 1e-3 * (layer + 1).
nlohmann::json fake_run(const std::string& cand, const std::string& mode, const std::string& ops, std::vector<int> layers) {
  nlohmann::json ls = nlohmann::json::array();
  for (int l : layers)
    for (const char* t : {"block_out", "mixer_out"}) ls.push_back({{"layer", l}, {"tensor", t}, {"mse", 1e-3 * (l + 1)}, {"corr", 0.999}});
  return {{"cand", cand}, {"mode", mode}, {"fp_ops", ops}, {"layers", ls}, {"logits", {{"kl", 0.01}, {"top1", 0.9}}}};
}
}  // namespace

TEST(Report, OverlaysCompareFilesOneSeriesPerCandidate) {
  ReportInputs in;
  // file 1 (several-candidates shape, labels given): alpha 0.9995 int8 measured at layers 0, 5, 6
  auto r1 = fake_run("out/a9995", "int8", "", {0, 5, 6});
  r1["label"] = "a9995 int8";
  in.compares.push_back({"c1.json", {{"ref", "fp"}, {"ref_mode", "fp32"}, {"samples", 2}, {"seqlen", 64},
                                     {"runs", {r1}}, {"layers", r1["layers"]}, {"logits", r1["logits"]}}});
  // file 2 (one candidate, several modes; no labels): alpha 1.0 fake with ssm kept in FP32, layers 0..2
  auto r2 = fake_run("out/a1", "fake", "ssm", {0, 1, 2});
  in.compares.push_back({"c2.json", {{"ref", "fp"}, {"ref_mode", "fp32"}, {"samples", 2}, {"seqlen", 64}, {"cand", "out/a1"},
                                     {"modes", {r2}}, {"layers", r2["layers"]}, {"logits", r2["logits"]}}});
  const std::string html = render_report(in);
  EXPECT_EQ(check_well_formed(html), "");
  for (const char* id : {"overlay-mse-block_out", "overlay-corr-block_out", "overlay-mse-mixer_out", "overlay-corr-mixer_out"}) {
    const std::string svg = svg_of(html, id);
    ASSERT_FALSE(svg.empty()) << id;
    EXPECT_EQ(count(svg, "<g class=\"series\">"), 2u) << id;  // one series per candidate, both files in one chart
    EXPECT_NE(svg.find("<title>a9995 int8</title>"), std::string::npos);
    EXPECT_NE(svg.find("<title>a1 fake (FP32: ssm)</title>"), std::string::npos);  // fp-ops runs named by their ops
    EXPECT_EQ(count(svg, "<circle"), 6u);  // every measured layer drawn
  }
  // lines only between adjacent measured layers: a9995's 0 -> 5 gap has none (one line 5-6); a1's 0-1-2 is one line
  const std::string mse = svg_of(html, "overlay-mse-block_out");
  const std::string s1 = mse.substr(mse.find("<title>a9995"), mse.find("<title>a1 fake") - mse.find("<title>a9995"));
  EXPECT_EQ(count(s1, "<polyline"), 1u);
  const size_t p1 = s1.find("points=\"");
  EXPECT_EQ(count(s1.substr(p1, s1.find('"', p1 + 8) - p1), ","), 2u);  // two points
  EXPECT_EQ(count(mse.substr(mse.find("<title>a1 fake")), "<polyline"), 1u);
  // the same candidate and mode from two files: told apart by the file
  ReportInputs twice;
  twice.compares.push_back({"x.json", {{"runs", {r1}}, {"layers", r1["layers"]}, {"logits", r1["logits"]}}});
  twice.compares.push_back({"y.json", {{"runs", {r1}}, {"layers", r1["layers"]}, {"logits", r1["logits"]}}});
  const std::string h2 = render_report(twice);
  EXPECT_NE(h2.find("<title>a9995 int8 [x.json]</title>"), std::string::npos);
  EXPECT_NE(h2.find("<title>a9995 int8 [y.json]</title>"), std::string::npos);
  EXPECT_EQ(check_well_formed(h2), "");
}
