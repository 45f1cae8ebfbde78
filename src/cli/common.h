// Shared CLI plumbing: each command registers a subcommand and a run function.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "mambaq/model.h"
#include "mambaq/tokenizer.h"

namespace mambaq::cli {

struct Common {
  int threads = 0;
  std::string data_dir;
};

using Runner = std::function<int()>;

// Adds --threads and --data-dir to a subcommand.
void add_common(CLI::App* sub, Common& c);
// Applies --threads; resolves the data folder.
void apply_common(Common& c);
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const Common& c);
// Writes JSON to FILE ("-" = stdout); errors name the file.
void write_json(const std::string& file, const nlohmann::json& j);
double peak_rss_mib();

Runner register_info(CLI::App& app);
Runner register_logits(CLI::App& app);
Runner register_generate(CLI::App& app);
Runner register_eval(CLI::App& app);
Runner register_bench(CLI::App& app);

}  // namespace mambaq::cli
