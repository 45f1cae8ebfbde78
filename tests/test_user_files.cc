// A user's files (docs/robustness.md): written whole under their name or not at all, never
// through a link, never replaced without --force; scale edits checked before anything is written.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "analysis/explog.h"
#include "io/json_file.h"
#include "io/mmap_file.h"
#include "io/safetensors.h"
#include "mambaq/checkpoint.h"
#include "mambaq/config.h"
#include "mambaq/eval.h"
#include "mambaq/model.h"
#include "model/quant_state.h"
#include "quant/scale_rules.h"
#include "util.h"

using namespace mambaq;
namespace fs = std::filesystem;

namespace {
size_t temporaries_in(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().find(".mambaq-tmp") != std::string::npos;
  return n;
}
}  // namespace

TEST(AtomicWrites, ReplaceALinkInsteadOfWritingThroughIt) {
  const std::string d = mqtest::temp_dir("atomic_links");
  mqtest::write_file(d + "/orig", "original");
  fs::create_symlink(d + "/orig", d + "/sym");
  ASSERT_EQ(::link((d + "/orig").c_str(), (d + "/hard").c_str()), 0);
  write_file_atomic(d + "/sym", "new through the symlink's name");
  write_file_atomic(d + "/hard", "new through the hard link's name");
  EXPECT_EQ(mqtest::read_file(d + "/orig"), "original");  // the file the links shared is untouched
  EXPECT_FALSE(fs::is_symlink(d + "/sym"));
  EXPECT_EQ(mqtest::read_file(d + "/sym"), "new through the symlink's name");
  EXPECT_EQ(mqtest::read_file(d + "/hard"), "new through the hard link's name");
  struct stat st {};
  ASSERT_EQ(::stat((d + "/orig").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(temporaries_in(d), 0u);
  // the same for the writers built on it
  fs::create_symlink(d + "/orig", d + "/sym2");
  write_text_file(d + "/sym2", "text");
  save_safetensors(d + "/sym2", {{"t", DType::F32, {2}, std::vector<float>{1.f, 2.f}.data()}}, {});
  EXPECT_EQ(mqtest::read_file(d + "/orig"), "original");
}

TEST(AtomicWrites, AnUncommittedOrFailedWriteLeavesTheOldFile) {
  const std::string d = mqtest::temp_dir("atomic_fail");
  mqtest::write_file(d + "/f", "old");
  {
    AtomicWriter w(d + "/f");
    w.write("half of the new", 15);
  }  // not committed: an error on the way
  EXPECT_EQ(mqtest::read_file(d + "/f"), "old");
  EXPECT_EQ(temporaries_in(d), 0u);
  fs::create_directories(d + "/folder");
  EXPECT_ERROR(write_file_atomic(d + "/folder", "x"), "is a folder");
  EXPECT_ERROR(write_file_atomic(d + "/none/f", "x"), "cannot create");
}

TEST(AtomicWrites, InPlacePatchRefusesLinks) {
  const std::string d = mqtest::temp_dir("patch_links");
  const std::vector<float> v = {1.f, 2.f, 3.f};
  save_safetensors(d + "/w.safetensors", {{"s", DType::F32, {3}, v.data()}}, {});
  const std::string before = mqtest::read_file(d + "/w.safetensors");
  fs::create_symlink(d + "/w.safetensors", d + "/sym.safetensors");
  EXPECT_ERROR(patch_safetensors_f32(d + "/sym.safetensors", {{"s", {4.f, 5.f, 6.f}}}), "symbolic link", "-o NEW");
  ASSERT_EQ(::link((d + "/w.safetensors").c_str(), (d + "/hard.safetensors").c_str()), 0);
  EXPECT_ERROR(patch_safetensors_f32(d + "/hard.safetensors", {{"s", {4.f, 5.f, 6.f}}}), "2 names", "hard-linked");
  EXPECT_EQ(mqtest::read_file(d + "/w.safetensors"), before);
  fs::remove(d + "/hard.safetensors");
  patch_safetensors_f32(d + "/w.safetensors", {{"s", {4.f, 5.f, 6.f}}});  // its only name: patched in place
  EXPECT_NE(mqtest::read_file(d + "/w.safetensors"), before);
}

// A scale an edit would push out of float32 (or to 0 / a subnormal) is refused naming the rule,
// before anything is written.
TEST(ScaleEdits, OverflowAndUnderflowAreRefusedBeforeWriting) {
  ModelConfig c;
  c.arch = Arch::Mamba1, c.n_layer = 2;
  ScaleTable t;
  t.points.push_back({0, "x_proj:input", "percentile", 12.7f, 0.1f});
  t.points.push_back({1, "x_proj:input", "percentile", 12.7f, 0.1f});
  ScaleTable keep = t;
  EXPECT_ERROR(apply_scale_rules(t, {parse_scale_rule("x_proj:input=*1e300", c, "--scale-override")}, "--scale-override"),
               "not a positive, finite", "layer 0 x_proj:input", "nothing was written");
  ScaleTable u = keep;
  EXPECT_ERROR(apply_scale_rules(u, {parse_scale_rule("x_proj:input=*1e-300", c, "f")}, "f"), "not a positive, finite");
  ScaleTable g;
  g.points.push_back({0, "x_proj:input", "grouped-minmax", 2.f, 0.02f, {2}, {0.01f, 3e38f}});
  EXPECT_ERROR(apply_scale_rules(g, {parse_scale_rule("x_proj:input=*10", c, "f")}, "f"), "not a positive, finite");
}

// The one overwrite rule on every flag that writes a result: an existing file is refused (one
// line naming the flag and --force) and keeps its bytes; --force replaces it.
TEST(Overwrite, EveryResultFlagRefusesAnExistingFile) {
  const std::string d = mqtest::temp_dir("overwrite");
  const std::string m = mqtest::repo("models/mamba-tiny");
  const std::string f = d + "/existing.json";
  const std::vector<std::string> commands = {
      "info " + m + " --json " + f,
      "logits " + m + " --prompt hi --json " + f,
      "bench " + m + " --prompt-len 8 --decode 2 --repeats 1 --no-bandwidth --json " + f,
      "eval " + m + " --tasks lambada_openai --limit 2 --no-log --json " + f,
      "eval " + m + " --tasks lambada_openai --limit 2 --no-log --output-path " + f,
      "compare --ref " + m + " --cand " + m + " --json " + f,
      "scales " + m + " --json " + f,
      "logs " + d + "/none.jsonl --json " + f,
      "verify-observer --json " + f,
      "quantize " + m + " -o " + d + "/q --save-activations " + f,
      "report --compare " + f + " -o " + f,
  };
  for (const auto& cmd : commands) {
    SCOPED_TRACE(cmd);
    mqtest::write_file(f, "keep me");
    const auto r = mqtest::run_cli(cmd);
    mqtest::expect_one_line_error(r, "already exists (add --force");
    EXPECT_EQ(mqtest::read_file(f), "keep me");
  }
  mqtest::write_file(f, "keep me");
  const auto r = mqtest::run_cli("info " + m + " --json " + f + " --force");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(mqtest::read_file(f), "keep me");
  // a results folder that is not empty, and a .jsonl taken for a results file
  fs::create_directories(d + "/results");
  mqtest::write_file(d + "/results/results.json", "keep me");
  mqtest::expect_one_line_error(
      mqtest::run_cli("eval " + m + " --tasks lambada_openai --limit 2 --no-log --output-path " + d + "/results"),
      "is not empty");
  EXPECT_EQ(mqtest::read_file(d + "/results/results.json"), "keep me");
  mqtest::write_file(d + "/experiments.jsonl", "{\"kind\": \"eval\"}\n");
  mqtest::expect_one_line_error(
      mqtest::run_cli("eval " + m + " --tasks lambada_openai --limit 2 --no-log --output-path " + d + "/experiments.jsonl --force"),
      "looks like an experiment log");
  EXPECT_EQ(mqtest::read_file(d + "/experiments.jsonl"), "{\"kind\": \"eval\"}\n");
}

namespace {
// The folder's files other than mambaq's bookkeeping (.mambaq*), name -> bytes.
std::map<std::string, std::string> folder_files(const std::string& dir) {
  std::map<std::string, std::string> f;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(".mambaq", 0) != 0) f[e.path().filename().string()] = mqtest::read_file(e.path().string());
  return f;
}
void copy_folder(const std::string& from, const std::string& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}
mqtest::CliResult run_killed(const std::string& args, int after_commits) {
  ::setenv("MAMBAQ_TEST_KILL_AFTER_COMMITS", std::to_string(after_commits).c_str(), 1);
  auto r = mqtest::run_cli(args);
  ::unsetenv("MAMBAQ_TEST_KILL_AFTER_COMMITS");
  return r;
}
const std::string& quantized_tiny() {  // made once: quamba1 W8A8 of the bundled mamba-tiny
  static const std::string q = [] {
    const std::string d = mqtest::temp_dir("folder_saves_src") + "/q";
    const auto r = mqtest::run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + d +
                                   " -q --no-log --calib-num 2 --calib-seqlen 32");
    EXPECT_EQ(r.code, 0) << r.err;
    return d;
  }();
  return q;
}
}  // namespace

