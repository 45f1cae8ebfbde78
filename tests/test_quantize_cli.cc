// `mambaq quantize`, the experiment log and activation snapshots, end to end.
#include <sys/wait.h>
#include <unistd.h>
#include <zip.h>

#include <cstring>
#include <regex>

#include "analysis/explog.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "mambaq/model.h"
#include "model/quant_state.h"
#include "util.h"

using mqtest::run_cli;

namespace {

// A .npy reader written from numpy's format specification (version 1.0/2.0, '<f4', C order, 1-D).
std::vector<float> parse_npy(const std::string& b) {
  EXPECT_GE(b.size(), 10u);
  EXPECT_EQ(b.substr(0, 6), std::string("\x93NUMPY", 6));
  const int major = uint8_t(b[6]);
  size_t hlen, pre;
  if (major == 1) {
    hlen = uint8_t(b[8]) | (size_t(uint8_t(b[9])) << 8);
    pre = 10;
  } else {
    hlen = uint8_t(b[8]) | (size_t(uint8_t(b[9])) << 8) | (size_t(uint8_t(b[10])) << 16) | (size_t(uint8_t(b[11])) << 24);
    pre = 12;
  }
  const std::string h = b.substr(pre, hlen);
  EXPECT_EQ((pre + hlen) % 64, 0u) << "data must be 64-byte aligned";
  EXPECT_EQ(h.back(), '\n');
  EXPECT_NE(h.find("'descr': '<f4'"), std::string::npos) << h;
  EXPECT_NE(h.find("'fortran_order': False"), std::string::npos) << h;
  const size_t s = h.find("'shape': (");
  EXPECT_NE(s, std::string::npos);
  const size_t n = std::stoul(h.substr(s + 10));
  EXPECT_EQ(b.size(), pre + hlen + 4 * n);
  std::vector<float> v(n);
  std::memcpy(v.data(), b.data() + pre + hlen, 4 * n);
  return v;
}

std::map<std::string, std::vector<float>> read_npz(const std::string& path) {
  std::map<std::string, std::vector<float>> out;
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  EXPECT_NE(z, nullptr) << path;
  if (!z) return out;
  for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0); ++i) {
    zip_stat_t st;
    zip_stat_index(z, zip_uint64_t(i), 0, &st);
    std::string buf(st.size, '\0');
    zip_file_t* f = zip_fopen_index(z, zip_uint64_t(i), 0);
    zip_fread(f, buf.data(), st.size);
    zip_fclose(f);
    std::string name = st.name;
    EXPECT_TRUE(name.ends_with(".npy")) << name;
    out[name.substr(0, name.size() - 4)] = parse_npy(buf);
  }
  zip_close(z);
  return out;
}
}  // namespace

TEST(QuantizeCli, BadInputGivesOneLineErrors) {
  const std::string d = mqtest::temp_dir("qcli_bad");
  const std::string m = mqtest::model_dir("mamba-tiny"), q = " -q --no-log -o " + d + "/out ";
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--recipe quamba9"), "--recipe");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--w-bits 4"), "--w-bits 4");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--a-bits 16"), "--a-bits 16");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--percentile-alpha 1.5"), "--percentile-alpha");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--percentile-mode median"), "--percentile-mode");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--weight-granularity row"), "--weight-granularity");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--calib-data " + d + "/nope.jsonl"), "nope.jsonl");
  mqtest::write_file(d + "/empty.jsonl", "");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--calib-data " + d + "/empty.jsonl"), "empty.jsonl");
  mqtest::write_file(d + "/bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": oops}\n");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--calib-data " + d + "/bad.jsonl"), "bad.jsonl:2");
  mqtest::write_file(d + "/notext.jsonl", "{\"title\": \"x\"}\n");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q + "--calib-data " + d + "/notext.jsonl"), "notext.jsonl:1");
  // an existing output folder is never touched without --force
  std::filesystem::create_directories(d + "/out");
  mqtest::write_file(d + "/out/keep.txt", "mine");
  mqtest::expect_one_line_error(run_cli("quantize " + m + q), "already exists");
  EXPECT_EQ(mqtest::read_file(d + "/out/keep.txt"), "mine");
  mqtest::expect_one_line_error(run_cli("quantize " + m + " -q --no-log --force -o " + m), "input model");
  mqtest::expect_one_line_error(run_cli("eval " + m + " --mode int8 --no-log --limit 1"), "not quantized");
  mqtest::expect_one_line_error(run_cli("eval " + m + " --mode int4 --no-log --limit 1"), "--mode");
}

