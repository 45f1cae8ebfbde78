// Zero-shot tasks with lm-evaluation-harness 0.4.2's recipes: documents against the worked
// examples of data/ZEROSHOT.md, hand-made hellaswag and wikitext cases, shared-prefix scoring
// against scoring every pair from scratch (every mode), truncation against a hand-built window,
// lm-eval's statistics against values computed by its own Python code, the results shape against
// a sample of lm-eval's format, and the CLI.
#include <cmath>
#include <filesystem>

#include "mambaq/session.h"
#include "io/json_file.h"
#include "mambaq/eval.h"
#include "quant/calibrate.h"
#include "quant/quantized.h"
#include "quant/recipe.h"
#include "util.h"

using namespace mambaq;
namespace fs = std::filesystem;

namespace {

const std::vector<McDoc>& task(const std::string& name) {
  static std::map<std::string, std::vector<McDoc>> cache;
  auto& d = cache[name];
  if (d.empty()) d = load_mc_task(name, mqtest::repo("data"));
  return d;
}

EvalOptions quiet() {
  EvalOptions o;
  o.data_dir = mqtest::repo("data");
  o.progress = false;
  return o;
}

}  // namespace

TEST(ZeroShotDocs, CountsAndWorkedExamplesOfZeroshotMd) {
  EXPECT_EQ(task("arc_easy").size(), 2376u);
  EXPECT_EQ(task("arc_challenge").size(), 1172u);
  EXPECT_EQ(task("piqa").size(), 1838u);
  EXPECT_EQ(task("winogrande").size(), 1267u);
  // ARC-Challenge doc 0
  const McDoc& a = task("arc_challenge")[0];
  EXPECT_EQ(a.contexts[0], "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which "
                           "is the most likely effect of this increase in rotation?\nAnswer:");
  EXPECT_EQ(a.continuations, (std::vector<std::string>{" Planetary density will decrease.",
                                                       " Planetary years will become longer.",
                                                       " Planetary days will become shorter.",
                                                       " Planetary gravity will become stronger."}));
  EXPECT_EQ(a.gold, 2);
  EXPECT_EQ(a.choice_chars, (std::vector<int>{32, 35, 35, 39}));
  // piqa doc 1: solutions unstripped
  const McDoc& p = task("piqa")[1];
  EXPECT_EQ(p.contexts[0], "Question: dresser\nAnswer:");
  EXPECT_EQ(p.continuations, (std::vector<std::string>{" replace drawer with bobby pin ",
                                                       " finish, woodgrain with  bobby pin "}));
  EXPECT_EQ(p.gold, 1);
  // winogrande doc 0: two contexts, one continuation, no acc_norm
  const McDoc& w = task("winogrande")[0];
  EXPECT_EQ(w.contexts, (std::vector<std::string>{"Sarah was a much better surgeon than Maria so Sarah",
                                                  "Sarah was a much better surgeon than Maria so Maria"}));
  EXPECT_EQ(w.continuations, (std::vector<std::string>{" always got the easier cases.", " always got the easier cases."}));
  EXPECT_EQ(w.gold, 1);
  EXPECT_EQ(w.choice_chars, (std::vector<int>{0, 0}));
  // numeric labels ("1".."4") map to their index too; 3- and 5-choice questions keep their count
  int numeric = 0, three = 0, five = 0;
  for (const auto& d : task("arc_easy")) {
    numeric += d.doc["choices"]["label"][0] == "1";
    three += d.continuations.size() == 3;
    five += d.continuations.size() == 5;
    ASSERT_GE(d.gold, 0);
    ASSERT_LT(d.gold, int(d.continuations.size()));
  }
  EXPECT_EQ(numeric, 97);
  EXPECT_EQ(three, 7);
  EXPECT_EQ(five, 4);
}

TEST(ZeroShotDocs, CharactersNotBytes) {
  EXPECT_EQ(utf8_chars("\xC2\xB0" "C"), 2);  // °C: 3 bytes, 2 characters
  EXPECT_EQ(utf8_chars("caf\xC3\xA9"), 4);
  EXPECT_EQ(utf8_chars(""), 0);
}

