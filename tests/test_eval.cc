// Evaluation protocols against reference.json (independent HF transformers runs).
// The bundled models are checked in full on lambada_openai (5,153 documents), the held-out
// corpus and wikitext2; ../shared's other layouts too when ../shared is present, and every
// folder on every task with MAMBAQ_FULL_REFERENCE=1 (see README).
#include <cstdlib>

#include "io/json_file.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "util.h"

using namespace mambaq;

namespace {
EvalOptions opts(int seqlen = 1024) {
  EvalOptions o;
  o.data_dir = mqtest::repo("data");
  o.progress = false;
  o.ppl_seqlen = seqlen;
  return o;
}
void expect_rel(double got, double want, double tol, const std::string& what) {
  EXPECT_LT(std::abs(got / want - 1), tol) << what << ": got " << got << ", reference " << want;
}
}  // namespace

TEST(Protocol, LastwordSplitFollowsLmEval) {
  // context = up to the last space; continuation = " " + last word
  auto d = lastword_split(mqtest::tokenizer(), "The cat sat on the mat");
  EXPECT_EQ(mqtest::tokenizer().decode(d.context), "The cat sat on the");
  EXPECT_EQ(mqtest::tokenizer().decode(d.continuation), " mat");
  // trailing spaces of the context move into the continuation
  auto d2 = lastword_split(mqtest::tokenizer(), "Hello there  world");
  EXPECT_EQ(mqtest::tokenizer().decode(d2.context), "Hello there");
  EXPECT_EQ(mqtest::tokenizer().decode(d2.continuation), "  world");
  EXPECT_ERROR(lastword_split(mqtest::tokenizer(), "nospace"), "no space");
}

TEST(Protocol, LastwordPerDocumentMatchesReference) {
  // first 300 lambada documents, each document's log-likelihood and greedy flag
  auto m = Model::load(mqtest::repo("models/mamba-tiny"));
  auto o = opts();
  o.limit = 300;
  auto r = run_task(*m, mqtest::tokenizer(), "lambada_openai", o);
  auto per = read_json_file(mqtest::repo("models/mamba-tiny/lambada_openai_per_doc.json"));
  ASSERT_EQ(r.per_doc.size(), 300u);
  for (size_t i = 0; i < 300; ++i) {
    EXPECT_EQ(r.per_doc[i].first, per[i][0].get<int>()) << "doc " << i;
    EXPECT_NEAR(r.per_doc[i].second, per[i][1].get<double>(), 2e-3 + 1e-4 * std::abs(per[i][1].get<double>()))
        << "doc " << i;
  }
}

class BundledReference : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, BundledReference, ::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"));

TEST_P(BundledReference, LambadaHeldoutAndLastwordMatch) {
  const std::string dir = mqtest::repo(GetParam());
  auto m = Model::load(dir);
  auto ref = read_json_file(dir + "/reference.json");
  auto lam = run_task(*m, mqtest::tokenizer(), "lambada_openai", opts());
  EXPECT_EQ(lam.json["correct"], ref["lambada_openai"]["correct"]);
  EXPECT_EQ(lam.json["n"], ref["lambada_openai"]["n"]);
  EXPECT_EQ(lam.json["target_tokens"], ref["lambada_openai"]["target_tokens"]);
  expect_rel(lam.json["ppl"], ref["lambada_openai"]["ppl"], 1e-3, "lambada ppl");
  auto lw = run_task(*m, mqtest::tokenizer(), "lastword:corpus/lastword.jsonl", opts());
  EXPECT_EQ(lw.key, "lastword");
  EXPECT_EQ(lw.json["correct"], ref["heldout_lastword"]["correct"]);
  expect_rel(lw.json["ppl"], ref["heldout_lastword"]["ppl"], 1e-3, "lastword ppl");
  for (int S : {1024, 512}) {
    auto h = run_task(*m, mqtest::tokenizer(), "ppl:corpus/heldout.txt", opts(S));
    EXPECT_EQ(h.key, "heldout");
    EXPECT_EQ(h.json["tokens"], ref["heldout"]["tokens"]);
    EXPECT_EQ(h.json["scored"], ref["heldout"]["scored_" + std::to_string(S)]);
    expect_rel(h.json["ppl"], ref["heldout"]["ppl_" + std::to_string(S)], 1e-3, "heldout ppl " + std::to_string(S));
  }
}

