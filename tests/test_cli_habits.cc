// The CLI as people coming from the Quamba scripts type it: their flag spellings, typos in
// commands and flags, ranges, a file where a folder is expected.
#include <filesystem>

#include "analysis/explog.h"
#include "io/json_file.h"
#include "util.h"

using mqtest::expect_one_line_error;
using mqtest::run_cli;

TEST(CliHabits, ReferenceSpellingsAreAliasesShownInHelp) {
  const auto q = run_cli("quantize --help");
  for (const char* f : {"--w_bits", "--a_bits", "--percentile_alpha", "--calib_data_num", "--calib_seqlen"})
    EXPECT_NE(q.out.find(f), std::string::npos) << f;
  const auto e = run_cli("eval --help");
  for (const char* f : {"--task_list", "--batch_size"}) EXPECT_NE(e.out.find(f), std::string::npos) << f;
  // and they work: an alias reaches the same check as the dashed flag
  expect_one_line_error(run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + mqtest::temp_dir("alias") + "/q --w_bits 5"), "--w-bits 5");
  const auto r = run_cli("eval " + mqtest::model_dir("mamba-tiny") +
                         " --task_list ppl:corpus/heldout.txt --limit 1 --batch_size 16 --no-log -q --ppl-seqlen 64");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("heldout"), std::string::npos);
}

TEST(CliHabits, DidYouMeanForCommandsAndOptions) {
  auto r = run_cli("evl models/mamba-tiny");
  expect_one_line_error(r, "unknown command 'evl'");
  EXPECT_NE(r.err.find("did you mean 'eval'"), std::string::npos) << r.err;
  r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + mqtest::temp_dir("typo") + "/q --percentile-alpa 0.99");
  expect_one_line_error(r, "unknown option '--percentile-alpa'");
  EXPECT_NE(r.err.find("did you mean '--percentile-alpha'"), std::string::npos) << r.err;
  r = run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --tsks lambada_openai");
  EXPECT_NE(r.err.find("did you mean '--tasks'"), std::string::npos) << r.err;
}

TEST(CliHabits, RangesReadAsAPersonWritesThem) {
  auto r = run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + mqtest::temp_dir("range") + "/q --calib-num 0");
  expect_one_line_error(r, "must be at least 1");
  EXPECT_EQ(r.err.find("2147483647"), std::string::npos) << r.err;
  EXPECT_LT(r.err.size(), 200u) << r.err;
  // --limit 0 would have meant "everything": refused
  expect_one_line_error(run_cli("eval " + mqtest::model_dir("mamba-tiny") + " --limit 0"), "must be at least 1");
  expect_one_line_error(run_cli("generate " + mqtest::model_dir("mamba-tiny") + " --prompt a --top-p 1.5"),
                        "must be between 0 and 1");
}

TEST(CliHabits, AFileWhereAFolderIsExpectedSaysSo) {
  const auto r = run_cli("info " + mqtest::model_dir("mamba-tiny") + "/pytorch_model.bin");
  expect_one_line_error(r, "is a file");
  EXPECT_NE(r.err.find("folder holding config.json"), std::string::npos) << r.err;
}

TEST(CliHabits, Mamba2WithTheQuamba1RecipeGetsANote) {
  const std::string out = mqtest::temp_dir("m2note") + "/q";
  const auto r = run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + out +
                         " --calib-num 2 --calib-seqlen 32 --no-log -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("Quamba2 recipe"), std::string::npos) << r.err;
}

// Quamba's main.py in one command: quantize, saved where main.py saves it, evaluated, lm-eval's
// JSON and the experiment log in --log_dir; an existing folder is not reused silently.
TEST(CliHabits, MainPyInOneCommand) {
  const std::string d = mqtest::temp_dir("mainpy");
  const std::string args = " --quantize --calib_data_num 4 --calib_seqlen 64 --eval_zero_shot --task_list lambada_openai "
                           "--testing --pretrained_dir " + d + "/pm --output_subdir quamba1 --log_dir " + d +
                           "/logs --batch_size 16";
  auto r = run_cli("run " + mqtest::model_dir("mamba-tiny") + args);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string q = d + "/pm/quamba1/quamba-tiny-w8a8";
  EXPECT_TRUE(std::filesystem::exists(q + "/config.json"));
  EXPECT_NE(r.err.find("run: mambaq quantize "), std::string::npos) << r.err;  // the native commands, shown
  EXPECT_NE(r.err.find("run: mambaq eval " + q), std::string::npos) << r.err;
  const auto res = mambaq::read_json_file(d + "/logs/quamba-tiny-w8a8/results.json");
  EXPECT_EQ(res["results"]["lambada_openai"]["alias"], "lambada_openai") << res.dump();
  std::vector<std::string> kinds;
  for (const auto& rec : mambaq::read_log(d + "/logs/experiments.jsonl")) kinds.push_back(rec.value("kind", ""));
  EXPECT_EQ(kinds, (std::vector<std::string>{"quantize", "eval"}));
  // the stale-checkpoint trap: main.py would load the old folder and quantize nothing
  expect_one_line_error(run_cli("run " + mqtest::model_dir("mamba-tiny") + args), "already exists");
  // Quamba2 flags choose the Quamba2 recipe, and the name carries the bits
  r = run_cli("run " + mqtest::model_dir("mamba2-tiny-hf") + " --quantize --w_bits 4 --a_bits 16 --pretrained_dir " + d +
              "/pm --log_dir " + d + "/logs --calib_data_num 2 --calib_seqlen 32");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("run: recipe quamba2"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(d + "/pm/quamba2-tiny-hf-w4a16/config.json"));
  expect_one_line_error(run_cli("run " + mqtest::model_dir("mamba-tiny")), "nothing to do");
}

// main.py's flags on quantize name what mambaq writes instead; bit widths name the recipe that
// has them; recipe and preset names are read as people write them.
TEST(CliHabits, MainPyFlagsAndRecipeNames) {
  const std::string m = mqtest::model_dir("mamba-tiny"), o = " -o " + mqtest::temp_dir("names") + "/q";
  auto r = run_cli("quantize " + m + o + " --pretrained_dir x");
  expect_one_line_error(r, "--pretrained_dir is Quamba's main.py flag");
  EXPECT_NE(r.err.find("-o DIR"), std::string::npos) << r.err;
  expect_one_line_error(run_cli("quantize " + m + o + " --eval_zero_shot"), "mambaq eval");
  r = run_cli("quantize " + m + o + " --w_bits 4");
  expect_one_line_error(r, "--recipe quamba2");
  EXPECT_NE(r.err.find("--preset w4a8"), std::string::npos) << r.err;
  expect_one_line_error(run_cli("quantize " + m + o + " --a_bits 16"), "--preset w4a16");
  r = run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + o + " --recipe Quamba2 --preset W4A8 --dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["effective"]["recipe"], "quamba2");
  expect_one_line_error(run_cli("quantize " + m + o + " --recipe quamba3"), "did you mean 'quamba");
}
