// Evaluation tasks with the lm-evaluation-harness protocols (see docs/eval.md).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mambaq/model.h"
#include "mambaq/tokenizer.h"

namespace mambaq {

struct EvalOptions {
  std::string data_dir;      // laid out like ../shared/data
  int ppl_seqlen = 1024;     // window length of perplexity tasks
  int limit = 0;             // first N documents / windows (0 = all)
  int batch_tokens = 8192;   // tokens packed into one forward pass
  bool progress = true;      // progress bar on stderr
  Tap* tap = nullptr;        // forward-pass hook (e.g. fake quantization of activations)
};

struct TaskResult {
  std::string key;       // "lambada_openai", "wikitext2", or the file's stem
  std::string kind;      // "lastword" or "ppl"
  nlohmann::json json;   // lastword: acc, correct, n, ppl; ppl: ppl, tokens, scored, seqlen
  std::vector<std::pair<int, double>> per_doc;  // lastword: (greedy correct, log-likelihood)
  double seconds = 0;
};

// Task names: lambada_openai, wikitext2, lastword:FILE.jsonl, ppl:FILE.txt. A relative FILE is
// looked up in the current folder, then in data_dir.
TaskResult run_task(const Model& model, const Tokenizer& tok, const std::string& task, const EvalOptions& opt);

// Lower-level protocols, usable on in-memory data.
struct LastwordDoc {
  std::vector<int32_t> context, continuation;
};
LastwordDoc lastword_split(const Tokenizer& tok, const std::string& text);  // lm-eval's context/continuation split

// Default data folder: $MAMBAQ_DATA, else <repo>/data.
std::string default_data_dir();

// A progress bar on stderr: redrawn in place on a terminal, a few plain lines otherwise.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  ~Progress();
  void add(int64_t n);
  void finish();

 private:
  std::string label_;
  int64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  double start_, last_ = 0;
  int last_decile_ = -1;
  void draw(bool final);
};

}  // namespace mambaq
