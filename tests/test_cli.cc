// The CLI end to end: outputs, JSON shapes, and one-line errors with non-zero exit codes.
#include "io/json_file.h"
#include "mambaq/generate.h"
#include "mambaq/model.h"
#include "mambaq/tokenizer.h"
#include "util.h"

using mqtest::run_cli;


TEST(Cli, HelpOnEveryCommand) {
  for (const char* c : {"", "info", "logits", "generate", "eval", "bench", "quantize"}) {
    auto r = run_cli(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c;
    if (*c) EXPECT_NE(r.out.find("--threads"), std::string::npos) << c;
    else EXPECT_NE(r.out.find("eval"), std::string::npos);
  }
}

TEST(Cli, InfoBothLayouts) {
  auto r = run_cli("info " + mqtest::model_dir("mamba-tiny"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("mamba"), std::string::npos);
  EXPECT_NE(r.out.find("state-spaces"), std::string::npos);
  const std::string j = mqtest::temp_dir("cli_info") + "/i.json";
  r = run_cli("info " + mqtest::model_dir("mamba2-tiny-hf") + " --json " + j);
  EXPECT_EQ(r.code, 0) << r.err;
  auto info = mambaq::read_json_file(j);
  EXPECT_EQ(info["architecture"], "mamba2");
  EXPECT_EQ(info["layout"], "hf");
  EXPECT_EQ(info["nheads"], 16);
}

TEST(Cli, LogitsJsonMatchesReference) {
  const std::string j = mqtest::temp_dir("cli_logits") + "/l.json";
  auto ref = mambaq::read_json_file(mqtest::model_dir("mamba2-tiny-hf") + "/reference.json")["reference_logits"][2];
  auto r = run_cli("logits " + mqtest::model_dir("mamba2-tiny-hf") + " --prompt '" + ref["prompt"].get<std::string>() +
                   "' --top 10 --json " + j + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto out = mambaq::read_json_file(j);
  EXPECT_EQ(out["ids"], ref["ids"]);
  EXPECT_EQ(out["top_ids"], ref["top_ids"]);
  for (size_t k = 0; k < 10; ++k) EXPECT_NEAR(out["top_logits"][k].get<double>(), ref["top_logits"][k].get<double>(), 1e-3);
}

TEST(Cli, GenerateGreedyStreamsTheArgmaxContinuation) {
  auto r = run_cli("generate " + mqtest::model_dir("mamba-tiny") + " --prompt 'The president said that' -n 8");
  ASSERT_EQ(r.code, 0) << r.err;
  // independent check: repeated full forward + argmax
  auto m = mambaq::Model::load(mqtest::model_dir("mamba-tiny"));
  auto tok = mambaq::Tokenizer::load(mqtest::repo("data/tokenizer/gpt-neox-20b/tokenizer.json"));
  auto ids = tok->encode("The president said that");
  std::vector<int32_t> gen;
  for (int i = 0; i < 8; ++i) {
    auto l = mambaq::Session(*m).last_logits(ids);
    const int32_t t = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    ids.push_back(t);
    gen.push_back(t);
  }
  EXPECT_EQ(r.out, "The president said that" + tok->decode(gen) + "\n");
}

TEST(Cli, SamplingIsSeeded) {
  const std::string args = "generate " + mqtest::model_dir("mamba-tiny") + " --prompt 'Once upon a time' -n 12 --temperature 0.9 --top-k 40 --top-p 0.95";
  auto a = run_cli(args + " --seed 7"), b = run_cli(args + " --seed 7"), c = run_cli(args + " --seed 8");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(Cli, EvalJsonShape) {
  const std::string j = mqtest::temp_dir("cli_eval") + "/e.json";
  auto r = run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --tasks lambada_openai,wikitext2,ppl:corpus/heldout.txt,lastword:corpus/lastword.jsonl --limit 3 --ppl-seqlen 256 --json " + j);
  ASSERT_EQ(r.code, 0) << r.err;
  auto e = mambaq::read_json_file(j);
  // lm-eval's keys, and mambaq's own fields under "mambaq"
  for (const char* k : {"acc,none", "acc_stderr,none", "perplexity,none", "perplexity_stderr,none", "alias"})
    EXPECT_TRUE(e["results"]["lambada_openai"].contains(k)) << k;
  EXPECT_TRUE(e["results"]["wikitext2"].contains("perplexity,none"));
  const auto& own = e["mambaq"]["results"];
  for (const char* k : {"acc", "correct", "n", "ppl"}) EXPECT_TRUE(own["lambada_openai"].contains(k)) << k;
  for (const char* k : {"ppl", "tokens", "scored", "seqlen"}) EXPECT_TRUE(own["wikitext2"].contains(k)) << k;
  EXPECT_TRUE(e["results"].contains("heldout"));
  EXPECT_TRUE(e["results"].contains("lastword"));
  EXPECT_EQ(own["wikitext2"]["seqlen"], 256);
  EXPECT_EQ(own["lambada_openai"]["n"], 3);
  EXPECT_EQ(e["n-samples"]["lambada_openai"]["effective"], 3);
  EXPECT_NE(r.out.find("lambada_openai"), std::string::npos);  // the table
}

TEST(Cli, OneLineErrors) {
  mqtest::expect_one_line_error(run_cli("info /no/such/model"), "/no/such/model");
  mqtest::expect_one_line_error(run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --tasks piqaa"), "piqaa");
  mqtest::expect_one_line_error(run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --data-dir /no/data"), "--data-dir");
  mqtest::expect_one_line_error(run_cli("bench --synthetic mamba-9b"), "mamba-9b");
  mqtest::expect_one_line_error(run_cli("bench"), "--synthetic");
  const std::string d = mqtest::temp_dir("cli_err");
  mqtest::write_file(d + "/config.json", "{\"model_type\": \"gpt2\"}");
  mqtest::expect_one_line_error(run_cli("info " + d), "gpt2");
  auto r = run_cli("logits " + mqtest::model_dir("mamba-tiny"));  // --prompt missing: CLI11's usage error
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--prompt"), std::string::npos) << r.err;
  r = run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --ppl-seqlen 1");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--ppl-seqlen"), std::string::npos) << r.err;
}

TEST(Cli, BenchSyntheticJson) {
  const std::string j = mqtest::temp_dir("cli_bench") + "/b.json";
  auto r = run_cli("bench --synthetic mamba2-130m --prompt-len 16 --decode 2 --repeats 1 --no-bandwidth --json " + j);
  ASSERT_EQ(r.code, 0) << r.err;
  auto b = mambaq::read_json_file(j);
  for (const char* k : {"forward_tok_s", "prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mib", "weight_bytes_per_token"})
    EXPECT_GT(b[k].get<double>(), 0) << k;
  EXPECT_EQ(b["batch"], 1);
  EXPECT_EQ(b["forward_runs_s"].size(), 1u);
  // --batch: three sequences prefilled and decoded together
  r = run_cli("bench --synthetic mamba2-130m --prompt-len 16 --decode 2 --repeats 1 --no-bandwidth --batch 3 --json " + j +
              " --force");
  ASSERT_EQ(r.code, 0) << r.err;
  b = mambaq::read_json_file(j);
  EXPECT_EQ(b["batch"], 3);
  EXPECT_GT(b["decode_tok_s"].get<double>(), 0);
  mqtest::expect_one_line_error(run_cli("bench --synthetic mamba2-130m --batch 0"), "--batch");
}

// eval --synthetic: a task timed on random weights of a published shape; the same seed gives the
// same (meaningless) scores, another seed others; MODEL and --synthetic together are refused.
TEST(Cli, EvalSyntheticShape) {
  const std::string d = mqtest::temp_dir("cli_eval_synth");
  const std::string base = "eval --synthetic mamba-130m --tasks lambada_openai --limit 3 --no-log -q --json ";
  ASSERT_EQ(run_cli(base + d + "/a.json").code, 0);
  ASSERT_EQ(run_cli(base + d + "/b.json").code, 0);
  ASSERT_EQ(run_cli(base + d + "/c.json --seed 2").code, 0);
  const auto a = mambaq::read_json_file(d + "/a.json"), b = mambaq::read_json_file(d + "/b.json"),
             c = mambaq::read_json_file(d + "/c.json");
  const auto ppl = [](const nlohmann::json& j) { return j["results"]["lambada_openai"]["perplexity,none"].get<double>(); };
  EXPECT_EQ(ppl(a), ppl(b));
  EXPECT_NE(ppl(a), ppl(c));
  EXPECT_NE(a["config"]["model_args"].get<std::string>().find("synthetic:mamba-130m"), std::string::npos);
  mqtest::expect_one_line_error(run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --synthetic mamba-130m"),
                                "--synthetic");
  mqtest::expect_one_line_error(run_cli("eval --synthetic mamba-9b"), "mamba-9b");
}

TEST(Cli, EvalJsonToStdoutIsOnlyJson) {
  // `--json -`: stdout holds one JSON document and nothing else; the table goes to stderr.
  auto r = run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --tasks ppl:corpus/heldout.txt --limit 1 --ppl-seqlen 64 "
                   "--no-log -q --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);  // throws if anything else is on stdout
  EXPECT_TRUE(j["results"].contains("heldout"));
  EXPECT_NE(r.err.find("task"), std::string::npos) << r.err;  // the table, on stderr
}
