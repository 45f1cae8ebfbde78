// mambaq run MODEL: Quamba's main.py in one command, with its flags as they are — quantize, save
// where main.py saves (PRETRAINED_DIR/OUTPUT_SUBDIR/<name>), evaluate, write lm-eval's JSON into
// the log folder and log both steps. It runs `mambaq quantize` and `mambaq eval` (printed first,
// so the native commands are in front of the user), as child processes of itself.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "cli/common.h"
#include "mambaq/config.h"
#include "mambaq/error.h"

namespace mambaq::cli {

namespace fs = std::filesystem;

namespace {
std::string quoted(const std::vector<std::string>& args) {
  std::string s = "mambaq";
  for (const auto& a : args) {
    const bool plain = !a.empty() && a.find_first_of(" \t'\"$\\{}") == std::string::npos;
    s += " " + (plain ? a : "'" + a + "'");
  }
  return s;
}
}  // namespace

Runner register_run(CLI::App& app) {
  struct Opts {
    std::string model, recipe, pretrained_dir = "pretrained_models", output_subdir, log_dir = "logs", hybrid_config,
                                   ppl_dataset = "wikitext2";
    std::vector<std::string> tasks;
    int w_bits = 8, a_bits = 8, calib_num = 512, calib_seqlen = 512, batch_size = 0;
    double alpha = 0;
    bool quantize = false, gptq = false, group_heads = false, q_emb = false, q_head = false, zero_shot = false,
         ppl = false, testing = false, verbose = false, force = false, hybrid = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "run", "Quamba's main.py in one command: --quantize (saved to PRETRAINED_DIR/OUTPUT_SUBDIR/<name>), then "
             "--eval_zero_shot --task_list ... (lm-eval JSON and the experiment log in --log_dir)");
  sub->add_option("MODEL", o->model, "FP model folder (with --quantize), or a model to evaluate")->required();
  sub->add_flag("--quantize", o->quantize, "Quantize MODEL and save it (else MODEL is evaluated as it is)");
  sub->add_option("--recipe", o->recipe,
                  "quamba1 or quamba2 (default: quamba2 for Mamba2 models and for any Quamba2 flag or precision, "
                  "else quamba1)");
  sub->add_option("--w_bits,--w-bits", o->w_bits, "Weight bits (4 or 8)")->capture_default_str();
  sub->add_option("--a_bits,--a-bits", o->a_bits, "Activation bits (8, or 16 = float)")->capture_default_str();
  sub->add_flag("--apply_gptq,--gptq", o->gptq, "GPTQ on in_proj / out_proj (and the LM head)");
  sub->add_flag("--group_heads,--group-heads", o->group_heads, "Mamba2: reorder and group heads");
  sub->add_flag("--quantize_embedding,--quantize-embedding", o->q_emb, "Embedding at the weight bits");
  sub->add_flag("--quantize_lm_head,--quantize-lm-head", o->q_head, "LM head at the weight (and activation) bits");
  sub->add_option("--percentile_alpha,--percentile-alpha", o->alpha, "Percentile observer's alpha (default: quantize's)");
  sub->add_option("--calib_data_num,--calib-num", o->calib_num, "Calibration samples")->capture_default_str()->check(at_least(1));
  sub->add_option("--calib_seqlen,--calib-seqlen", o->calib_seqlen, "Tokens per calibration sample")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_flag("--hybrid_blocks", o->hybrid, "Per-layer precisions from --hybrid_blocks_config");
  sub->add_option("--hybrid_blocks_config", o->hybrid_config, "JSON list of one precision per layer (W4A8, W4A16, ...)");
  sub->add_flag("--eval_zero_shot", o->zero_shot, "Evaluate --task_list");
  sub->add_option("--task_list,--tasks", o->tasks, "Tasks (lambada_openai, arc_easy, ...; commas or spaces)")
      ->delimiter(',');
  sub->add_flag("--eval_ppl", o->ppl, "Also the perplexity of --ppl_dataset");
  sub->add_option("--ppl_dataset", o->ppl_dataset, "wikitext2, or ppl:FILE")->capture_default_str();
  sub->add_flag("--testing", o->testing, "The first 100 documents of each task (main.py's --testing)");
  sub->add_option("--batch_size,--batch-size", o->batch_size, "Eval: documents per forward (lm-eval's batch size)")
      ->check(at_least(1));
  sub->add_option("--pretrained_dir", o->pretrained_dir, "Where quantized models are saved")->capture_default_str();
  sub->add_option("--output_subdir", o->output_subdir, "A folder inside --pretrained_dir");
  sub->add_option("--log_dir", o->log_dir, "lm-eval JSON (LOG_DIR/<name>/results.json) and experiments.jsonl")
      ->capture_default_str();
  sub->add_flag("--verbose,-v", o->verbose, "Quantize: every quantization point's alpha, max and scale");
  sub->add_flag("--force", o->force, "Replace an existing quantized folder and result files");
  add_backend(sub, o->c);
  add_common(sub, o->c);
  return [o] {
    apply_common(o->c);
    if (!o->quantize && !o->zero_shot && !o->ppl)
      fail("run: nothing to do: add --quantize and/or --eval_zero_shot --task_list ... (or --eval_ppl)");
    if ((o->zero_shot && o->tasks.empty())) fail("run: --eval_zero_shot needs --task_list");
    if (!o->zero_shot && !o->tasks.empty()) fail("run: --task_list without --eval_zero_shot evaluates nothing; add it");
    if (o->hybrid != !o->hybrid_config.empty()) fail("run: --hybrid_blocks and --hybrid_blocks_config go together");
    if (!fs::exists(o->model)) fail("{}: model folder not found", o->model);
    const std::string log = (fs::path(o->log_dir) / "experiments.jsonl").string();
    std::vector<std::string> common = {"--threads", std::to_string(o->c.threads), "--data-dir", o->c.data_dir};
    if (!o->c.backend.empty()) common.insert(common.end(), {"--backend", o->c.backend});
    std::string target = o->model, name = fs::path(o->model).filename().string();
    std::vector<std::string> quantize;
    if (o->quantize) {
      // main.py's name: the base name with "mamba" -> "quamba", then -w{w}a{a} (hybrid: -w4aX-<config>)
      const auto at = name.find("mamba");
      if (at != std::string::npos) name.replace(at, 5, "quamba");
      name += o->hybrid ? "-w4aX-" + fs::path(o->hybrid_config).stem().string() : fmt::format("-w{}a{}", o->w_bits, o->a_bits);
      const fs::path dir = o->output_subdir.empty() ? fs::path(o->pretrained_dir) : fs::path(o->pretrained_dir) / o->output_subdir;
      target = (dir / name).string();
      if (fs::exists(target) && !o->force)
        fail("run: {} already exists; main.py would load it silently and quantize nothing (its settings may not be "
             "these: the name holds only the bits, docs/quamba2.md). Use --force to quantize again, or `mambaq eval "
             "{}`", target, target);
      const bool q2_flags = o->w_bits == 4 || o->a_bits == 16 || o->gptq || o->group_heads || o->q_emb || o->q_head || o->hybrid;
      std::string recipe = o->recipe;
      if (recipe.empty()) {
        recipe = q2_flags || load_config(o->model).arch == Arch::Mamba2 ? "quamba2" : "quamba1";
        fmt::print(stderr, "run: recipe {} ({})\n", recipe,
                   q2_flags ? "a Quamba2 flag or precision" : recipe == "quamba2" ? "a Mamba2 model, as main.py" : "W8A8 on Mamba1, Quamba's");
      }
      fs::create_directories(dir);
      quantize = {"quantize", o->model, "-o", target, "--recipe", recipe, "--w-bits", std::to_string(o->w_bits),
                  "--a-bits", std::to_string(o->a_bits), "--calib-num", std::to_string(o->calib_num),
                  "--calib-seqlen", std::to_string(o->calib_seqlen), "--log", log};
      if (o->alpha > 0) quantize.insert(quantize.end(), {"--percentile-alpha", fmt::format("{}", o->alpha)});
      for (auto [on, flag] : {std::pair{o->gptq, "--gptq"}, {o->group_heads, "--group-heads"},
                              {o->q_emb, "--quantize-embedding"}, {o->q_head, "--quantize-lm-head"},
                              {o->verbose, "--verbose"}, {o->force, "--force"}})
        if (on) quantize.push_back(flag);
      if (o->hybrid) quantize.insert(quantize.end(), {"--layer-config", o->hybrid_config});
      quantize.insert(quantize.end(), common.begin(), common.end());
    } else if (o->alpha > 0 || o->gptq || o->group_heads || o->q_emb || o->q_head || o->hybrid) {
      fail("run: quantization flags without --quantize do nothing; add --quantize");
    }
    std::vector<std::string> eval;
    if (o->zero_shot || o->ppl) {
      std::vector<std::string> tasks;
      for (const auto& t : o->tasks)
        if (!t.empty()) tasks.push_back(t);
      if (o->ppl) tasks.push_back(o->ppl_dataset);
      fs::create_directories(o->log_dir);
      eval = {"eval", target, "--tasks", fmt::format("{}", fmt::join(tasks, ",")), "--output-path",
              (fs::path(o->log_dir) / name).string(), "--log", log};
      if (o->batch_size) eval.insert(eval.end(), {"--batch_size", std::to_string(o->batch_size)});
      if (o->testing) eval.insert(eval.end(), {"--limit", "100"});
      if (o->force) eval.push_back("--force");
      eval.insert(eval.end(), common.begin(), common.end());
    }
    for (const auto* step : {&quantize, &eval}) {
      if (step->empty()) continue;
      fmt::print(stderr, "run: {}\n", quoted(*step));
      const int rc = run_self(*step);
      if (rc > 128) fail("run: {} interrupted by signal {}", (*step)[0], rc - 128);
      if (rc) return rc;  // the step's own error is above
    }
    return 0;
  };
}

}  // namespace mambaq::cli