// An in-place scale edit killed after each of its file writes (the journal, the patched weights,
// config.json, the journal's removal): the folder is byte-identical to before, or refused with one
// line naming --recover, after which it is byte-identical to before or holds the whole edit.
TEST(FolderSaves, AKilledInPlaceEditLeavesTheOldFolderOrOneThatRecovers) {
  const std::string src = quantized_tiny(), d = mqtest::temp_dir("folder_kill_edit"), f = d + "/q";
  const auto before = folder_files(src);
  const float old = Model::load(src)->quantized()->scales.find(0, "x_proj:input")->scale;
  const std::string edit = "scales set " + f + " --in-place --point x_proj:input --layers 0 --factor 2 --no-log";
  int killed = 0;
  for (int k = 1;; ++k) {
    SCOPED_TRACE("killed after commit " + std::to_string(k));
    copy_folder(src, f);
    const auto r = run_killed(edit, k);
    if (r.code == 0) break;  // k is past the edit's last write
    ASSERT_EQ(r.code, 99) << r.err;
    ++killed;
    const auto info = mqtest::run_cli("info " + f);
    if (info.code != 0) {
      mqtest::expect_one_line_error(info, "--recover");
      ASSERT_EQ(mqtest::run_cli("scales set " + f + " --recover").code, 0);
    }
    const auto after = Model::load(f);
    const float now = after->quantized()->scales.find(0, "x_proj:input")->scale;
    if (now == old) {
      EXPECT_EQ(folder_files(f), before);  // as if the edit never started
    } else {
      EXPECT_FLOAT_EQ(now, 2 * old);       // the whole edit, recorded once
      EXPECT_EQ(after->quantized()->meta.edits.size(), 1u);
    }
    EXPECT_FALSE(fs::exists(f + "/.mambaq-edit-pending.json"));
  }
  EXPECT_GE(killed, 4);  // the journal, the weights, config.json, the journal's removal
  mqtest::expect_one_line_error(mqtest::run_cli("scales set " + f + " --recover"), "no interrupted edit");
}