// quantize --synthetic: seeded random weights of a published shape, calibrated on the real data,
// saved as a folder that loads and runs like any other (what a real size costs, without weights).
TEST(QuantizeCli, SyntheticPublishedShape) {
  const std::string d = mqtest::temp_dir("qcli_synth");
  const std::string q = " -q --no-log --calib-num 2 --calib-seqlen 16 -o " + d + "/s";
  auto r = run_cli("quantize --synthetic mamba-130m" + q);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto m = mambaq::Model::load(d + "/s");
  EXPECT_EQ(m->config().d_model, 768);
  EXPECT_EQ(m->config().n_layer, 24);
  EXPECT_EQ(m->quantized()->meta.source_model, "synthetic:mamba-130m");
  r = run_cli("eval " + d + "/s --tasks ppl:corpus/heldout.txt --limit 1 --ppl-seqlen 32 --no-log -q");
  EXPECT_EQ(r.code, 0) << r.err;
  mqtest::expect_one_line_error(run_cli("quantize --synthetic mamba-9b" + q + "2"), "mamba-9b");
  mqtest::expect_one_line_error(run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " --synthetic mamba-130m" + q + "3"),
                                "either MODEL or --synthetic");
  mqtest::expect_one_line_error(run_cli("quantize" + q + "4"), "either MODEL or --synthetic");
}