TEST(ZeroShotDocs, HellaswagPreprocessingOnHandMadeDocuments) {
  EXPECT_EQ(py_capitalize("he IS Here"), "He is here");
  EXPECT_EQ(hellaswag_preprocess("  Finance and Business: [header] How to pay in florida [title] Call the office. "
                                 "[step] Find the number. "),
            "Finance and Business: How to pay in florida. Call the office. Find the number.");
  // "  " -> " " is one left-to-right pass: three spaces become two
  EXPECT_EQ(hellaswag_preprocess("a   b"), "a  b");
  // [..] does not cross a newline; an unclosed [ stays
  EXPECT_EQ(hellaswag_preprocess("a [x\ny] b [c"), "a [x\ny] b [c");
  const std::string dir = mqtest::temp_dir("hellaswag");
  fs::create_directories(dir + "/hellaswag");
  mqtest::write_file(dir + "/hellaswag/hellaswag_val.jsonl",
                     R"({"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": 3})"
                     "\n");
  const auto docs = load_mc_task("hellaswag", dir);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].contexts[0], "Roof shingle removal: A man is sitting on a roof. He");
  EXPECT_EQ(docs[0].continuations[3], " starts pulling up roofing on a roof.");
  EXPECT_EQ(docs[0].gold, 3);
  EXPECT_EQ(docs[0].choice_chars[1], 27);
  mqtest::write_file(dir + "/hellaswag/hellaswag_val.jsonl", R"({"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["e"], "label": 4})" "\n");
  EXPECT_ERROR(load_mc_task("hellaswag", dir), "hellaswag_val.jsonl:1");
  EXPECT_ERROR(load_mc_task("hellaswag", dir + "/none"), "file not found");
}

TEST(ZeroShotDocs, EncodePairMovesTrailingSpaces) {
  const auto& tok = mqtest::tokenizer();
  const Request r = encode_pair(tok, "Question: why?\nAnswer: ", "because");
  EXPECT_EQ(tok.decode(r.context), "Question: why?\nAnswer:");
  EXPECT_EQ(tok.decode(r.continuation), " because");
  // continuation = tok(context + continuation) minus len(tok(context))
  const auto whole = tok.encode("Question: why?\nAnswer: because");
  EXPECT_EQ(std::vector<int32_t>(whole.begin() + std::ptrdiff_t(r.context.size()), whole.end()), r.continuation);
  const Request e = encode_pair(tok, "", "Hello");
  EXPECT_EQ(e.context, std::vector<int32_t>{tok.eos_id()});
}

TEST(ZeroShotStats, StderrAndBootstrapAsLmEval) {
  // sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n) of [1, 0, 1, 1] = 0.5 / 2
  EXPECT_DOUBLE_EQ(mean_stderr({1, 0, 1, 1}), 0.25);
  // lm-eval's bootstrap_stderr(perplexity, xs, 2000) run in Python 3.11 (random.Random(i).choices per
  // chunk of 1000, the same code as lm_eval/api/metrics.py): 2.1651408214780266
  EXPECT_NEAR(perplexity_bootstrap_stderr({-1.0, -2.0, -0.5, -3.0, -1.25}, 2000), 2.1651408214780266, 1e-12);
}

// Every mode: shared-prefix scoring gives the numbers of scoring each pair from scratch, bit for
// bit: the states carry over exactly (SeqState::exact) and every product of scoring has at least
// 16 rows (loglik.cc kMinRows), so no decode-sized kernel with other rounding runs, and the fp32
// GEMM gives a row the same bits whatever the rows beside it (kernels/cpu/gemm.cc; with oneDNN's
// sgemm these tests failed on an AVX2-only EPYC).
void expect_same_scores(const std::vector<std::vector<RequestScore>>& a, const std::vector<std::vector<RequestScore>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t d = 0; d < a.size(); ++d) {
    ASSERT_EQ(a[d].size(), b[d].size());
    size_t best_a = 0, best_b = 0;
    for (size_t i = 0; i < a[d].size(); ++i) {
      EXPECT_EQ(a[d][i].ll, b[d][i].ll) << "doc " << d << " choice " << i;
      EXPECT_TRUE(std::isfinite(b[d][i].ll) && b[d][i].ll < 0);
      if (a[d][i].ll > a[d][best_a].ll) best_a = i;
      if (b[d][i].ll > b[d][best_b].ll) best_b = i;
    }
    EXPECT_EQ(best_a, best_b) << "doc " << d;
  }
}
class SharedPrefix : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};
INSTANTIATE_TEST_SUITE_P(
    FixturesAndModes, SharedPrefix,
    ::testing::Values(std::tuple{"models/mamba-tiny", "fp32"}, std::tuple{"models/mamba-tiny", "quamba1-fake"},
                      std::tuple{"models/mamba-tiny", "quamba1-int8"}, std::tuple{"models/mamba2-tiny-hf", "fp32"},
                      std::tuple{"models/mamba2-tiny-hf", "quamba1-int8"}, std::tuple{"models/mamba2-tiny-hf", "w4a8-int8"},
                      std::tuple{"models/mamba2-tiny-hf", "w4a16-int8"}));