// scales set -o NEW killed after each of its file writes, into a new folder and over an earlier
// edit's copy (--force): the source is never touched; NEW is refused until the copy is whole (its
// config.json comes last: never a half copy that loads as the source), or it is the earlier copy
// byte for byte, or the whole new edit.
TEST(FolderSaves, AKilledCopyEditIsRefusedUntilWhole) {
  const std::string src = quantized_tiny(), d = mqtest::temp_dir("folder_kill_copy"), out = d + "/e";
  const auto src_files = folder_files(src);
  const float old = Model::load(src)->quantized()->scales.find(0, "x_proj:input")->scale;
  for (bool over : {false, true}) {
    SCOPED_TRACE(over ? "over an earlier copy" : "into a new folder");
    int killed = 0, refused = 0;
    for (int k = 1;; ++k) {
      SCOPED_TRACE("killed after commit " + std::to_string(k));
      fs::remove_all(out);
      std::map<std::string, std::string> earlier;
      if (over) {
        ASSERT_EQ(mqtest::run_cli("scales set " + src + " -o " + out + " --point x_proj:input --layers 0 --factor 3 --no-log").code, 0);
        earlier = folder_files(out);
      }
      const auto r = run_killed("scales set " + src + " -o " + out + " --point x_proj:input --layers 0 --factor 2 --no-log" +
                                    (over ? " --force" : ""), k);
      if (r.code == 0) break;
      ASSERT_EQ(r.code, 99) << r.err;
      ++killed;
      EXPECT_EQ(folder_files(src), src_files);
      const auto info = mqtest::run_cli("info " + out);
      if (info.code != 0) {
        mqtest::expect_one_line_error(info, out);
        ++refused;
        continue;
      }
      const auto m = Model::load(out);
      const float now = m->quantized()->scales.find(0, "x_proj:input")->scale;
      if (over && now == 3 * old) {
        EXPECT_EQ(folder_files(out), earlier);
      } else {
        EXPECT_FLOAT_EQ(now, 2 * old);  // killed after its last write: the whole edit, recorded once
        EXPECT_EQ(m->quantized()->meta.edits.size(), 1u);
      }
    }
    EXPECT_GE(killed, 3);   // tokenizer.json, the weights, their patch, config.json
    EXPECT_GE(refused, 2);  // between the weights and config.json
  }
}