TEST(QuantizeCli, QuantizeEvalLogSnapshot) {
  const std::string d = mqtest::temp_dir("qcli_e2e");
  const std::string log = d + "/exp.jsonl", out = d + "/q";
  auto r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + out + " -q --calib-num 8 --calib-seqlen 256 --log " +
                   log + " --save-activations " + d + "/act.npz --percentile-mode exact --weight-granularity channel");
  ASSERT_EQ(r.code, 0) << r.err;
  // config.json: the original config plus the quantization record
  auto cfg = mambaq::read_json_file(out + "/config.json");
  EXPECT_EQ(cfg["d_model"], 256);
  const auto& qj = cfg["quantization"];
  EXPECT_EQ(qj["recipe"], "quamba1");
  EXPECT_EQ(qj["weight_granularity"], "channel");
  EXPECT_EQ(qj["observers"]["percentile_mode"], "exact");
  EXPECT_EQ(qj["observers"]["percentile_alpha"], 0.9995);
  EXPECT_EQ(qj["calibration"]["samples"], 8);
  EXPECT_EQ(qj["calibration"]["seqlen"], 256);
  EXPECT_EQ(qj["calibration"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.json"));
  // the state-spaces checkpoint's tied lm_head (stored under its own name) is saved once
  mambaq::TensorStore saved;
  mambaq::load_safetensors(out + "/model.safetensors", saved);
  EXPECT_TRUE(saved.has("backbone.embedding.weight"));
  EXPECT_FALSE(saved.has("lm_head.weight"));
  // eval, logits, generate load it directly (int8 by default)
  r = run_cli("eval " + out + " --tasks ppl:corpus/heldout.txt --limit 2 -q --log " + log + " --json " + d + "/e.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(mambaq::read_json_file(d + "/e.json")["mambaq"]["mode"], "int8");
  r = run_cli("eval " + out + " --mode fake --tasks ppl:corpus/heldout.txt --limit 2 -q --log " + log);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(run_cli("logits " + out + " --prompt 'Call me'").code, 0);
  EXPECT_EQ(run_cli("generate " + out + " --prompt 'Call me' -n 4").code, 0);
  // the log: three records, with the fields the issue asks for
  const auto recs = mambaq::read_log(log);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0]["kind"], "quantize");
  for (const char* k : {"timestamp", "command", "version", "git", "model", "flags", "calibration", "results", "wall_s",
                        "peak_rss_mib"})
    EXPECT_TRUE(recs[0].contains(k)) << k;
  EXPECT_NE(recs[0]["command"].get<std::string>().find("--percentile-mode exact"), std::string::npos);
  const auto& sc = recs[0]["calibration"]["scales"]["x_proj:input"];
  EXPECT_EQ(sc["count"], 8);
  EXPECT_LE(sc["min"].get<double>(), sc["median"].get<double>());
  EXPECT_LE(sc["median"].get<double>(), sc["max"].get<double>());
  EXPECT_EQ(recs[1]["mode"], "int8");
  EXPECT_EQ(recs[2]["mode"], "fake");
  // clipping statistics of every percentile point (8 layers x x_proj:input, ssm_state_act:input)
  const auto& clip = recs[0]["calibration"]["clipping"];
  ASSERT_EQ(clip.size(), 16u);
  for (const auto& c : clip) {
    EXPECT_GE(c["raw_max"].get<double>(), c["clip"].get<double>());
    EXPECT_GE(c["share_clipped"].get<double>(), 0.0);
    EXPECT_LT(c["share_clipped"].get<double>(), 0.01);  // alpha 0.9995 clips about 0.05 %
  }
  r = run_cli("logs " + log + " --records --last 2");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("fake"), std::string::npos);
  EXPECT_EQ(r.out.find("quantize"), std::string::npos);  // only the last two
  r = run_cli("logs " + log + " --records --compare -1 -2");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("flags.mode"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("results.heldout.ppl"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("flags.tasks"), std::string::npos) << r.out;  // equal in both: not shown
  mqtest::expect_one_line_error(run_cli("logs " + log + " --records --compare 0 7"), "record 7");
  // experiments: the quantize run and both evals of its output are one unit
  r = run_cli("logs " + log);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("heldout [int8] ppl="), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("heldout [fake] ppl="), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("clipped x_proj:input"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;  // header + one experiment
  mqtest::expect_one_line_error(run_cli("logs " + log + " --compare 0 1"), "experiment 1");
  r = run_cli("logs " + log + " --filter recipe=quamba1 --filter bits=W8A8 --json " + d + "/exp.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto ex = mambaq::read_json_file(d + "/exp.json");
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0]["records"], nlohmann::json({0, 1, 2}));
  EXPECT_EQ(ex[0]["output"], out);
  EXPECT_EQ(mambaq::read_json_file(d + "/exp.json").size(), 1u);
  r = run_cli("logs " + log + " --filter recipe=quamba2 --json " + d + "/none.json");
  EXPECT_EQ(mambaq::read_json_file(d + "/none.json").size(), 0u);
  mqtest::expect_one_line_error(run_cli("logs " + log + " --filter colour=red"), "unknown key 'colour'");
  {  // a malformed line is reported (file:line) and skipped
    const std::string bad = d + "/bad.jsonl";
    mqtest::write_file(bad, mqtest::read_file(log) + "{not json\n");
    r = run_cli("logs " + bad);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("bad.jsonl:4"), std::string::npos) << r.err;
  }
  r = run_cli("info " + out);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("quamba1 W8A8, weights per channel, percentile alpha 0.9995 (exact)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("I8"), std::string::npos) << r.out;
  // --force overwrites the folder's files; --verbose reports every point's alpha, max and scale
  r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + out + " -q --calib-num 2 --no-log --force --verbose");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("layer   7 ssm_state_act:input    percentile alpha 0.9995"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("raw max"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("layer   0 in_proj:input          minmax     alpha 1"), std::string::npos) << r.err;
  EXPECT_EQ(mambaq::read_json_file(out + "/config.json")["quantization"]["calibration"]["samples"], 2);

  // activation snapshot: layers 0-2, every observed point, <= 10,000 values each
  const auto npz = read_npz(d + "/act.npz");
  for (int l = 0; l < 3; ++l)
    for (const char* p : {"in_proj:input", "in_proj:output", "x_proj:input", "x_proj:output", "dt_proj:output",
                          "out_proj:input", "ssm_state_act:input"}) {
      const std::string k = "layer_" + std::to_string(l) + "." + p;
      ASSERT_TRUE(npz.count(k)) << k;
      EXPECT_GT(npz.at(k).size(), 1000u) << k;
      EXPECT_LE(npz.at(k).size(), 10000u) << k;
      EXPECT_GT(*std::max_element(npz.at(k).begin(), npz.at(k).end()), 0.f) << k;
    }
  EXPECT_FALSE(npz.count("layer_3.x_proj:input"));
  EXPECT_EQ(npz.at("layer_0.x_proj:input").size(), 10000u);  // 8 x 256 x 512 values seen
  // numpy agrees, where it is installed
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") == 0) {
    const std::string py = "/usr/bin/python3 -c \"import numpy as np; z = np.load('" + d +
                           "/act.npz'); a = z['layer_0.x_proj:input']; print(len(z.files), a.dtype, a.shape[0], "
                           "repr(float(a[0])), repr(float(a[-1])))\" > " + d + "/np.txt";
    ASSERT_EQ(std::system(py.c_str()), 0);
    const auto& a = npz.at("layer_0.x_proj:input");
    char want[256];
    std::snprintf(want, sizeof want, "%zu float32 %zu", npz.size(), a.size());
    const std::string got = mqtest::read_file(d + "/np.txt");
    EXPECT_EQ(got.rfind(want, 0), 0u) << got;
    std::istringstream is(got.substr(std::strlen(want)));
    double first, last;
    is >> first >> last;
    EXPECT_EQ(float(first), a.front());
    EXPECT_EQ(float(last), a.back());
  }

  // eval --modes on the quantized folder: one table, a column per mode and its difference
  const std::string log2 = d + "/modes.jsonl";
  r = run_cli("eval " + out + " --tasks arc_easy,winogrande --limit 24 -q --bootstrap-iters 0 --log " + log2 +
              " --modes fp32,fake,int8,fake+fp-ops=ssm:linear --fp-model " + mqtest::model_dir("mamba-tiny") +
              " --json " + d + "/modes.json");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* col : {"fp32", "fake", "int8", "fake+fp-ops=ssm:linear", "diff", "acc_norm"})
    EXPECT_NE(r.out.find(col), std::string::npos) << col << "\n" << r.out;
  const auto mj = mambaq::read_json_file(d + "/modes.json");
  ASSERT_EQ(mj.size(), 4u);
  EXPECT_TRUE(mj["int8"]["results"]["arc_easy"].contains("acc_norm,none"));
  EXPECT_NE(mj["int8"]["config"]["model_args"].get<std::string>().find("mode=int8"), std::string::npos);
  // fp-ops keeping every kind in FP32 gives the FP model's numbers exactly
  r = run_cli("eval " + out + " --tasks winogrande --limit 24 -q --no-log --json - --mode fake "
              "--fp-ops linear,conv,ssm,hadamard --fp-model " + mqtest::model_dir("mamba-tiny"));
  ASSERT_EQ(r.code, 0) << r.err;
  auto rf = run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --tasks winogrande --limit 24 -q --no-log --json -");
  ASSERT_EQ(rf.code, 0) << rf.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["mambaq"]["results"]["winogrande"]["acc"],
            nlohmann::json::parse(rf.out)["mambaq"]["results"]["winogrande"]["acc"]);
  // the log got one record per mode; logs --compare shows each metric's difference and stderr
  ASSERT_EQ(mambaq::read_log(log2).size(), 4u);
  r = run_cli("logs " + log2 + " --records --compare 0 2 --json " + d + "/cmp.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("difference ±stderr"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("arc_easy acc_norm"), std::string::npos) << r.out;
  const auto cmp = mambaq::read_json_file(d + "/cmp.json")["results_diff"]["arc_easy"]["acc"];
  const auto l2 = mambaq::read_log(log2);
  const double sa = l2[0]["results"]["arc_easy"]["acc_stderr"], sb = l2[2]["results"]["arc_easy"]["acc_stderr"];
  EXPECT_NEAR(cmp["stderr"].get<double>(), std::sqrt(sa * sa + sb * sb), 1e-12);
  EXPECT_NEAR(cmp["diff"].get<double>(),
              l2[2]["results"]["arc_easy"]["acc"].get<double>() - l2[0]["results"]["arc_easy"]["acc"].get<double>(), 1e-12);
  mqtest::expect_one_line_error(run_cli("eval " + out + " --tasks winogrande -q --no-log --modes fp32,int8+fp-ops=ssm"),
                                "fake");
}