TEST_P(SharedPrefix, EqualsPairByPair) {
  const auto [rel, mode] = GetParam();
  static std::map<std::string, std::unique_ptr<Model>> cache;
  const std::string key = std::string(rel) + mode;
  auto& m = cache[key];
  if (!m) {
    const std::string mo(mode);
    auto fp = Model::load(mqtest::repo(rel));
    if (mo == "fp32") {
      m = std::move(fp);
    } else {
      static const auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 128, 4);
      QuantMeta meta;
      if (mo.starts_with("w4")) apply_quamba2_preset(meta, mo.substr(0, mo.find('-')), fp->config());
      meta.gptq = false;
      QuantizeInputs in;
      in.calib = &cs;
      in.calib_opts.progress = false;
      in.progress = false;
      m = quantize(*fp, meta, in).model;
    }
  }
  std::vector<std::vector<Request>> docs;
  for (const char* t : {"arc_challenge", "winogrande", "piqa"})
    for (size_t d = 0; d < 16; ++d) {
      const McDoc& md = task(t)[d];
      docs.emplace_back();
      for (size_t i = 0; i < md.contexts.size(); ++i)
        docs.back().push_back(encode_pair(mqtest::tokenizer(), md.contexts[i], md.continuations[i]));
    }
  EvalOptions o = quiet();
  o.batch_tokens = 700;  // several batches
  const std::string mo(mode);
  Session S(*m, {.mode = mo == "fp32" ? ExecMode::FP32 : parse_mode(mo.substr(mo.find('-') + 1))});
  const auto shared = score_requests(S, docs, o);
  o.shared_prefix = false;
  const auto pairs = score_requests(S, docs, o);
  expect_same_scores(shared, pairs);
}

TEST(SharedPrefixEdge, OneDocumentPerBatchAndNoCommonPrefix) {
  // batches of one document, and a document whose requests share no token
  auto m = Model::load(mqtest::repo("models/mamba-tiny"));
  const auto& tok = mqtest::tokenizer();
  std::vector<std::vector<Request>> docs = {
      {encode_pair(tok, "Sarah", " went home."), encode_pair(tok, "Maria", " went home.")},
      {encode_pair(tok, "The cat", " sat"), encode_pair(tok, "The cat", " ran away"), encode_pair(tok, "The cat", "!")}};
  EvalOptions o = quiet();
  o.batch_tokens = 1;
  const auto a = score_requests(*m, docs, o);
  o.shared_prefix = false;
  o.batch_tokens = 8192;
  expect_same_scores(a, score_requests(*m, docs, o));
}

TEST(Truncation, ReadsTheLastMaxLengthTokensAsLmEval) {
  // lm-eval: inp = (context + continuation)[-(max_length + 1):][:-1]; built here by hand
  auto m = Model::load(mqtest::repo("models/mamba2-tiny-hf"));
  const auto& tok = mqtest::tokenizer();
  Request r;
  r.context = tok.encode("It was the best of times, it was the worst of times, it was the age of wisdom, it was");
  r.continuation = tok.encode(" the age of foolishness");
  const int W = 12;
  std::vector<int32_t> all = r.context;
  all.insert(all.end(), r.continuation.begin(), r.continuation.end());
  ASSERT_GT(int(all.size()), W + 1);
  const std::vector<int32_t> window(all.end() - (W + 1), all.end() - 1);
  const int dm = m->config().d_model, V = m->config().padded_vocab;
  std::vector<float> h(window.size() * size_t(dm)), logits(static_cast<size_t>(V));
  const int len[1] = {W};
  Session S(*m);
  S.forward(window, len, nullptr, h.data());
  double want = 0;
  const size_t nc = r.continuation.size();
  for (size_t k = 0; k < nc; ++k) {
    S.lm_head(h.data() + (window.size() - nc + k) * dm, 1, logits.data());
    double mx = -1e300, sum = 0;
    for (float x : logits) mx = std::max(mx, double(x));
    for (float x : logits) sum += std::exp(double(x) - mx);
    want += double(logits[size_t(r.continuation[k])]) - mx - std::log(sum);
  }
  EvalOptions o = quiet();
  o.max_length = W;
  const auto got = score_requests(*m, {{r}}, o);
  EXPECT_NEAR(got[0][0].ll, want, 1e-4 * std::abs(want));
  o.max_length = 2;  // a continuation longer than max_length cannot be scored
  EXPECT_ERROR(score_requests(*m, {{r}}, o), "longer than max_length");
}