// wikitext2 in full, one window length per bundled model (about a minute each).
struct WikiCase {
  const char* model;
  int seqlen;
};
class BundledWikitext : public ::testing::TestWithParam<WikiCase> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, BundledWikitext,
                         ::testing::Values(WikiCase{"models/mamba-tiny", 512}, WikiCase{"models/mamba2-tiny-hf", 1024}),
                         [](const ::testing::TestParamInfo<WikiCase>& i) {
                           std::string n = std::string(i.param.model).substr(7) + "_" + std::to_string(i.param.seqlen);
                           for (auto& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST_P(BundledWikitext, Full) {
  const std::string dir = mqtest::repo(GetParam().model);
  const std::string s = std::to_string(GetParam().seqlen);
  auto m = Model::load(dir);
  auto ref = read_json_file(dir + "/reference.json");
  auto w = run_task(*m, mqtest::tokenizer(), "wikitext2", opts(GetParam().seqlen));
  EXPECT_EQ(w.json["tokens"], ref["wikitext2"]["tokens"]);
  EXPECT_EQ(w.json["scored"], ref["wikitext2"]["scored_" + s]);
  expect_rel(w.json["ppl"], ref["wikitext2"]["ppl_" + s], 1e-3, "wikitext2 ppl " + s);
}

// ../shared's folders: the two layouts not bundled on the quick tasks always; with
// MAMBAQ_FULL_REFERENCE=1 all four folders on every task and both window lengths (~15 min).
class SharedReference : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(AllFolders, SharedReference,
                         ::testing::Values("mamba-tiny", "mamba-tiny-hf", "mamba2-tiny", "mamba2-tiny-hf"));

TEST_P(SharedReference, MatchesReferenceJson) {
  if (!mqtest::have_shared()) GTEST_SKIP() << "../shared not present";
  const bool full = std::getenv("MAMBAQ_FULL_REFERENCE") != nullptr;
  const std::string name = GetParam();
  if (!full && (name == "mamba-tiny" || name == "mamba2-tiny-hf"))
    GTEST_SKIP() << "same weights as the bundled copy (BundledReference); MAMBAQ_FULL_REFERENCE=1 runs it";
  const std::string dir = mqtest::shared("models/" + name);
  auto m = Model::load(dir);
  auto ref = read_json_file(dir + "/reference.json");
  auto lam = run_task(*m, mqtest::tokenizer(), "lambada_openai", opts());
  EXPECT_EQ(lam.json["correct"], ref["lambada_openai"]["correct"]);
  expect_rel(lam.json["ppl"], ref["lambada_openai"]["ppl"], 1e-3, "lambada ppl");
  auto lw = run_task(*m, mqtest::tokenizer(), "lastword:corpus/lastword.jsonl", opts());
  EXPECT_EQ(lw.json["correct"], ref["heldout_lastword"]["correct"]);
  expect_rel(lw.json["ppl"], ref["heldout_lastword"]["ppl"], 1e-3, "lastword ppl");
  for (int S : {1024, 512}) {
    if (!full && S == 512) continue;
    const std::string s = std::to_string(S);
    auto h = run_task(*m, mqtest::tokenizer(), "ppl:corpus/heldout.txt", opts(S));
    EXPECT_EQ(h.json["scored"], ref["heldout"]["scored_" + s]);
    expect_rel(h.json["ppl"], ref["heldout"]["ppl_" + s], 1e-3, "heldout ppl " + s);
    if (!full) continue;
    auto w = run_task(*m, mqtest::tokenizer(), "wikitext2", opts(S));
    EXPECT_EQ(w.json["tokens"], ref["wikitext2"]["tokens"]);
    EXPECT_EQ(w.json["scored"], ref["wikitext2"]["scored_" + s]);
    expect_rel(w.json["ppl"], ref["wikitext2"]["ppl_" + s], 1e-3, "wikitext2 ppl " + s);
  }
}

TEST(EvalErrors, BadTasksAndFiles) {
  auto m = Model::load(mqtest::repo("models/mamba-tiny"));
  const std::string d = mqtest::temp_dir("evalerr");
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "hellaswagg", opts()), "unknown task", "hellaswagg");
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "hellaswag", opts()), "hellaswag_val.jsonl", "not found");  // not bundled
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "ppl:" + d + "/none.txt", opts()), "none.txt", "not found");
  mqtest::write_file(d + "/bad.jsonl", "{\"text\": \"a b\"}\n{not json}\n");
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "lastword:" + d + "/bad.jsonl", opts()), "bad.jsonl:2", "malformed");
  mqtest::write_file(d + "/notext.jsonl", "{\"txt\": \"a b\"}\n");
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "lastword:" + d + "/notext.jsonl", opts()), "notext.jsonl:1", "\"text\"");
  mqtest::write_file(d + "/empty.jsonl", "");
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "lastword:" + d + "/empty.jsonl", opts()), "empty.jsonl", "empty");
  mqtest::write_file(d + "/short.txt", "just a few words");
  EXPECT_ERROR(run_task(*m, mqtest::tokenizer(), "ppl:" + d + "/short.txt", opts()), "short.txt", "fewer than one window");
}