TEST(ExperimentLog, ConcurrentWritersNeverTearLines) {
  const std::string log = mqtest::temp_dir("explog") + "/exp.jsonl";
  const int procs = 6, per = 150;
  const std::string payload(20000, 'x');  // well above the pipe/atomic-write sizes
  std::vector<pid_t> kids;
  for (int p = 0; p < procs; ++p) {
    const pid_t pid = fork();
    if (pid == 0) {
      for (int i = 0; i < per; ++i) mambaq::append_log(log, {{"proc", p}, {"i", i}, {"payload", payload}});
      _exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) {
    int st = 0;
    waitpid(k, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  const auto recs = mambaq::read_log(log);  // throws on a torn line
  ASSERT_EQ(recs.size(), size_t(procs * per));
  std::set<std::pair<int, int>> seen;
  for (const auto& r : recs) {
    EXPECT_EQ(r["payload"].get<std::string>().size(), payload.size());
    seen.insert({r["proc"].get<int>(), r["i"].get<int>()});
  }
  EXPECT_EQ(seen.size(), size_t(procs * per));
}

TEST(ExperimentLog, MalformedLinesNameFileAndLine) {
  const std::string d = mqtest::temp_dir("explog_bad");
  mqtest::write_file(d + "/a.jsonl", "{\"kind\": \"eval\"}\n{\"kind\": \"ev\n");
  EXPECT_ERROR(mambaq::read_log(d + "/a.jsonl"), "a.jsonl:2", "malformed");
  mqtest::write_file(d + "/b.jsonl", "[1, 2]\n");
  EXPECT_ERROR(mambaq::read_log(d + "/b.jsonl"), "b.jsonl:1", "not a JSON object");
  EXPECT_ERROR(mambaq::read_log(d + "/none.jsonl"), "none.jsonl");
  // `logs` reports a malformed line (file:line) and lists the rest
  const auto r = run_cli("logs --records " + d + "/a.jsonl");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: skipped"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("a.jsonl:2"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("eval"), std::string::npos) << r.out;
  // appending never rewrites what was there
  mambaq::append_log(d + "/b.jsonl", {{"k", 1}});
  EXPECT_EQ(mqtest::read_file(d + "/b.jsonl"), "[1, 2]\n{\"k\":1}\n");
}

// Quamba2 from the command line: a preset with the reference's spellings, a layer config, the
// folder shown by info / scales, run by eval in each mode, compared, logged; bad options refused.
// A setting the recipe leaves without effect is said on stderr, recorded as not applied in
// config.json and the log, and indeed changes no scale (issue 22, item 1).
TEST(QuantizeCli, SettingsThatCannotActAreSaidAndRecorded) {
  const std::string d = mqtest::temp_dir("qcli_inert");
  const std::string m2 = mqtest::model_dir("mamba2-tiny-hf");
  const std::string small = " -q --calib-num 2 --calib-seqlen 64 --gptq-num 2 --gptq-seqlen 64 --log " + d + "/log.jsonl";
  auto r = run_cli("quantize " + m2 + " -o " + d + "/a --preset w4a8" + small);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("has no effect"), std::string::npos) << r.err;
  r = run_cli("quantize " + m2 + " -o " + d + "/b --preset w4a8 --percentile-alpha 0.9" + small);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("note: --percentile-alpha has no effect here"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--grouped-percentile"), std::string::npos) << r.err;
  const auto cfg = mambaq::read_json_file(d + "/b/config.json");
  EXPECT_TRUE(cfg["quantization"]["not_applied"].contains("percentile-alpha")) << cfg.dump();
  EXPECT_NE(mqtest::read_file(d + "/log.jsonl").find("\"not_applied\":{\"percentile-alpha\""), std::string::npos);
  // the claim checked: the same scales as without the setting
  const auto sa = run_cli("scales " + d + "/a"), sb = run_cli("scales " + d + "/b");
  ASSERT_EQ(sa.code, 0) << sa.err;
  EXPECT_EQ(sa.out.substr(sa.out.find('\n')), sb.out.substr(sb.out.find('\n')));
  // with --grouped-percentile the same alpha acts: no note, other scales
  r = run_cli("quantize " + m2 + " -o " + d + "/c --preset w4a8 --grouped-percentile --percentile-alpha 0.9" + small);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("has no effect"), std::string::npos) << r.err;
  const auto sc = run_cli("scales " + d + "/c");
  EXPECT_NE(sa.out.substr(sa.out.find('\n')), sc.out.substr(sc.out.find('\n')));
  EXPECT_FALSE(mambaq::read_json_file(d + "/c/config.json")["quantization"].contains("not_applied"));
  // W4A16: nothing calibrated
  r = run_cli("quantize " + m2 + " -o " + d + "/e --preset w4a16 --percentile-alpha 1.0" + small);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("--percentile-alpha has no effect here: W4A16"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--calib-num has no effect here"), std::string::npos) << r.err;
}

// --dry-run: every flag checked, the settings the run would use printed (the preset expanded,
// defaults filled, what cannot act left out and named), nothing loaded or written.
TEST(QuantizeCli, DryRunPrintsTheEffectiveSettings) {
  const std::string d = mqtest::temp_dir("qcli_dry");
  const std::string m2 = mqtest::model_dir("mamba2-tiny-hf");
  auto r = run_cli("quantize " + m2 + " -o " + d + "/q --preset w4a8 --percentile-alpha 0.9 --log " + d + "/l.jsonl --dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& e = j.at("effective");
  EXPECT_EQ(e.at("w-bits"), 4);  // from the preset
  EXPECT_EQ(e.at("a-bits"), 8);
  EXPECT_EQ(e.at("gptq"), true);
  EXPECT_EQ(e.at("group-heads"), true);
  EXPECT_EQ(e.at("group-size"), 128);  // a default
  EXPECT_FALSE(e.contains("percentile-alpha"));  // min-max observers: cannot act
  EXPECT_FALSE(e.contains("weight-granularity"));
  EXPECT_TRUE(j.at("not_applied").contains("percentile-alpha"));
  EXPECT_FALSE(std::filesystem::exists(d + "/q"));
  EXPECT_FALSE(std::filesystem::exists(d + "/l.jsonl"));
  // the same settings written out flag by flag are the same run
  r = run_cli("quantize " + m2 + " -o " + d + "/q --recipe quamba2 --w_bits 4 --a_bits 8 --apply_gptq --group_heads "
              "--quantize_embedding --quantize_lm_head --dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("effective"), e);
  // where alpha acts (quamba1), it is there; a bad flag is the run's error
  r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + d + "/q --percentile-alpha 0.9 --dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("effective").at("percentile-alpha"), 0.9);
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + " -o " + d + "/q --w-bits 5 --dry-run"), "--w-bits 5");
  mqtest::expect_one_line_error(
      run_cli("quantize " + m2 + " -o " + d + "/q --calib-data " + d + "/none.jsonl --dry-run"), "none.jsonl");
}

// What an override or an edit did is where one looks: quantize prints old -> new per overridden
// point; info lists the settings not applied, the overrides and every later scale edit.
TEST(QuantizeCli, OverridesAndEditsAreVisible) {
  const std::string d = mqtest::temp_dir("qcli_visible"), q = d + "/q";
  auto r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + q +
                   " --calib-num 4 --calib-seqlen 64 --no-log -q --group-size 64 --scale-override 'x_proj:input@0=*1.5'");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::regex ov(R"(override 'x_proj:input@0=\*1\.5': layer 0 x_proj:input scale ([0-9.e-]+) -> ([0-9.e-]+))");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, ov)) << r.err;
  EXPECT_NEAR(std::stod(m[2]) / std::stod(m[1]), 1.5, 1e-4);
  ASSERT_EQ(run_cli("scales set " + q + " --in-place --point x_proj:input --layers 1 --factor 2 --note because").code, 0);
  r = run_cli("info " + q);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("not applied   --group-size"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("override      x_proj:input@0=*1.5 (at calibration)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("x_proj:input@1=*2: 1 layer, scale "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("— because"), std::string::npos) << r.out;
}

// logs say a run with FP32-kept ops as eval spells it, in every view; --filter knows the Quamba2 keys.
TEST(QuantizeCli, LogsSayPerOpModesAndFilterQuamba2Keys) {
  const std::string d = mqtest::temp_dir("qcli_logs"), q = d + "/q", log = d + "/l.jsonl";
  ASSERT_EQ(run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + q + " --calib-num 4 --calib-seqlen 64 -q --log " + log).code, 0);
  auto r = run_cli("eval " + q + " --mode fake --fp-ops ssm --tasks ppl:corpus/heldout.txt --limit 2 -q --log " + log);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* view : {"--markdown", "--records", ""}) {
    r = run_cli("logs " + log + " " + view);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("fake+fp-ops=ssm"), std::string::npos) << view << "\n" << r.out;
  }
  auto count = [&](const std::string& f) {
    const auto rr = run_cli("logs " + log + " --filter " + f + " --json " + d + "/x.json --force");
    EXPECT_EQ(rr.code, 0) << rr.err;
    return mambaq::read_json_file(d + "/x.json").size();
  };
  EXPECT_EQ(count("gptq=false"), 1u);
  EXPECT_EQ(count("gptq=true"), 0u);
  EXPECT_EQ(count("group_heads=false"), 1u);
  EXPECT_EQ(count("preset=w4a8"), 0u);
  mqtest::expect_one_line_error(run_cli("logs " + log + " --filter gptq=maybe"), "true or false");
}