// quantize --force over an existing folder, killed between its files: the folder is refused
// (config.json and the weights from different saves) until quantized again; never loaded mixed.
TEST(FolderSaves, AKilledSaveOverAFolderIsRefusedNotMixed) {
  const std::string src = quantized_tiny(), d = mqtest::temp_dir("folder_kill_save"), f = d + "/q";
  const std::string save = "quantize " + mqtest::model_dir("mamba-tiny") + " -o " + f +
                           " --force -q --no-log --calib-num 3 --calib-seqlen 32";
  int refused = 0;
  for (int k = 1;; ++k) {
    SCOPED_TRACE("killed after commit " + std::to_string(k));
    copy_folder(src, f);
    const auto r = run_killed(save, k);
    if (r.code == 0) break;
    ASSERT_EQ(r.code, 99) << r.err;
    const auto info = mqtest::run_cli("info " + f);
    if (info.code != 0) {
      mqtest::expect_one_line_error(info, "different saves");
      ++refused;
    } else if (read_json_file(f + "/config.json")["quantization"]["calibration"]["samples"] == 3) {
      EXPECT_FALSE(fs::exists(f + "/.mambaq-edit-pending.json"));  // the new save, whole (killed after its last file)
    } else {
      EXPECT_EQ(folder_files(f), folder_files(src));  // nothing of the new save is in place yet
    }
  }
  EXPECT_GE(refused, 1);  // the new weights beside the old config.json
  // and a hand-mixed folder (another save's config.json) names both files
  const std::string g = d + "/mixed";
  copy_folder(src, g);
  ASSERT_EQ(mqtest::run_cli(save).code, 0);
  fs::copy_file(f + "/config.json", g + "/config.json", fs::copy_options::overwrite_existing);
  const auto r = mqtest::run_cli("info " + g);
  mqtest::expect_one_line_error(r, "different saves");
  EXPECT_NE(r.err.find(g + "/config.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(g + "/model.safetensors"), std::string::npos) << r.err;
}

// Three editors of one folder at once: they take turns (the folder's lock), so every edit is
// applied once and recorded once: x2 x3 x5 = x30, in whatever order they ran.
TEST(FolderSaves, ConcurrentInPlaceEditsTakeTurns) {
  const std::string src = quantized_tiny(), d = mqtest::temp_dir("folder_concurrent"), f = d + "/q";
  copy_folder(src, f);
  const float old = Model::load(f)->quantized()->scales.find(0, "x_proj:input")->scale;
  std::string cmd;
  for (const char* x : {"2", "3", "5"})
    cmd += std::string(MAMBAQ_CLI) + " scales set " + f + " --in-place --point x_proj:input --layers 0 --factor " + x +
           " --no-log > " + d + "/out" + x + " 2>&1 & ";
  cmd += "wait";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  for (const char* x : {"2", "3", "5"}) EXPECT_NE(mqtest::read_file(d + "/out" + x).find("written to"), std::string::npos);
  const auto m = Model::load(f);
  EXPECT_NEAR(m->quantized()->scales.find(0, "x_proj:input")->scale, 30 * old, 30 * old * 1e-6);
  EXPECT_EQ(m->quantized()->meta.edits.size(), 3u);
}

// compare --save-dir reuses a saved run only for the same content: new weights of the same size
// under the same config.json (a scale patched in place, as the issue's example), or a saved array
// changed behind its manifest (a NaN planted), are recomputed and say why; a run folder that is a
// symbolic link is refused, not written through.
TEST(CompareCache, NewContentOrADamagedArrayIsRecomputed) {
  const std::string d = mqtest::temp_dir("compare_stale"), q = d + "/q", sd = d + "/sd";
  copy_folder(quantized_tiny(), q);
  const std::string cmd = "compare --ref " + mqtest::model_dir("mamba-tiny") + " --cand " + q +
                          " --cand-mode int8 --layers 0 --seqlen 32 --samples 1 -q --save-dir " + sd + " --force --json " + d + "/c.json";
  ASSERT_EQ(mqtest::run_cli(cmd).code, 0);
  auto r = mqtest::run_cli(cmd);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json_file(d + "/c.json");
  ASSERT_TRUE(j["runs"][0]["reused"].get<bool>());
  const std::string run = j["runs"][0]["saved"], cfg_before = mqtest::read_file(q + "/config.json");
  const double mse_before = j["runs"][0]["layers"][0]["mse"];
  // the same config.json, a weights file of the same size with other scales
  TensorStore s;
  load_safetensors(q + "/model.safetensors", s);
  patch_safetensors_f32(q + "/model.safetensors", {{"backbone.layers.0.mixer.conv1d.output_scale", {0.5f}}});
  ASSERT_EQ(mqtest::read_file(q + "/config.json"), cfg_before);
  r = mqtest::run_cli(cmd);
  ASSERT_EQ(r.code, 0) << r.err;
  j = read_json_file(d + "/c.json");
  EXPECT_FALSE(j["runs"][0]["reused"].get<bool>());
  EXPECT_NE(r.err.find("the model's files changed"), std::string::npos) << r.err;
  EXPECT_NE(j["runs"][0]["layers"][0]["mse"].get<double>(), mse_before);  // the new weights' statistics
  // a NaN planted in a saved array (same size): recomputed, naming the file
  const std::string arr = run + "/layer_0_block_out.npy";
  std::string bytes = mqtest::read_file(arr);
  const float nan = std::nanf("");
  std::memcpy(bytes.data() + bytes.size() - 4, &nan, 4);
  mqtest::write_file(arr, bytes);
  r = mqtest::run_cli(cmd);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(read_json_file(d + "/c.json")["runs"][0]["reused"].get<bool>());
  EXPECT_NE(r.err.find(arr + ": its content differs from the manifest"), std::string::npos) << r.err;
  EXPECT_TRUE(std::isfinite(read_json_file(d + "/c.json")["runs"][0]["layers"][0]["mse"].get<double>()));
  // a run folder that is a link to another folder: refused, the other folder untouched
  const std::string elsewhere = d + "/elsewhere";
  fs::rename(run, elsewhere);
  fs::create_directory_symlink(elsewhere, run);
  const auto files_before = folder_files(elsewhere);
  patch_safetensors_f32(q + "/model.safetensors", {{"backbone.layers.0.mixer.conv1d.output_scale", {0.25f}}});
  r = mqtest::run_cli(cmd);  // (after the reference's "reused" line)
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("error: --save-dir: " + run + " is a symbolic link"), std::string::npos) << r.err;
  EXPECT_EQ(folder_files(elsewhere), files_before);
}

// --fp-model (or the folder's source_model) is checked against the quantized model before any
// transform of its weights: another architecture (once a SIGSEGV in the Quamba2 basis change), a
// quantized folder, or other dimensions are one line naming what differs.
TEST(CrossChecks, FpModelOfAnotherArchitectureOrAQuantizedOneIsRefused) {
  const std::string d = mqtest::temp_dir("fp_model_check"), q2 = d + "/q2";
  ASSERT_EQ(mqtest::run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + q2 +
                            " -q --no-log --recipe quamba2 --preset w8a8 --calib-num 2 --calib-seqlen 32").code, 0);
  const std::string ev = "eval " + q2 + " --mode fake --fp-ops linear --tasks ppl:" + mqtest::repo("data/corpus/heldout.txt") +
                         " --limit 1 --fp-model ";
  mqtest::expect_one_line_error(mqtest::run_cli(ev + mqtest::model_dir("mamba-tiny")), "architecture mamba vs mamba2");
  mqtest::expect_one_line_error(mqtest::run_cli(ev + quantized_tiny()), "is a quantized model");
  // same architecture, other dimensions: a synthetic Mamba2 of another width
  ModelConfig c = load_config(mqtest::model_dir("mamba2-tiny-hf"));
  ModelConfig w = c;
  w.d_model = c.d_model / 2, w.d_inner = c.d_inner / 2, w.nheads = c.nheads / 2;
  EXPECT_EQ(config_difference(c, w), fmt::format("d_model {} vs {}", c.d_model, w.d_model));
  EXPECT_EQ(config_difference(c, c), "");
  EXPECT_EQ(mqtest::run_cli(ev + mqtest::model_dir("mamba2-tiny-hf")).code, 0);  // its own FP model
}