TEST(Wikitext, PagesDetokenizerAndWords) {
  const auto pages = wikitext_pages(mqtest::read_file(mqtest::repo("data/wikitext-2-raw/wiki.test.raw")));
  EXPECT_EQ(pages.size(), 62u);  // lm-eval's wikitext test split has 62 documents
  EXPECT_TRUE(pages[0].starts_with(" = Robert Boulter = \n"));
  EXPECT_EQ(wikitext_detokenize(" = = Career = = \n The 2 @,@ 000 men ( about 10 @.@ 5 % ) said \" yes \" . It 's"),
            " == Career ==\nThe 2,000 men (about 10.5 %) said \"yes\". It's");
  EXPECT_EQ(wikitext_detokenize("well @-@ known , N times ; 5 \xC2\xB0 C : done"),
            "well-known, 1 times; 5\xC2\xB0" "C: done");
}

TEST(LmEvalShape, ResultsLoadWhereLmEvalResultsDo) {
  // A sample of lm-eval 0.4's results.json, written from its documentation and evaluator.py
  // (tests/data/lm_eval_0.4_results_sample.json): every key a reader of that file can use
  // exists in ours with the same JSON type, per task of the same kind.
  auto m = Model::load(mqtest::repo("models/mamba-tiny"));
  EvalOptions o = quiet();
  o.limit = 20;
  o.bootstrap_iters = 1000;
  std::vector<TaskResult> rs;
  for (const char* t : {"lambada_openai", "arc_easy", "winogrande"}) rs.push_back(run_task(*m, mqtest::tokenizer(), t, o));
  LmEvalRun run;
  run.model_path = "models/mamba-tiny";
  run.model_args = "pretrained=models/mamba-tiny";
  run.limit = 20;
  const auto ours = lm_eval_results(rs, run);
  const auto sample = read_json_file(mqtest::repo("tests/data/lm_eval_0.4_results_sample.json"));
  std::function<void(const nlohmann::json&, const nlohmann::json&, const std::string&)> same_shape =
      [&](const nlohmann::json& want, const nlohmann::json& got, const std::string& path) {
        if (want.is_object()) {
          ASSERT_TRUE(got.is_object()) << path;
          for (auto& [k, v] : want.items()) {
            ASSERT_TRUE(got.contains(k)) << path << "." << k;
            if (path.ends_with("configs") || path.ends_with("config")) continue;  // free-form settings
            same_shape(v, got[k], path + "." + k);
          }
        } else if (want.is_number()) {
          EXPECT_TRUE(got.is_number()) << path;
        } else if (!want.is_null()) {
          EXPECT_EQ(got.type_name(), std::string(want.type_name())) << path;
        }
      };
  same_shape(sample, ours, "");
  EXPECT_NEAR(ours["results"]["arc_easy"]["acc,none"].get<double>(), rs[1].json["acc"].get<double>(), 0);
  EXPECT_EQ(ours["n-samples"]["arc_easy"]["effective"], 20);
  EXPECT_EQ(ours["n-samples"]["arc_easy"]["original"], 2376);
  EXPECT_EQ(ours["results"]["winogrande"].count("acc_norm,none"), 0u);  // acc only, as lm-eval
}

TEST(EvalCli, JsonOnStdoutModesSamplesAndErrors) {
  const std::string dir = mqtest::temp_dir("eval_cli");
  const std::string base = "eval " + mqtest::repo("models/mamba-tiny") + " --no-log -q --limit 8 --bootstrap-iters 100 ";
  // --json - writes only JSON to stdout
  auto r = mqtest::run_cli(base + "--tasks arc_easy,lambada_openai --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["results"]["arc_easy"].contains("acc_norm_stderr,none"));
  EXPECT_TRUE(j["results"]["lambada_openai"].contains("perplexity_stderr,none"));
  EXPECT_NE(r.err.find("acc_norm"), std::string::npos);  // the table went to stderr
  // --output-path DIR --log-samples: results.json and one samples file per task
  r = mqtest::run_cli(base + "--tasks piqa --output-path " + dir + "/out --log-samples");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir + "/out/results.json"));
  const std::string samples = mqtest::read_file(dir + "/out/samples_piqa.jsonl");
  EXPECT_EQ(std::count(samples.begin(), samples.end(), '\n'), 8);
  const auto s0 = nlohmann::json::parse(samples.substr(0, samples.find('\n')));
  EXPECT_EQ(s0["arguments"].size(), 2u);
  EXPECT_EQ(s0["target"], task("piqa")[0].gold);
  // errors
  mqtest::expect_one_line_error(mqtest::run_cli(base + "--tasks piqa --log-samples"), "--output-path");
  mqtest::expect_one_line_error(mqtest::run_cli(base + "--tasks arc_easi"), "unknown task 'arc_easi'");
  mqtest::expect_one_line_error(mqtest::run_cli(base + "--modes fp32,fake"), "is not quantized");
  mqtest::expect_one_line_error(mqtest::run_cli(base + "--modes fp32,bogus"), "bogus");
}
