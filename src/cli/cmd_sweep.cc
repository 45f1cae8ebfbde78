// mambaq sweep SPEC: a matrix of quantize + eval runs, each logged, resumable.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>

#include "analysis/explog.h"
#include "analysis/sweep.h"
#include "cli/common.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"

namespace mambaq::cli {

namespace fs = std::filesystem;

namespace {
// Runs this binary with `args` (no shell), output passed through; returns the exit code.
int run_self(const std::vector<std::string>& args) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(self.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  const pid_t pid = fork();
  if (pid < 0) fail("sweep: fork failed");
  if (pid == 0) {
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

Runner register_sweep(CLI::App& app) {
  struct Opts {
    std::string spec, log, out_dir;
    int limit = -1;
    bool yes = false, dry = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("sweep", "Run a matrix of quantize + eval experiments from a TOML/JSON spec");
  sub->add_option("SPEC", o->spec, "Sweep spec (.toml or .json)")->required();
  sub->add_option("--limit", o->limit, "Limit every eval to N documents/windows (overrides the spec)")
      ->check(at_least(1));
  sub->add_option("--log", o->log, "Experiment log (overrides the spec's)");
  sub->add_option("--out-dir", o->out_dir, "Folder of the quantized models (overrides the spec's)");
  sub->add_flag("-y,--yes", o->yes, "Do not ask for confirmation");
  sub->add_flag("--dry-run", o->dry, "Print the plan and stop");
  add_common(sub, o->c);
  return [o] {
    apply_common(o->c);
    SweepSpec s = load_sweep(o->spec);
    if (o->limit >= 0) set_sweep_limit(s, o->limit);
    if (!o->log.empty()) s.log = o->log;
    if (!o->out_dir.empty()) s.out_dir = o->out_dir;
    // the log's folder is the sweep's own (the spec names it, e.g. sweeps/): created when it runs
    const fs::path log_dir = fs::path(s.log).parent_path();
    if (!log_dir.empty() && !fs::is_directory(log_dir)) check_output_dir(log_dir.string(), "--log");
    else check_output_file(s.log, "--log");
    check_output_dir(s.out_dir, "--out-dir");
    // cells already done: an eval record of this sweep cell in the log
    std::map<std::string, nlohmann::json> done = sweep_done(s.log);
    // plan
    fmt::print("sweep '{}' ({}): {} cells, tasks {}{}, log {}, models in {}/\n", s.name, s.source, s.cells.size(),
               fmt::join(s.tasks, ","), s.limit > 0 ? fmt::format(" (limit {})", s.limit) : "", s.log, s.out_dir);
    fmt::print("{:>3}  {:<12}  {:<28}", "#", "cell", "model");
    for (const auto& k : s.varying)
      if (k != "model") fmt::print("  {:<18}", k);
    fmt::print("  status\n");
    // throughput probe: one 512-token forward per distinct model
    std::map<std::string, double> tps;
    std::vector<std::string> missing;
    double est = 0;
    for (size_t i = 0; i < s.cells.size(); ++i) {
      const auto& c = s.cells[i];
      const bool absent = !fs::exists(c.model);
      if (absent && std::find(missing.begin(), missing.end(), c.model) == missing.end()) missing.push_back(c.model);
      if (!done.count(c.id) && !absent) {
        if (!tps.count(c.model)) {
          auto m = Model::load(c.model);
          std::vector<int32_t> toks(512, 100);
          Session S(*m);
          const int lens[1] = {512};
          const auto t0 = std::chrono::steady_clock::now();
          S.forward(toks, lens, nullptr, nullptr);
          tps[c.model] = 512 / std::max(1e-3, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        est += sweep_cell_tokens(c, s, o->c.data_dir) / tps[c.model] * 1.5 + 2;  // + LM head, loading
      }
      fmt::print("{:>3}  {:<12}  {:<28}", i, c.id, c.model);
      for (const auto& k : s.varying)
        if (k != "model") fmt::print("  {:<18}", sweep_cell_value(c, k));
      fmt::print("  {}\n", done.count(c.id) ? "done (skipped)" : absent ? "model not found" : "to run");
    }
    const size_t todo = s.cells.size() - std::min(s.cells.size(), done.size());
    fmt::print("{} cells to run, estimated {:.0f} min\n", todo, est / 60);
    if (o->dry) return 0;
    if (!missing.empty())
      fail("sweep: model folder(s) not found: {} (edit the spec's [matrix] model list)", fmt::join(missing, ", "));
    if (todo > 0 && !o->yes) {
      if (!isatty(STDIN_FILENO)) fail("sweep: confirmation needed and stdin is not a terminal: add --yes");
      fmt::print("run them? [y/N] ");
      std::cout.flush();
      std::string ans;
      std::getline(std::cin, ans);
      if (ans != "y" && ans != "Y" && ans != "yes") {
        fmt::print("nothing run\n");
        return 0;
      }
    }
    fs::create_directories(s.out_dir);
    if (!log_dir.empty()) fs::create_directories(log_dir);
    Progress bar("sweep", int64_t(s.cells.size()), true);
    bar.add(int64_t(s.cells.size() - todo));
    for (const auto& c : s.cells) {
      if (done.count(c.id)) continue;
      const SweepCommands cmd = sweep_cell_commands(c, s, o->c.threads, o->c.data_dir);
      if (int rc = run_self(cmd.quantize)) fail("sweep: cell {} ({}): quantize failed (exit {})", c.id, c.model, rc);
      if (int rc = run_self(cmd.eval)) fail("sweep: cell {} ({}): eval failed (exit {})", c.id, c.model, rc);
      bar.add(1);
    }
    bar.finish();
    // final table from the log; each cell's difference to its model's first cell, with its standard error
    done = sweep_done(s.log);
    const std::vector<std::string> cols = sweep_result_columns(s, done);
    fmt::print("\n{:<12}  {:<24}", "cell", "model");
    for (const auto& k : s.varying)
      if (k != "model") fmt::print("  {:<18}", k);
    for (const auto& c : cols) fmt::print("  {:>34}", c);
    fmt::print("\n");
    std::map<std::string, const nlohmann::json*> base;  // each model's first cell
    for (const auto& c : s.cells) base.emplace(c.model, &done.at(c.id));
    for (const auto& c : s.cells) {
      const auto& r = done.at(c.id);
      fmt::print("{:<12}  {:<24}", c.id, fs::path(c.model).filename().string());
      for (const auto& k : s.varying)
        if (k != "model") fmt::print("  {:<18}", sweep_cell_value(c, k));
      for (const auto& col : cols) fmt::print("  {:>34}", sweep_result_text(r, col, base.at(c.model)));
      fmt::print("\n");
    }
    return 0;
  };
}

}  // namespace mambaq::cli