// The seeds' "W8A8 + GPTQ" without a quantized embedding or head writes a folder larger than the
// model: the summary says which tensors stay in float and why (docs/quantize.md, "Folder sizes").
TEST(QuantizeCli, SummaryNamesTheTensorsKeptInFloat) {
  const std::string d = mqtest::temp_dir("qcli_kept");
  auto r = run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + d + "/a --recipe quamba2 --w_bits 8 "
                   "--a_bits 8 --apply_gptq --calib-num 2 --calib-seqlen 32 --gptq-num 2 --gptq-seqlen 32 --no-log -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("kept in float: embedding"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--quantize-embedding quantizes it"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("folds the final norm's weight into it"), std::string::npos) << r.err;
  // with both quantized nothing large stays in float
  r = run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + d + "/b --preset w8a8 --calib-num 2 "
              "--calib-seqlen 32 --no-log -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("kept in float"), std::string::npos) << r.err;
}

TEST(QuantizeCli, Quamba2PresetsLayerConfigAndErrors) {
  const std::string d = mqtest::temp_dir("qcli_q2");
  const std::string m2 = mqtest::model_dir("mamba2-tiny-hf"), m1 = mqtest::model_dir("mamba-tiny");
  const std::string small = " -q --calib-num 4 --calib-seqlen 128 --gptq-num 2 --gptq-seqlen 128 --log " + d + "/log.jsonl";
  auto r = run_cli("quantize " + m2 + " -o " + d + "/w4a8 --preset w4a8" + small);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("quamba2 W4A8"), std::string::npos) << r.out;
  r = run_cli("info " + d + "/w4a8");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("s4 g128"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("heads grouped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GPTQ (2 x 128 tokens)"), std::string::npos) << r.out;
  r = run_cli("scales " + d + "/w4a8");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("x_conv_out(max/16)"), std::string::npos) << r.out;
  for (const char* mode : {"int8", "fake", "fp32"}) {
    r = run_cli("eval " + d + "/w4a8 --mode " + mode + " --tasks ppl:corpus/heldout.txt --limit 2 --no-log");
    EXPECT_EQ(r.code, 0) << mode << ": " << r.err;
  }
  r = run_cli("compare --ref " + m2 + " --cand " + d + "/w4a8 --samples 1 --seqlen 32 --layers 0 -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("w4a8's basis (rotated+reordered"), std::string::npos) << r.err;
  // the reference's spellings, on Mamba1, and a per-layer precision file
  mqtest::write_file(d + "/layers.json", R"(["W4A8", "W4A16", "W8A8", "FP16", "W4A8", "W4A8", "W4A16", "W8A8"])");
  r = run_cli("quantize " + m1 + " -o " + d + "/mixed --recipe quamba2 --w_bits 4 --a_bits 8 --apply_gptq "
              "--quantize_embedding --quantize_lm_head --layer-config " + d + "/layers.json" + small);
  ASSERT_EQ(r.code, 0) << r.err;
  r = run_cli("info " + d + "/mixed");
  EXPECT_NE(r.out.find("0 W4A8, 1 W4A16, 2 W8A8, 3 FP16"), std::string::npos) << r.out;
  r = run_cli("eval " + d + "/mixed --tasks ppl:corpus/heldout.txt --limit 2 --no-log");
  EXPECT_EQ(r.code, 0) << r.err;
  // the log has both runs with the Quamba2 flags
  const std::string log = mqtest::read_file(d + "/log.jsonl");
  EXPECT_NE(log.find("\"preset\":\"w4a8\""), std::string::npos);
  EXPECT_NE(log.find("\"gptq_s\""), std::string::npos);
  // errors, each one line naming the flag or file
  const std::string q = " -q --no-log -o " + d + "/bad ";
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + q + "--preset w2a8"), "--preset");
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + q + "--recipe quamba2 --w-bits 8 --a-bits 16"), "--a-bits 16");
  mqtest::expect_one_line_error(run_cli("quantize " + m1 + q + "--recipe quamba2 --w-bits 4 --group-heads"), "--group-heads");
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + q + "--group-heads"), "quamba2 options");
  mqtest::write_file(d + "/short.json", R"(["W4A8", "W4A8"])");
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + q + "--recipe quamba2 --w-bits 4 --layer-config " + d + "/short.json"),
                                "--layer-config");
  mqtest::write_file(d + "/typo.json", R"(["W4A8", "W3A8"])");
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + q + "--recipe quamba2 --w-bits 4 --layer-config " + d + "/typo.json"),
                                "layer 1");
  mqtest::expect_one_line_error(run_cli("quantize " + m2 + q + "--recipe quamba2 --w-bits 4 --gptq --gptq-data " + d + "/nope.txt"),
                                "--gptq-data");
  mqtest::expect_one_line_error(run_cli("bench --synthetic mamba2-130m --quant w4a9 --no-bandwidth"), "--quant");
}
