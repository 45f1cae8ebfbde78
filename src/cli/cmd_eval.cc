#include <fmt/format.h>

#include <chrono>
#include <sstream>

#include "analysis/explog.h"
#include "core/threads.h"

#include "cli/common.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"

namespace mambaq::cli {

Runner register_eval(CLI::App& app) {
  struct Opts {
    std::string model, tasks = "lambada_openai", json, mode, log = "experiments.jsonl";
    bool no_log = false;
    std::string log_extra;
    EvalOptions e;
    bool quiet = false;
    int batch_size = 0;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("eval", "Evaluate a model on lm-evaluation-harness style tasks");
  sub->add_option("MODEL", o->model, "Model folder")->required();
  sub->add_option("--tasks,--task_list", o->tasks,
                  "Comma-separated: lambada_openai, wikitext2, lastword:FILE.jsonl, ppl:FILE.txt")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Write results as JSON to FILE ('-' = stdout)");
  sub->add_option("--ppl-seqlen", o->e.ppl_seqlen, "Window length of perplexity tasks")
      ->capture_default_str()
      ->check(between(2, 1 << 20));
  sub->add_option("--limit", o->e.limit, "Only the first N documents (lastword) or windows (ppl); leave out for all")
      ->check(at_least(1));
  sub->add_option("--batch_size", o->batch_size,
                  "Accepted for lm-eval/Quamba habits and ignored: mambaq packs documents by tokens "
                  "(--batch-tokens), and results never depend on the batching");
  sub->add_option("--batch-tokens", o->e.batch_tokens, "Tokens packed into one forward pass")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  sub->add_option("--log", o->log, "Experiment log (JSONL, appended)")->capture_default_str();
  sub->add_flag("--no-log", o->no_log, "Do not append to the experiment log");
  sub->add_option("--log-extra", o->log_extra, "JSON object merged into the log record (e.g. by sweeps)");
  add_mode(sub, o->mode);
  add_common(sub, o->c);
  return [o] {
    const auto t0 = std::chrono::steady_clock::now();
    apply_common(o->c);
    check_output_file(o->json, "--json");
    check_output_file(o->log, "--log");
    const nlohmann::json extra = parse_log_extra(o->log_extra);
    o->e.data_dir = o->c.data_dir;
    o->e.progress = !o->quiet;
    std::vector<std::string> tasks;
    std::stringstream ss(o->tasks);
    for (std::string t; std::getline(ss, t, ',');)
      if (!t.empty()) tasks.push_back(t);
    if (tasks.empty()) fail("--tasks: no task given");
    auto m = load_model(o->model, o->mode);
    auto tok = load_tokenizer(o->model, o->c);
    nlohmann::json results = nlohmann::json::object();
    std::vector<TaskResult> rs;
    for (const auto& t : tasks) {
      rs.push_back(run_task(*m, *tok, t, o->e));
      results[rs.back().key] = rs.back().json;
      results[rs.back().key]["seconds"] = rs.back().seconds;
    }
    // `--json -` keeps stdout for the JSON alone: the table goes to stderr then.
    std::FILE* table = o->json == "-" ? stderr : stdout;
    fmt::print(table, "{:<16} {:>10} {:>14} {:>10} {:>9} {:>8}\n", "task", "acc", "ppl", "n/scored", "tokens", "time_s");
    for (const auto& r : rs) {
      if (r.kind == "lastword")
        fmt::print(table, "{:<16} {:>10.4f} {:>14.4f} {:>10} {:>9} {:>8.1f}\n", r.key, r.json["acc"].get<double>(),
                   r.json["ppl"].get<double>(), r.json["n"].get<int>(), r.json["target_tokens"].get<int64_t>(),
                   r.seconds);
      else
        fmt::print(table, "{:<16} {:>10} {:>14.4f} {:>10} {:>9} {:>8.1f}\n", r.key, "-", r.json["ppl"].get<double>(),
                   r.json["scored"].get<int64_t>(), r.json["tokens"].get<int64_t>(), r.seconds);
    }
    if (!o->no_log) {
      nlohmann::json r = log_header("eval");
      r["model"] = o->model;
      r["mode"] = mode_name(m->mode());
      if (m->is_quantized()) r["quantization"] = m->config().raw["quantization"];
      r["flags"] = {{"tasks", o->tasks},
                    {"mode", mode_name(m->mode())},
                    {"ppl_seqlen", o->e.ppl_seqlen},
                    {"limit", o->e.limit},
                    {"batch_tokens", o->e.batch_tokens},
                    {"threads", num_threads()}};
      r["results"] = results;
      r["wall_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r["peak_rss_mib"] = peak_rss_mib();
      r.update(extra);
      append_log(o->log, r);
    }
    if (!o->json.empty())
      write_json(o->json, {{"model", o->model},
                           {"mode", mode_name(m->mode())},
                           {"results", results},
                           {"config", {{"ppl_seqlen", o->e.ppl_seqlen}, {"limit", o->e.limit}}}});
    return 0;
  };
}

}  // namespace mambaq::cli
