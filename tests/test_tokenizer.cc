// GPT-NeoX BPE: the reference ids, byte-exact round trips over the bundled data sets,
// and the HF added-token / normalisation rules.
#include <fstream>

#include "io/json_file.h"
#include "mambaq/tokenizer.h"
#include "util.h"

using namespace mambaq;


TEST(Tokenizer, ReferenceIdsOfBothFixtures) {
  for (const char* m : {"models/mamba-tiny", "models/mamba2-tiny-hf"}) {
    auto ref = read_json_file(mqtest::repo(std::string(m) + "/reference.json"));
    for (const auto& r : ref["reference_logits"])
      EXPECT_EQ(mqtest::tokenizer().encode(r["prompt"].get<std::string>()), r["ids"].get<std::vector<int32_t>>()) << r["prompt"];
  }
}

TEST(Tokenizer, KnownEncodings) {
  // Independent expectations (GPT-NeoX tokenizer as published): " the" = 253, "," = 13, "." = 15,
  // "<|endoftext|>" = 0, a run of two spaces is the added token 50276.
  EXPECT_EQ(mqtest::tokenizer().encode(" the"), (std::vector<int32_t>{253}));
  EXPECT_EQ(mqtest::tokenizer().encode("a,b."), (std::vector<int32_t>{66, 13, 67, 15}));
  EXPECT_EQ(mqtest::tokenizer().encode("<|endoftext|>"), (std::vector<int32_t>{0}));
  EXPECT_EQ(mqtest::tokenizer().encode("x  y"), (std::vector<int32_t>{89, 50276, 90}));
  EXPECT_EQ(mqtest::tokenizer().eos_id(), 0);
  EXPECT_TRUE(mqtest::tokenizer().encode("").empty());
}

TEST(Tokenizer, NfcNormalisation) {
  // "e" + combining acute (U+0301) normalises to U+00E9 before BPE
  EXPECT_EQ(mqtest::tokenizer().encode("caf\x65\xcc\x81"), mqtest::tokenizer().encode("caf\xc3\xa9"));
}

TEST(Tokenizer, RoundTripEdgeCases) {
  for (const std::string& s : std::vector<std::string>{"  leading", "trailing   ", "tabs\t\tand\nnewlines\n\n", "emoji \xf0\x9f\x98\x80!",
                              "'s 're 've 'll", "digits 12345 3.14", std::string(60, ' ') + "x", "<|padding|> x"})
    EXPECT_EQ(mqtest::tokenizer().decode(mqtest::tokenizer().encode(s)), s);
}

static void round_trip_lines(const std::string& path, bool jsonl) {
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::string line;
  int n = 0, bad = 0;
  while (std::getline(in, line)) {
    std::string text = jsonl ? nlohmann::json::parse(line)["text"].get<std::string>() : line;
    if (mqtest::tokenizer().decode(mqtest::tokenizer().encode(text)) != text && ++bad < 5) ADD_FAILURE() << "line " << n + 1 << ": " << text;
    ++n;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_GT(n, 4000);
}

TEST(Tokenizer, RoundTripEveryLambadaLine) { round_trip_lines(mqtest::repo("data/lambada_openai/lambada_test.jsonl"), true); }
TEST(Tokenizer, RoundTripEveryWikitextLine) { round_trip_lines(mqtest::repo("data/wikitext-2-raw/wiki.test.raw"), false); }

TEST(Tokenizer, WholeFileTokenCountsMatchReference) {
  auto ref = read_json_file(mqtest::repo("models/mamba-tiny/reference.json"));
  const std::string wiki = mqtest::read_file(mqtest::repo("data/wikitext-2-raw/wiki.test.raw"));
  EXPECT_EQ(int64_t(mqtest::tokenizer().encode(wiki).size()), ref["wikitext2"]["tokens"].get<int64_t>());
  const std::string held = mqtest::read_file(mqtest::repo("data/corpus/heldout.txt"));
  EXPECT_EQ(int64_t(mqtest::tokenizer().encode(held).size()), ref["heldout"]["tokens"].get<int64_t>());
}

TEST(Tokenizer, Errors) {
  const std::string dir = mqtest::temp_dir("tok");
  EXPECT_ERROR(Tokenizer::load(dir + "/none.json"), "none.json", "not found");
  mqtest::write_file(dir + "/bad.json", "{\"model\": {\"type\": \"BPE\"}}");
  EXPECT_ERROR(Tokenizer::load(dir + "/bad.json"), "bad.json", "malformed");
  EXPECT_ERROR(mqtest::tokenizer().encode("bad \xff byte"), "UTF-8");
}