// Lax parsing and silent no-ops (issue 21, class 10): each refused with one line naming it.
TEST(StrictParsing, TaskKeysFiltersLayerListsGroupedAlphasAndLogFiles) {
  const std::string d = mqtest::temp_dir("strict_parsing"), m = mqtest::model_dir("mamba-tiny");
  mqtest::write_file(d + "/a.txt", "one two three four five six seven eight nine ten\n");
  fs::create_directories(d + "/b");
  mqtest::write_file(d + "/b/a.txt", "ten nine eight seven six five four three two one\n");
  // two tasks reporting under one key: one result would replace the other
  const std::string ev = "eval " + m + " --no-log -q --limit 1 --tasks ";
  mqtest::expect_one_line_error(mqtest::run_cli(ev + "ppl:" + d + "/a.txt,ppl:" + d + "/b/a.txt"),
                                "both report as 'a' (one result would replace the other)");
  mqtest::expect_one_line_error(mqtest::run_cli(ev + "lambada_openai,lambada_openai"), "'lambada_openai' is given twice");
  EXPECT_EQ(task_key("ppl:x/heldout.txt"), "heldout");
  EXPECT_EQ(task_key("lambada_openai"), "lambada_openai");
  EXPECT_ERROR(check_task_keys({"lastword:p/q.jsonl", "ppl:r/q.txt"}), "both report as 'q'");
  check_task_keys({"ppl:a.txt", "lastword:b.jsonl", "lambada_openai"});
  // logs --filter: numbers and dates strictly, before anything is read
  const std::string log = d + "/log.jsonl";
  mqtest::write_file(log, R"({"kind":"eval","timestamp":"2026-11-30T10:00:00","model":"m","flags":{"percentile_alpha":0.9995}})"
                          "\n");
  for (const auto& [f, msg] : std::vector<std::pair<std::string, std::string>>{{"alpha=nan", "alpha must be a number in (0, 1]"},
                                                                              {"alpha=abc", "alpha must be a number"},
                                                                              {"alpha=1.5", "(0, 1]"},
                                                                              {"alpha=", "no value after '='"},
                                                                              {"bits=8", "W8A8"},
                                                                              {"since=yesterday", "ISO date"},
                                                                              {"until=2026-13", "ISO date"},
                                                                              {"since=2026-11-30T25", "ISO date"}})
    mqtest::expect_one_line_error(mqtest::run_cli("logs " + log + " --filter " + f), msg);
  auto r = mqtest::run_cli("logs " + log + " --records --filter alpha=0.9995 --filter since=2026-11 --filter until=2026-11-30");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2026-11-30T10:00:00"), std::string::npos) << r.out;
  r = mqtest::run_cli("logs " + log + " --records --filter since=2026-12-01");
  EXPECT_EQ(r.out.find("2026-11-30T10:00:00"), std::string::npos) << r.out;
  // --json -: stdout is the JSON alone (the table goes to stderr)
  r = mqtest::run_cli("logs " + log + " --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 1u) << r.out;
  // layer lists: decimal digits, ranges, head; nothing after '@' is not "every layer"
  const ModelConfig c = load_config(m);
  for (const std::string bad : {"x_proj:input@=*2", "x_proj:input@0x1=*2", "x_proj:input@1e0=*2", "x_proj:input@+1=*2",
                                "x_proj:input@1,,2=*2", "x_proj:input@ 1=*2"}) {
    SCOPED_TRACE(bad);
    EXPECT_ERROR(parse_scale_rule(bad, c, "--scale-override"), "layer");
  }
  EXPECT_ERROR(parse_scale_rule("x_proj:input@=*2", c, "--scale-override"), "no layers after '@'");
  EXPECT_EQ(parse_scale_rule("x_proj:input@0,2-3=*2", c, "--scale-override").layers, (std::vector<int>{0, 2, 3}));
  // an alpha on a point Quamba2's head groups calibrate by their max: honoured block by block
  const std::string q = "quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -q --no-log --recipe quamba2 --preset w8a8 "
                        "--calib-num 2 --calib-seqlen 32 --group-heads -o ";
  ASSERT_EQ(mqtest::run_cli(q + d + "/q0").code, 0);
  r = mqtest::run_cli(q + d + "/q1 --scale-override 'x_conv_out@0:alpha=0.5'");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto grouped = [](const std::string& dir, int layer) {
    const auto model = Model::load(dir);
    for (const auto& p : model->quantized()->scales.points)
      if (p.layer == layer && p.point == "x_conv_out") return p.values;
    return std::vector<float>{};
  };
  const auto a0 = grouped(d + "/q0", 0), b0 = grouped(d + "/q1", 0);
  ASSERT_FALSE(a0.empty());
  ASSERT_EQ(a0.size(), b0.size());
  for (size_t i = 0; i < a0.size(); ++i) EXPECT_LT(b0[i], a0[i]) << "block " << i << ": alpha 0.5 clips below the max";
  EXPECT_EQ(grouped(d + "/q0", 1), grouped(d + "/q1", 1));  // the other layers' scales are their own
  // the experiment log: a FIFO would block the append after the work; a link would be written through
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0644), 0);
  mqtest::expect_one_line_error(mqtest::run_cli("eval " + m + " -q --limit 1 --tasks ppl:" + d + "/a.txt --log " + d + "/fifo"),
                                "is not a regular file (a FIFO)");
  mqtest::write_file(d + "/real.jsonl", "");
  fs::create_symlink(d + "/real.jsonl", d + "/link.jsonl");
  mqtest::expect_one_line_error(
      mqtest::run_cli("eval " + m + " -q --limit 1 --tasks ppl:" + d + "/a.txt --log " + d + "/link.jsonl"), "is a link");
  EXPECT_EQ(mqtest::read_file(d + "/real.jsonl"), "");
}

