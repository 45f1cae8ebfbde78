// mambaq sweep SPEC: a matrix of quantize + eval runs, each logged, resumable.
#include <fmt/format.h>
#include <signal.h>
#include <poll.h>
#include <sys/wait.h>
#include <cerrno>
#include <csignal>
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
#include "mambaq/model.h"
#include "mambaq/session.h"

namespace mambaq::cli {

namespace fs = std::filesystem;

namespace {
// Set by a SIGINT that arrives between two child runs (while a child runs, run_self ignores it
// and the child ends): the cell loop then stops at the same message.
volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

// Forward tokens/s of a model: one warm-up forward, then a timed one.
double forward_rate(const Model& m, int tokens) {
  Session S(m);
  std::vector<int32_t> toks(size_t(tokens), 100);
  const int warm[1] = {16}, lens[1] = {tokens};
  S.forward(std::span(toks).first(16), warm, nullptr, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  S.forward(toks, lens, nullptr, nullptr);
  return tokens / std::max(1e-4, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}
std::string minutes(double s) {
  return s < 90 ? fmt::format("{:.0f} s", s) : s < 7200 ? fmt::format("{:.0f} min", s / 60) : fmt::format("{:.1f} h", s / 3600);
}

}  // namespace

// Runs this binary with `args` (no shell). With `out`, its stdout and stderr are captured (*out,
// *err), else passed through. While the child runs this process ignores SIGINT and SIGQUIT (as
// system() does): a Ctrl-C stops the child, and the sweep then says which cell it interrupted.
// Returns the exit code, or 128 + the signal that ended the child.
int run_self(const std::vector<std::string>& args, std::string* out, std::string* err) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(self.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  int po[2] = {-1, -1}, pe[2] = {-1, -1};
  if (out && (pipe(po) != 0 || pipe(pe) != 0)) fail("sweep: pipe failed");
  struct sigaction ign {}, old_int {}, old_quit {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGINT, &ign, &old_int);
  sigaction(SIGQUIT, &ign, &old_quit);
  const pid_t pid = fork();
  if (pid < 0) fail("sweep: fork failed");
  if (pid == 0) {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGQUIT, &old_quit, nullptr);
    if (out) {
      dup2(po[1], STDOUT_FILENO);
      dup2(pe[1], STDERR_FILENO);
      for (int f : {po[0], po[1], pe[0], pe[1]}) close(f);
    }
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  if (out) {  // both pipes drained together, so neither fills while the other is read
    close(po[1]);
    close(pe[1]);
    pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    std::string* dst[2] = {out, err};
    std::string sink;
    int open_fds = 2;
    char buf[4096];
    while (open_fds > 0) {
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const ssize_t n = read(fds[i].fd, buf, sizeof buf);
        if (n > 0) {
          (dst[i] ? dst[i] : &sink)->append(buf, size_t(n));
        } else if (n == 0 || errno != EINTR) {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_fds;
        }
      }
    }
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGQUIT, &old_quit, nullptr);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Runner register_sweep(CLI::App& app) {
  struct Opts {
    std::string spec, log, out_dir;
    int limit = -1;
    bool yes = false, dry = false, skip_dups = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("sweep", "Run a matrix of quantize + eval experiments from a TOML/JSON spec");
  sub->add_option("SPEC", o->spec, "Sweep spec (.toml or .json; keys: docs/analysis.md)")->required();
  sub->add_option("--limit", o->limit, "Limit every eval to N documents/windows (overrides the spec)")
      ->check(at_least(1));
  sub->add_option("--log", o->log, "Experiment log (overrides the spec's)");
  sub->add_option("--out-dir", o->out_dir, "Folder of the quantized models (overrides the spec's)");
  sub->add_flag("-y,--yes", o->yes, "Do not ask for confirmation");
  sub->add_flag("--dry-run", o->dry, "Print the plan and stop");
  sub->add_flag("--skip-duplicates", o->skip_dups,
                "Run one cell of each group whose effective settings coincide (the plan marks them); the others "
                "show its results");
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
    // plan: each cell's quantize flags checked by `quantize --dry-run` (the same code as the run),
    // which says what the run would use; cells using the same are duplicates
    std::vector<std::string> missing;
    for (auto& c : s.cells) {
      if (!fs::exists(c.model)) {
        if (std::find(missing.begin(), missing.end(), c.model) == missing.end()) missing.push_back(c.model);
        continue;
      }
      std::vector<std::string> args = sweep_cell_commands(c, s, o->c.threads, o->c.data_dir).quantize;
      args.insert(args.end(), {"--no-log", "--dry-run"});
      std::string out, err;
      const int rc = run_self(args, &out, &err);
      if (rc != 0) {
        std::string line = err.substr(0, err.find('\n'));
        for (const char* pre : {"mambaq: error: ", "quantize: "})
          if (line.starts_with(pre)) line = line.substr(std::string(pre).size());
        c.invalid = rc > 128 ? "interrupted" : line.empty() ? fmt::format("quantize --dry-run exit {}", rc) : line;
        continue;
      }
      try {
        const nlohmann::json j = nlohmann::json::parse(out);
        c.effective = j.at("effective");
        c.not_applied = j.value("not_applied", nlohmann::json::object());
      } catch (const std::exception& e) {
        fail("sweep: internal error: quantize --dry-run printed no plan for cell {} ({})", c.folder, e.what());
      }
    }
    const size_t ndup = sweep_mark_duplicates(s);
    auto skipped = [&](const SweepCell& c) { return o->skip_dups && c.dup_of >= 0; };
    // each cell's cost, from the work it does and its model's measured forward rate (models whose
    // weights are absent: extrapolated by parameters from a synthetic model of their architecture)
    std::map<std::string, double> tps;
    std::map<std::string, ModelConfig> configs;  // read once per model, with its rate
    std::map<int, double> probe;  // by architecture
    std::vector<double> est(s.cells.size(), 0.0);
    double total = 0;
    for (size_t i = 0; i < s.cells.size(); ++i) {
      const auto& c = s.cells[i];
      if (done.count(c.id) || !c.invalid.empty() || c.effective.is_null() || skipped(c)) continue;
      if (!tps.count(c.model)) {
        const ModelConfig& mc = configs.emplace(c.model, load_config(c.model)).first->second;
        try {
          tps[c.model] = forward_rate(*Model::load(c.model), 256);
        } catch (const Error&) {  // a folder with its config only
          const int a = int(mc.arch);
          if (!probe.count(a)) {
            const ModelConfig pc = published_config(mc.arch == Arch::Mamba2 ? "mamba2-130m" : "mamba-130m");
            probe[a] = forward_rate(*Model::random(pc, 1), 256) * sweep_layer_params(pc);
          }
          tps[c.model] = probe[a] / sweep_layer_params(mc);
        }
      }
      est[i] = sweep_cell_seconds(sweep_cell_work(c, s, o->c.data_dir), configs.at(c.model), tps[c.model]);
      total += est[i];
    }
    // the plan's table
    fmt::print("sweep '{}' ({}): {} cells, tasks {}{}, log {}, models in {}/\n", s.name, s.source, s.cells.size(),
               fmt::join(s.tasks, ","), s.limit > 0 ? fmt::format(" (limit {})", s.limit) : "", s.log, s.out_dir);
    size_t fw = 6;
    for (const auto& c : s.cells) fw = std::max(fw, c.folder.size());
    fmt::print("{:>3}  {:<12}  {:<{}}", "#", "cell", "folder", fw);
    for (const auto& k : s.varying)
      if (k != "model") fmt::print("  {:<18}", k);
    fmt::print("  {:>8}  status\n", "estimate");
    size_t todo = 0, ndone = 0, ninvalid = 0, nmissing = 0;
    for (size_t i = 0; i < s.cells.size(); ++i) {
      const auto& c = s.cells[i];
      fmt::print("{:>3}  {:<12}  {:<{}}", i, c.id, c.folder, fw);
      for (const auto& k : s.varying)
        if (k != "model") fmt::print("  {:<18}", sweep_cell_value(c, k));
      std::string status;
      if (done.count(c.id)) status = "done (skipped)", ++ndone;
      else if (!fs::exists(c.model)) status = "model not found: " + c.model, ++nmissing;
      else if (!c.invalid.empty()) status = "invalid: " + c.invalid, ++ninvalid;
      else {
        if (c.dup_of >= 0) {
          std::vector<std::string> why;
          for (auto& [k, v] : c.not_applied.items()) why.push_back("--" + k);
          status = fmt::format("duplicate of #{} ({})", c.dup_of,
                               why.empty() ? std::string("the same settings")
                                           : fmt::format("{} cannot act here", fmt::join(why, ", ")));
          status += skipped(c) ? ": skipped" : ": runs (--skip-duplicates skips it)";
        } else {
          status = "to run";
        }
        if (!skipped(c)) ++todo;
      }
      fmt::print("  {:>8}  {}\n", est[i] > 0 ? minutes(est[i]) : "-", status);
    }
    std::vector<std::string> parts;
    if (ndone) parts.push_back(fmt::format("{} done", ndone));
    if (ndup) parts.push_back(fmt::format("{} duplicate{}{}", ndup, ndup > 1 ? "s" : "", o->skip_dups ? " skipped" : ""));
    if (nmissing) parts.push_back(fmt::format("{} without their model", nmissing));
    if (ninvalid) parts.push_back(fmt::format("{} invalid", ninvalid));
    const std::string why = parts.empty() ? "" : fmt::format(" ({})", fmt::join(parts, ", "));
    if (todo == 0)
      fmt::print("0 runnable cells{}\n", why);
    else
      fmt::print("{} {} to run{}, {} distinct settings, estimated {}\n", todo, todo == 1 ? "cell" : "cells", why,
                 s.cells.size() - ndup, minutes(total));
    if (!tps.empty()) {
      std::vector<std::string> r;
      for (const auto& [m, v] : tps) r.push_back(fmt::format("{} {:.0f}", fs::path(m).filename().string(), v));
      fmt::print("forward tokens/s the estimate uses: {}{}\n", fmt::join(r, ", "),
                 probe.empty() ? "" : " (models without weights: extrapolated from a synthetic 130m by parameters)");
    }
    if (o->dry) return 0;
    if (!missing.empty())
      fail("sweep: model folder(s) not found: {} (edit the spec's [matrix] model list)", fmt::join(missing, ", "));
    for (size_t i = 0; i < s.cells.size(); ++i)
      if (!s.cells[i].invalid.empty() && !done.count(s.cells[i].id))
        fail("sweep: cell #{} ({}): {}; nothing was run", i, s.cells[i].folder, s.cells[i].invalid);
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
    // each cell: a line before each step, and the sweep's ETA after it (the estimate, scaled by
    // how the cells so far compared with theirs)
    const auto t_start = std::chrono::steady_clock::now();
    auto since = [](auto t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); };
    double est_done = 0, est_left = total;
    size_t k = 0;
    struct sigaction on_int {};
    on_int.sa_handler = on_sigint;
    sigemptyset(&on_int.sa_mask);
    sigaction(SIGINT, &on_int, nullptr);
    for (size_t i = 0; i < s.cells.size(); ++i) {
      const auto& c = s.cells[i];
      if (done.count(c.id) || skipped(c)) continue;
      ++k;
      const SweepCommands cmd = sweep_cell_commands(c, s, o->c.threads, o->c.data_dir);
      const auto t0 = std::chrono::steady_clock::now();
      auto step = [&](const std::vector<std::string>& args, const char* what) {
        fmt::print(stderr, "sweep [{}/{}] #{} {}: {}\n", k, todo, i, c.folder, what);
        const int rc = g_interrupted ? 128 + SIGINT : run_self(args);
        if (rc > 128 || g_interrupted)
          fail("sweep: cell #{} ({}) interrupted by signal {} during {}; it is not logged as done: run the same "
               "`mambaq sweep` again to resume from it", i, c.folder, rc > 128 ? rc - 128 : int(SIGINT), what);
        if (rc) fail("sweep: cell #{} ({}): {} failed (exit {})", i, c.folder, what, rc);
      };
      step(cmd.quantize, "quantize");
      step(cmd.eval, "eval");
      est_done += est[i], est_left -= est[i];
      const double el = since(t_start), scale = est_done > 0 ? el / est_done : 1.0;
      fmt::print(stderr, "sweep [{}/{}] #{} {}: done in {}; {} elapsed{}\n", k, todo, i, c.folder, minutes(since(t0)),
                 minutes(el), k < todo ? fmt::format(", about {} left", minutes(est_left * scale)) : "");
    }
    // final table from the log; each cell's difference to its model's first cell, with its standard error
    done = sweep_done(s.log);
    auto record = [&](const SweepCell& c) -> const nlohmann::json* {
      auto it = done.find(skipped(c) ? s.cells[size_t(c.dup_of)].id : c.id);
      return it == done.end() ? nullptr : &it->second;
    };
    const std::vector<std::string> cols = sweep_result_columns(s, done);
    fmt::print("\n{:<{}}", "folder", fw);
    for (const auto& kk : s.varying)
      if (kk != "model") fmt::print("  {:<18}", kk);
    for (const auto& c : cols) fmt::print("  {:>34}", c);
    fmt::print("\n");
    std::map<std::string, const nlohmann::json*> base;  // each model's first cell
    for (const auto& c : s.cells)
      if (const nlohmann::json* r = record(c)) base.emplace(c.model, r);
    for (const auto& c : s.cells) {
      const nlohmann::json* r = record(c);
      fmt::print("{:<{}}", c.folder, fw);
      for (const auto& kk : s.varying)
        if (kk != "model") fmt::print("  {:<18}", sweep_cell_value(c, kk));
      for (const auto& col : cols) fmt::print("  {:>34}", r ? sweep_result_text(*r, col, base.at(c.model)) : "-");
      if (skipped(c)) fmt::print("  (= #{})", c.dup_of);
      fmt::print("\n");
    }
    return 0;
  };
}

}  // namespace mambaq::cli
