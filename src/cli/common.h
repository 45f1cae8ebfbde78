// Shared CLI plumbing: each command registers a subcommand and a run function.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "io/mmap_file.h"
#include "mambaq/session.h"
#include "mambaq/tokenizer.h"

namespace mambaq::cli {

struct Common {
  int threads = 0;
  std::string data_dir;
  std::string backend;  // --backend (commands that run a model)
  std::string dtype;    // --dtype (eval, logits, generate, bench): empty = fp32
};

using Runner = std::function<int()>;

// Numeric flag checks whose messages read as a person would write the range ("must be at least
// 1"), not as CLI11's (which prints the numeric limits of the type).
CLI::Validator at_least(double lo);
CLI::Validator between(double lo, double hi);
// Levenshtein distance ('_' and '-' equal): for "did you mean".
size_t edit_distance(const std::string& a, const std::string& b);
// The closest of `candidates` to `word`, or "" when none is close.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

// Adds --threads and --data-dir to a subcommand.
void add_common(CLI::App* sub, Common& c);
// Applies --threads; resolves the data folder.
void apply_common(Common& c);
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const Common& c);
// Writes JSON to FILE ("-" = stdout); errors name the file.
void write_json(const std::string& file, const nlohmann::json& j);
double peak_rss_mib();
// --mode fp32|fake|int8 (default: int8 for a quantized model, fp32 otherwise)
void add_mode(CLI::App* sub, std::string& mode);
// --backend NAME (default: $MAMBAQ_BACKEND, else cpu), on every command that runs a model.
void add_backend(CLI::App* sub, Common& c);
// Adds --force (replace existing result files: io/mmap_file.h check_new_output_file) to a subcommand.
std::shared_ptr<bool> add_force(CLI::App* sub);
// --synthetic NAME: random weights of a published model's shape; `why` + the known names as help.
void add_synthetic(CLI::App* sub, std::string& name, const std::string& why);
// Adds --dtype (the float weights' type on the backend) to a subcommand.
void add_dtype(CLI::App* sub, Common& c);
// --dtype as a type (F32 when not given); an unknown name fails naming the flag.
DType dtype_flag(const Common& c);
// A session of `m` in --mode (empty: the model's default) on --backend.
Session make_session(const Model& m, const std::string& mode, const Common& c);
// --log-extra: a JSON object (empty string: {}); errors name the flag.
nlohmann::json parse_log_extra(const std::string& s);
// Runs this binary with `args` (no shell): stdout and stderr captured into *out / *err when `out`
// is given, else passed through. SIGINT and SIGQUIT are ignored here while the child runs (as
// system() does), so a Ctrl-C stops the child and the caller says what it interrupted. Returns
// the exit code, or 128 + the signal that ended the child.
int run_self(const std::vector<std::string>& args, std::string* out = nullptr, std::string* err = nullptr);

Runner register_info(CLI::App& app);
Runner register_logits(CLI::App& app);
Runner register_generate(CLI::App& app);
Runner register_eval(CLI::App& app);
Runner register_bench(CLI::App& app);
Runner register_quantize(CLI::App& app);
Runner register_logs(CLI::App& app);
Runner register_verify_observer(CLI::App& app);
Runner register_scales(CLI::App& app);
Runner register_compare(CLI::App& app);
Runner register_sweep(CLI::App& app);
Runner register_report(CLI::App& app);
Runner register_run(CLI::App& app);

}  // namespace mambaq::cli
