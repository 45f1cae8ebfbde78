// mambaq eval MODEL --tasks ...: lm-evaluation-harness tasks, one run per execution mode, results
// as a table and in lm-eval's JSON shape.
#include <fmt/format.h>

#include <chrono>
#include <filesystem>

#include "analysis/explog.h"
#include "core/stats.h"
#include "core/threads.h"

#include "cli/common.h"
#include "io/json_file.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "model/quant_state.h"
#include "quant/quantized.h"

namespace fs = std::filesystem;

namespace mambaq::cli {

namespace {

// One execution mode: "fp32", "fake", "int8", or "fake+fp-ops=ssm:linear".
struct ModeSpec {
  std::string label;
  ExecMode mode;
  unsigned fp_ops = 0;
};

// FP32-kept ops exist only in the fake-quant simulation: one check and one message for both
// spellings (--mode fake --fp-ops OPS, --modes fake+fp-ops=OPS); `where` names what was given.
void check_fp_ops_mode(const ModeSpec& m, const std::string& where) {
  if (m.fp_ops && m.mode != ExecMode::Fake)
    fail("{}: fp-ops {} run in the fake-quant simulation: use mode fake (--mode fake, or fake+fp-ops=... in --modes), "
         "not {}", where, fp_ops_str(m.fp_ops), mode_name(m.mode));
}

ModeSpec parse_mode_spec(const std::string& s, const char* flag) {
  ModeSpec m;
  m.label = s;
  const size_t plus = s.find('+');
  try {
    m.mode = parse_mode(s.substr(0, plus));
  } catch (const Error& e) {
    fail("{}: '{}': {}", flag, s, e.what());
  }
  if (plus != std::string::npos) {
    const std::string rest = s.substr(plus + 1);
    if (!rest.starts_with("fp-ops="))
      fail("{}: '{}': after '+' only fp-ops=OP:OP... is understood (e.g. fake+fp-ops=ssm)", flag, s);
    std::string ops = rest.substr(7);
    for (char& c : ops)
      if (c == ':') c = ',';
    m.fp_ops = parse_fp_ops(ops);
  }
  check_fp_ops_mode(m, fmt::format("{} '{}'", flag, s));
  return m;
}

std::string num_str(double v) { return v >= 1e4 ? fmt::format("{:.1f}", v) : fmt::format("{:.4f}", v); }
std::string metric_str(const Metric& m) {
  return m.stderr_ >= 0 ? num_str(m.value) + " ±" + num_str(m.stderr_) : num_str(m.value);
}

}  // namespace

Runner register_eval(CLI::App& app) {
  struct Opts {
    std::string model, synthetic, tasks = "lambada_openai", json, output_path, mode, modes, fp_ops, fp_model,
        log = "experiments.jsonl";
    bool no_log = false, no_shared_prefix = false;
    std::string log_extra;
    EvalOptions e;
    bool quiet = false;
    int batch_size = 0;
    uint64_t seed = 1;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("eval", "Evaluate a model on lm-evaluation-harness tasks");
  sub->add_option("MODEL", o->model, "Model folder (or --synthetic)");
  add_synthetic(sub, o->synthetic,
                "Random weights with the shapes of a published model, for timing a task at that size (the scores "
                "mean nothing): ");
  sub->add_option("--seed", o->seed, "Seed of --synthetic weights")->capture_default_str();
  sub->add_option("--tasks,--task_list", o->tasks,
                  "Comma-separated: lambada_openai, arc_easy, arc_challenge, piqa, winogrande, hellaswag, wikitext "
                  "(lm-eval's), wikitext2 (fixed windows), lastword:FILE.jsonl, ppl:FILE.txt")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Write the results in lm-eval's shape to FILE ('-' = stdout, nothing else)");
  auto force = add_force(sub);
  sub->add_option("--output-path,--output_path", o->output_path,
                  "As lm-eval: DIR (writes DIR/results.json) or FILE.json; --log-samples files beside it");
  sub->add_flag("--log-samples,--log_samples", o->e.log_samples,
                "Write per-document records samples_TASK.jsonl (needs --output-path)");
  sub->add_option("--modes", o->modes,
                  "Run every task once per mode and print one table: e.g. fp32,fake,int8,fake+fp-ops=ssm "
                  "(several op kinds: fake+fp-ops=linear:ssm)");
  sub->add_option("--fp-ops", o->fp_ops,
                  "Fake mode: keep these op kinds in FP32 (linear, conv, ssm, norm, hadamard, head; as compare)");
  sub->add_option("--fp-model", o->fp_model,
                  "The FP model the quantized one was made from (--fp-ops linear/conv/head take its weights; "
                  "default: the folder recorded at quantization)");
  sub->add_option("--ppl-seqlen", o->e.ppl_seqlen, "Window length of wikitext2 / ppl: tasks")
      ->capture_default_str()
      ->check(between(2, 1 << 20));
  sub->add_option("--max-length", o->e.max_length, "lm-eval's max_length: tokens a request reads (mamba_ssm: 2048)")
      ->capture_default_str()
      ->check(between(1, 1 << 20));
  sub->add_option("--limit", o->e.limit, "Only the first N documents (or windows); leave out for all")
      ->check(at_least(1));
  sub->add_option("--batch_size", o->batch_size,
                  "Accepted for lm-eval/Quamba habits and ignored: mambaq packs documents by tokens "
                  "(--batch-tokens), and results never depend on the batching");
  sub->add_option("--batch-tokens", o->e.batch_tokens, "Tokens packed into one forward pass")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_flag("--no-shared-prefix", o->no_shared_prefix,
                "Score every (context, choice) pair from scratch instead of continuing each choice from the "
                "context's state (same results, slower)");
  sub->add_option("--bootstrap-iters,--bootstrap_iters", o->e.bootstrap_iters,
                  "lm-eval's bootstrap resamples for perplexity's standard error (0: none)")
      ->capture_default_str()
      ->check(between(0, 10000000));
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  sub->add_option("--log", o->log, "Experiment log (JSONL, appended)")->capture_default_str();
  sub->add_flag("--no-log", o->no_log, "Do not append to the experiment log");
  sub->add_option("--log-extra", o->log_extra, "JSON object merged into the log record (e.g. by sweeps)");
  add_mode(sub, o->mode);
  add_backend(sub, o->c);
  add_dtype(sub, o->c);
  add_common(sub, o->c);
  return [o, force] {
    apply_common(o->c);
    if (o->model.empty() == o->synthetic.empty()) fail("eval: give either MODEL or --synthetic NAME");
    if (!o->synthetic.empty()) published_config(o->synthetic);  // an unknown name, before anything else
    check_new_output_file(o->json, "--json", *force);
    if (!o->no_log) check_append_file(o->log, "--log");
    if (o->e.log_samples && o->output_path.empty())
      fail("--log-samples: give --output-path DIR (the samples files are written there, as lm-eval)");
    // lm-eval's results file is .json; a .jsonl is a log or a samples file, never taken for one
    if (o->output_path.ends_with(".jsonl"))
      fail("--output-path {}: results are written as a .json file or into a folder; a .jsonl path looks like an "
           "experiment log or a samples file", o->output_path);
    const bool out_is_file = o->output_path.ends_with(".json");
    if (!o->output_path.empty()) {
      if (out_is_file) check_new_output_file(o->output_path, "--output-path", *force);
      else check_new_output_dir(o->output_path, "--output-path", *force);
    }
    const nlohmann::json extra = parse_log_extra(o->log_extra);
    o->e.data_dir = o->c.data_dir;
    o->e.progress = !o->quiet;
    o->e.shared_prefix = !o->no_shared_prefix;
    const std::vector<std::string> tasks = split_list(o->tasks);
    if (tasks.empty()) fail("--tasks: no task given");
    check_task_keys(tasks);
    if (!o->modes.empty() && (!o->mode.empty() || !o->fp_ops.empty()))
      fail("--modes: give the modes there (e.g. --modes fp32,fake+fp-ops=ssm), not also --mode / --fp-ops");
    auto m = o->synthetic.empty() ? Model::load(o->model) : Model::random(published_config(o->synthetic), o->seed);
    if (!o->synthetic.empty()) o->model = fmt::format("synthetic:{}:seed={}", o->synthetic, o->seed);
    // the modes to run
    std::vector<ModeSpec> modes;
    if (!o->modes.empty()) {
      for (const auto& s : split_list(o->modes)) modes.push_back(parse_mode_spec(s, "--modes"));
      if (modes.empty()) fail("--modes: no mode given");
    } else {
      ModeSpec one;
      one.mode = o->mode.empty() ? (m->is_quantized() ? ExecMode::Int8 : ExecMode::FP32) : parse_mode(o->mode);
      one.fp_ops = parse_fp_ops(o->fp_ops);
      check_fp_ops_mode(one, "--fp-ops " + o->fp_ops);
      one.label = mode_name(one.mode) + (one.fp_ops ? "+fp-ops=" + fp_ops_str(one.fp_ops) : std::string());
      modes.push_back(one);
    }
    for (const auto& md : modes)  // before the FP model and the tokenizer load (the FP model's checks: below)
      check_session_options(*m, {.mode = md.mode, .fp_ops = md.fp_ops & ~(kFpLinear | kFpConv | kFpHead | kFpHadamard)});
    // --fp-ops linear/conv/head read the FP model's weights, in the quantized model's basis
    std::unique_ptr<Model> fp;
    unsigned all_ops = 0;
    for (const auto& md : modes) all_ops |= md.fp_ops;
    if (all_ops & (kFpLinear | kFpConv | kFpHead | kFpHadamard)) {
      std::string src = o->fp_model;
      if (src.empty()) src = m->quantized()->meta.source_model;
      if (src.empty() || !fs::exists(src))
        fail("--fp-ops {}: needs the FP model's weights: give --fp-model DIR (the folder {} was quantized from)",
             fp_ops_str(all_ops), o->model);
      fp = Model::load(src);
      // before any transform of its weights: the FP model of this architecture and these dimensions
      const std::string flag = o->fp_model.empty() ? "the source_model " + src : "--fp-model " + src;
      if (fp->is_quantized())
        fail("{}: is a quantized model; --fp-ops need the FP model {} was quantized from", flag, o->model);
      if (const std::string d = config_difference(fp->config(), m->config()); !d.empty())
        fail("{}: is not the FP model of {} ({})", flag, o->model, d);
      if (changes_basis(*m->quantized())) fp = fp_in_quantized_basis(*fp, *m->quantized());
    }
    auto tok = load_tokenizer(o->model, o->c);
    // The table goes to stdout, or to stderr when stdout carries the JSON.
    std::FILE* table = o->json == "-" ? stderr : stdout;
    std::vector<std::vector<TaskResult>> runs;
    std::vector<nlohmann::json> lm;
    for (const auto& md : modes) {
      const auto t0 = std::chrono::steady_clock::now();
      Session S(*m, {.backend = o->c.backend, .mode = md.mode, .fp_ops = md.fp_ops, .fp = fp.get(), .dtype = dtype_flag(o->c)});
      if (modes.size() > 1 && !o->quiet) fmt::print(stderr, "mode {}\n", md.label);
      std::vector<TaskResult> rs;
      for (const auto& t : tasks) rs.push_back(run_task(S, *tok, t, o->e));
      LmEvalRun run;
      run.model_path = o->model;
      run.model_args = "pretrained=" + o->model + ",mode=" + mode_name(md.mode);
      if (dtype_flag(o->c) != DType::F32) run.model_args += std::string(",dtype=") + float_type_name(dtype_flag(o->c));
      if (md.fp_ops) run.model_args += ",fp_ops=" + fp_ops_str(md.fp_ops);
      if (m->is_quantized()) {
        const auto& q = m->quantized()->meta;
        run.model_args += fmt::format(",recipe={},w_bits={},a_bits={},percentile_alpha={}", q.recipe, q.w_bits, q.a_bits,
                                      q.alpha);
      }
      run.batch_tokens = o->e.batch_tokens;
      run.limit = o->e.limit;
      run.bootstrap_iters = o->e.bootstrap_iters;
      run.extra = {{"mode", md.label}, {"threads", num_threads()}, {"shared_prefix", o->e.shared_prefix},
                   {"max_length", o->e.max_length}, {"ppl_seqlen", o->e.ppl_seqlen}};
      if (m->is_quantized()) run.extra["quantization"] = m->config().raw["quantization"];
      lm.push_back(lm_eval_results(rs, run));
      if (!o->no_log) {
        nlohmann::json r = log_header("eval");
        r["model"] = o->model;
        r["model_id"] = model_identity(o->model);
        r["mode"] = mode_name(md.mode);
        if (md.fp_ops) r["fp_ops"] = fp_ops_str(md.fp_ops);
        if (m->is_quantized()) r["quantization"] = m->config().raw["quantization"];
        r["flags"] = {{"tasks", o->tasks},
                      {"mode", mode_name(md.mode)},
                      {"fp_ops", fp_ops_str(md.fp_ops)},
                      {"ppl_seqlen", o->e.ppl_seqlen},
                      {"max_length", o->e.max_length},
                      {"limit", o->e.limit},
                      {"batch_tokens", o->e.batch_tokens},
                      {"threads", num_threads()}};
        r["results"] = lm.back()["mambaq"]["results"];
        r["wall_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        r["peak_rss_mib"] = peak_rss_mib();
        r.update(extra);
        append_log(o->log, r);
      }
      runs.push_back(std::move(rs));
    }
    // one table: a row per task metric, a column per mode (and its difference to the first)
    std::vector<size_t> width;
    for (const auto& md : modes) width.push_back(std::max<size_t>(24, md.label.size()));
    std::string head = fmt::format("{:<16} {:<16}", "task", "metric");
    for (size_t i = 0; i < modes.size(); ++i) {
      head += fmt::format(" {:>{}}", modes[i].label, width[i]);
      if (i > 0) head += fmt::format(" {:>9}", "diff");
    }
    fmt::print(table, "{} {:>7} {:>8}\n", head, "n", "time_s");
    for (size_t t = 0; t < tasks.size(); ++t) {
      const TaskResult& r0 = runs[0][t];
      for (size_t k = 0; k < r0.metrics.size(); ++k) {
        std::string line = fmt::format("{:<16} {:<16}", r0.key, r0.metrics[k].name);
        double secs = 0;
        for (size_t i = 0; i < modes.size(); ++i) {
          const Metric& mt = runs[i][t].metrics[k];
          line += fmt::format(" {:>{}}", metric_str(mt), width[i]);
          if (i > 0) line += fmt::format(" {:>+9.4f}", mt.value - r0.metrics[k].value);
          secs += runs[i][t].seconds;
        }
        fmt::print(table, "{} {:>7} {:>8.1f}\n", line, r0.n_effective, secs);
      }
    }
    // lm-eval's shape: one results object per mode
    nlohmann::json out;
    if (modes.size() == 1) {
      out = lm[0];
    } else {
      out = nlohmann::json::object();
      for (size_t i = 0; i < modes.size(); ++i) out[modes[i].label] = lm[i];
    }
    if (!o->json.empty()) write_json(o->json, out);
    if (!o->output_path.empty()) {
      for (size_t i = 0; i < modes.size(); ++i) {
        fs::path dir = out_is_file ? fs::path(o->output_path).parent_path() : fs::path(o->output_path);
        fs::path file = out_is_file ? fs::path(o->output_path) : dir / "results.json";
        if (modes.size() > 1) {  // one folder per mode
          std::string folder = modes[i].label;
          for (char& c : folder)
            if (c == '/' || c == ',') c = '_';
          dir = dir / folder;
          file = dir / (out_is_file ? fs::path(o->output_path).filename() : fs::path("results.json"));
        }
        if (!dir.empty()) fs::create_directories(dir);
        write_json(file.string(), lm[i]);
        if (o->e.log_samples)
          for (const auto& r : runs[i]) {
            std::string lines;
            for (const auto& s : r.samples) lines += s.dump() + "\n";
            write_text_file((dir / ("samples_" + r.key + ".jsonl")).string(), lines);
          }
      }
    }
    return 0;
  };
}

}  // namespace mambaq::cli