// A quantization section that contradicts its tensors (issue 21, class 7): refused at load,
// naming the field and the tensor. One Quamba2 W4A8 folder (heads grouped, embedding and head
// quantized), its config.json edited a field at a time; the head order by its tensor.
TEST(CrossChecks, QuantizationSectionAgainstTheTensors) {
  const std::string d = mqtest::temp_dir("qsection"), q = d + "/q";
  const auto r = mqtest::run_cli("quantize " + mqtest::model_dir("mamba2-tiny-hf") + " -o " + q +
                                 " -q --no-log --recipe quamba2 --preset w4a8 --group-heads --quantize-embedding "
                                 "--quantize-lm-head --calib-num 2 --calib-seqlen 32");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json cfg = read_json_file(q + "/config.json");
  const int L = cfg.contains("n_layer") ? cfg["n_layer"].get<int>() : cfg["num_hidden_layers"].get<int>();
  (void)Model::load(q);  // as saved: consistent
  const auto edited = [&](const std::function<void(nlohmann::json&)>& f) {
    const std::string e = d + "/e";
    fs::remove_all(e);
    fs::create_directories(e);
    fs::copy_file(q + "/model.safetensors", e + "/model.safetensors");
    nlohmann::json c = cfg;
    f(c["quantization"]);
    mqtest::write_file(e + "/config.json", c.dump(1));
    return e;
  };
  std::vector<std::string> lp(size_t(L), "W4A8");
  lp[0] = "FP16";  // the label that used to skip the rotation fused into layer 0's 4-bit weights
  EXPECT_ERROR(Model::load(edited([&](nlohmann::json& s) { s["layer_precision"] = lp; })), "layer 0 FP16",
               "backbone.layers.0.mixer.in_proj.weight", "packed 4-bit");
  lp[0] = "W8A8";
  EXPECT_ERROR(Model::load(edited([&](nlohmann::json& s) { s["layer_precision"] = lp; })), "layer 0 W8A8",
               "packed 4-bit");
  EXPECT_ERROR(Model::load(edited([&](nlohmann::json& s) { s["layer_precision"] = nlohmann::json::array({"W4A8"}); })),
               "layer_precision lists 1 layers");
  EXPECT_ERROR(Model::load(edited([&](nlohmann::json& s) { s["quantize_lm_head"] = false; })), "quantize_lm_head is false",
               "LM head");
  EXPECT_ERROR(Model::load(edited([&](nlohmann::json& s) { s["quantize_embedding"] = false; })),
               "quantize_embedding is false", "embedding");
  EXPECT_ERROR(Model::load(edited([&](nlohmann::json& s) { s["w_bits"] = 8; })), "W8A8", "w_bits", "packed 4-bit");
  // the head order of layer 1 no longer matches its channel order: two heads swapped
  TensorStore st = load_checkpoint(q);
  const std::string hn = "backbone.layers.1.mixer.conv1d.x_head_order";
  RawTensor& h = st.tensors.at(hn);
  auto v = std::make_shared<std::vector<int32_t>>(reinterpret_cast<const int32_t*>(h.data),
                                                  reinterpret_cast<const int32_t*>(h.data) + h.shape[0]);
  ASSERT_GE(v->size(), 2u);
  std::swap((*v)[0], (*v)[1]);
  h.data = reinterpret_cast<const uint8_t*>(v->data());
  h.owner = v;
  EXPECT_ERROR(Model::from_store(load_config(q), st), "x_channel_order", "x_head_order", "disagree");
}

