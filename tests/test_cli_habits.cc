// The CLI as people coming from the Quamba scripts type it: their flag spellings, typos in
// commands and flags, ranges, a file where a folder is expected.
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
