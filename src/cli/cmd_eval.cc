#include <fmt/format.h>

#include <sstream>

#include "cli/common.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"

namespace mambaq::cli {

Runner register_eval(CLI::App& app) {
  struct Opts {
    std::string model, tasks = "lambada_openai", json;
    EvalOptions e;
    bool quiet = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("eval", "Evaluate a model on lm-evaluation-harness style tasks");
  sub->add_option("MODEL", o->model, "Model folder")->required();
  sub->add_option("--tasks", o->tasks,
                  "Comma-separated: lambada_openai, wikitext2, lastword:FILE.jsonl, ppl:FILE.txt")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Write results as JSON to FILE ('-' = stdout)");
  sub->add_option("--ppl-seqlen", o->e.ppl_seqlen, "Window length of perplexity tasks")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--limit", o->e.limit, "Only the first N documents (lastword) or windows (ppl)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--batch-tokens", o->e.batch_tokens, "Tokens packed into one forward pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  add_common(sub, o->c);
  return [o] {
    apply_common(o->c);
    o->e.data_dir = o->c.data_dir;
    o->e.progress = !o->quiet;
    std::vector<std::string> tasks;
    std::stringstream ss(o->tasks);
    for (std::string t; std::getline(ss, t, ',');)
      if (!t.empty()) tasks.push_back(t);
    if (tasks.empty()) fail("--tasks: no task given");
    auto m = Model::load(o->model);
    auto tok = load_tokenizer(o->model, o->c);
    nlohmann::json results = nlohmann::json::object();
    std::vector<TaskResult> rs;
    for (const auto& t : tasks) {
      rs.push_back(run_task(*m, *tok, t, o->e));
      results[rs.back().key] = rs.back().json;
      results[rs.back().key]["seconds"] = rs.back().seconds;
    }
    fmt::print("{:<16} {:>10} {:>14} {:>10} {:>9} {:>8}\n", "task", "acc", "ppl", "n/scored", "tokens", "time_s");
    for (const auto& r : rs) {
      if (r.kind == "lastword")
        fmt::print("{:<16} {:>10.4f} {:>14.4f} {:>10} {:>9} {:>8.1f}\n", r.key, r.json["acc"].get<double>(),
                   r.json["ppl"].get<double>(), r.json["n"].get<int>(), r.json["target_tokens"].get<int64_t>(),
                   r.seconds);
      else
        fmt::print("{:<16} {:>10} {:>14.4f} {:>10} {:>9} {:>8.1f}\n", r.key, "-", r.json["ppl"].get<double>(),
                   r.json["scored"].get<int64_t>(), r.json["tokens"].get<int64_t>(), r.seconds);
    }
    if (!o->json.empty())
      write_json(o->json, {{"model", o->model},
                           {"results", results},
                           {"config", {{"ppl_seqlen", o->e.ppl_seqlen}, {"limit", o->e.limit}}}});
    return 0;
  };
}

}  // namespace mambaq::cli