// An experiment log whose last record was cut short (a writer killed mid-line): the next record
// starts on a line of its own, so only the cut one is lost, and it is reported as skipped.
TEST(ExperimentLog, ARecordCutShortCostsOnlyItself) {
  const std::string log = mqtest::temp_dir("log_cut") + "/experiments.jsonl";
  append_log(log, {{"kind", "quantize"}, {"n", 1}});
  {
    std::ofstream out(log, std::ios::app);
    out << R"({"kind": "eval", "n": 2, "resu)";  // no newline
  }
  append_log(log, {{"kind", "eval"}, {"n", 3}});
  std::vector<std::string> skipped;
  const auto recs = read_log(log, &skipped);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["n"], 1);
  EXPECT_EQ(recs[1]["n"], 3);
  EXPECT_EQ(skipped.size(), 1u);
}

// eval's result files (--json, --output-path's results.json, --log-samples' files) replaced with
// --force, the run killed after each file it writes: every file is the old one byte for byte or
// the new one whole (JSON that parses, the new run's limit; samples: every line a record).
TEST(ResultFiles, AKilledEvalLeavesEachFileOldOrNewWhole) {
  const std::string d = mqtest::temp_dir("result_kill"), dir = d + "/out", json = d + "/r.json";
  const std::string base = "eval " + mqtest::model_dir("mamba-tiny") +
                           " --tasks lambada_openai,ppl:corpus/heldout.txt --ppl-seqlen 64 -q --no-log --log-samples"
                           " --json " + json + " --output-path " + dir;
  ASSERT_EQ(mqtest::run_cli(base + " --limit 3").code, 0);
  std::map<std::string, std::string> old = folder_files(dir);
  old["r.json"] = mqtest::read_file(json);
  const auto files_now = [&] {
    auto f = folder_files(dir);
    f["r.json"] = mqtest::read_file(json);
    return f;
  };
  int killed = 0;
  for (int k = 1;; ++k) {
    SCOPED_TRACE("killed after commit " + std::to_string(k));
    const auto r = run_killed(base + " --limit 4 --force", k);
    for (const auto& [name, bytes] : files_now()) {
      SCOPED_TRACE(name);
      if (old.count(name) && old.at(name) == bytes) continue;
      if (name.ends_with(".jsonl")) {
        std::istringstream in(bytes);
        int lines = 0;
        for (std::string line; std::getline(in, line); ++lines) EXPECT_TRUE(nlohmann::json::accept(line)) << line;
        if (name == "samples_lambada_openai.jsonl") {
          EXPECT_EQ(lines, 4);
        }
      } else {
        nlohmann::json j;
        ASSERT_NO_THROW(j = nlohmann::json::parse(bytes));
        EXPECT_EQ(j["config"]["limit"], 4);
      }
    }
    if (r.code == 0) break;
    ASSERT_EQ(r.code, 99) << r.err;
    ++killed;
    // back to the old files for the next kill point
    for (const auto& [name, bytes] : old) mqtest::write_file(name == "r.json" ? json : dir + "/" + name, bytes);
  }
  EXPECT_GE(killed, 3);  // results.json, a samples file, r.json
  EXPECT_EQ(temporaries_in(dir), 0u);
}
