// Evaluation tasks with the lm-evaluation-harness protocols (see docs/eval.md).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mambaq/progress.h"
#include "mambaq/session.h"
#include "mambaq/tokenizer.h"

namespace mambaq {

struct EvalOptions {
  std::string data_dir;      // laid out like ../shared/data
  int ppl_seqlen = 1024;     // window length of perplexity tasks
  int limit = 0;             // first N documents / windows (0 = all)
  int batch_tokens = 8192;   // tokens packed into one forward pass
  int max_length = 2048;     // lm-eval's max_length: a request reads its last max_length tokens
  bool shared_prefix = true; // read a document's common prefix once, continue each choice from its state
  bool log_samples = false;  // keep per-document records (TaskResult::samples)
  int bootstrap_iters = 100000;  // lm-eval's bootstrap of perplexity's standard error (0: none)
  bool progress = true;      // progress bar on stderr
  Tap* tap = nullptr;        // forward-pass hook (e.g. fake quantization of activations)
};

// One lm-eval metric of a task: "acc", "acc_norm", "perplexity", "word_perplexity", ...
struct Metric {
  std::string name;
  double value = 0;
  double stderr_ = -1;  // < 0: none (lm-eval writes "N/A")
};

struct TaskResult {
  std::string key;       // "lambada_openai", "arc_easy", "wikitext2", or the file's stem
  std::string kind;      // "lastword", "ppl", "multiple_choice", "rolling"
  nlohmann::json json;   // mambaq's own fields (docs/eval.md): acc, ppl, acc_norm, n, ..., *_stderr
  std::vector<Metric> metrics;  // in lm-eval's names, for the lm-eval-shaped results
  std::vector<std::pair<int, double>> per_doc;  // lastword: (greedy correct, log-likelihood);
                                                // multiple choice: (acc choice, acc_norm choice)
  nlohmann::json samples = nlohmann::json::array();  // opt.log_samples: lm-eval-like per-document records
  nlohmann::json config;  // the task's settings as lm-eval's `configs` entry
  int version = 1;        // lm-eval's task version
  int64_t n_original = 0, n_effective = 0;  // documents in the data, documents scored (--limit)
  double seconds = 0;
};

// Task names: lambada_openai, arc_easy, arc_challenge, piqa, winogrande, hellaswag, wikitext
// (lm-eval's rolling document perplexity), wikitext2 (fixed windows, the Quamba/GPTQ protocol),
// lastword:FILE.jsonl, ppl:FILE.txt. A relative FILE is looked up in the current folder, then in
// data_dir.
TaskResult run_task(Session& model, const Tokenizer& tok, const std::string& task, const EvalOptions& opt);
std::vector<std::string> known_tasks();
// The key a task's results are reported under (its name; a file task's file stem).
std::string task_key(const std::string& task);
// Fails (naming both tasks) when two tasks would report under one key: one result would replace
// the other in the JSON and the samples files.
void check_task_keys(const std::vector<std::string>& tasks);

// ---- Lower-level protocols, usable on in-memory data ----

// One log-likelihood request as lm-eval's _encode_pair makes it: trailing white space of the
// context moves to the front of the continuation; continuation = tok(context + continuation)
// minus the first len(tok(context)) tokens; an empty context becomes <|endoftext|>.
struct Request {
  std::vector<int32_t> context, continuation;
};
Request encode_pair(const Tokenizer& tok, std::string context, std::string continuation);
using LastwordDoc = Request;
Request lastword_split(const Tokenizer& tok, const std::string& text);  // lambada's split, then encode_pair

struct RequestScore {
  double ll = 0;        // sum of the continuation tokens' log-softmax
  bool greedy = false;  // every continuation token is the argmax
};
// Scores documents of requests. A document's requests share their longest common token prefix
// (at most the shortest context): with opt.shared_prefix it is read once and every request
// continues from its state (exact float states, so the numbers are those of scoring each request
// from scratch); without, each request is read from scratch. A request longer than
// opt.max_length + 1 tokens reads its last max_length + 1 tokens minus one, as lm-eval.
std::vector<std::vector<RequestScore>> score_requests(Session& m, const std::vector<std::vector<Request>>& docs,
                                                      const EvalOptions& opt, Progress* bar = nullptr,
                                                      int64_t* tokens_read = nullptr);

// A multiple-choice document as lm-eval builds it: request i = (contexts[i], continuations[i]);
// choice_chars[i] = Python len() of choice i (acc_norm's divisor; 0 when the task has no acc_norm).
struct McDoc {
  std::vector<std::string> contexts, continuations;
  std::vector<int> choice_chars;
  int gold = 0;
  nlohmann::json doc;  // the source document (for --log-samples)
};
// arc_easy, arc_challenge, piqa, winogrande, hellaswag from data_dir (error names the file and line).
std::vector<McDoc> load_mc_task(const std::string& task, const std::string& data_dir);
// lm-eval's hellaswag preprocessing: strip, " [title]" -> ". ", drop [..], "  " -> " ".
std::string hellaswag_preprocess(const std::string& text);
// Python's str.capitalize() for ASCII letters (first upper, the rest lower; other bytes kept).
std::string py_capitalize(const std::string& s);
// Python len() of UTF-8 text: code points.
int utf8_chars(const std::string& s);
// wikitext_document_level's pages of a wikitext-2 raw file: each from a level-1 heading line
// " = Title = " to the next (docs/eval.md says why this reading).
std::vector<std::string> wikitext_pages(const std::string& text);
// lm-eval's wikitext_detokenizer.
std::string wikitext_detokenize(const std::string& page);

// lm-eval's standard error of a mean: sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n).
double mean_stderr(const std::vector<double>& x);
// lm-eval's bootstrap standard error of perplexity = exp(-mean(ll)) (bootstrap_stderr: `iters`
// resamples in chunks of 1000, chunk i drawn by Python's random.Random(i).choices).
double perplexity_bootstrap_stderr(const std::vector<double>& ll, int iters = 100000);

// Results in lm-evaluation-harness 0.4's shape (docs/eval.md): results, versions, n-shot,
// n-samples, configs, higher_is_better, group_subtasks, config, date; mambaq's own fields under
// "mambaq". `model_args` describes the model (path, mode, quantization).
struct LmEvalRun {
  std::string model_path, model_args, device = "cpu";
  int batch_tokens = 0, limit = 0, bootstrap_iters = 100000;
  nlohmann::json extra;  // merged into "mambaq"
};
nlohmann::json lm_eval_results(const std::vector<TaskResult>& tasks, const LmEvalRun& run);

// Default data folder: $MAMBAQ_DATA, else <repo>/data.
std::string default_data_dir();


}  // namespace mambaq
