// mambaq <command>: one subcommand per file in this folder.
#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/ranges.h>

#include "cli/common.h"
#include "kernels/backend.h"
#include "core/threads.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/version.h"
#include "analysis/explog.h"
#include "io/json_file.h"

namespace mambaq::cli {

CLI::Validator at_least(double lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end) return "";  // not a number: CLI11's conversion says so
        return v >= lo ? "" : fmt::format("must be at least {} (got {})", lo, s);
      },
      fmt::format(">= {}", lo));
}

CLI::Validator between(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end) return "";
        return v >= lo && v <= hi ? "" : fmt::format("must be between {} and {} (got {})", lo, hi, s);
      },
      fmt::format("{} to {}", lo, hi));
}

size_t edit_distance(const std::string& a, const std::string& b) {
  const auto norm = [](char c) { return c == '_' ? '-' : c; };
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (norm(a[i - 1]) == norm(b[j - 1]) ? 0 : 1)});
    prev.swap(cur);
  }
  return prev[b.size()];
}

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t bd = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < bd) bd = d, best = c;
  }
  return bd <= std::max<size_t>(2, word.size() / 3) ? best : "";
}

void add_common(CLI::App* sub, Common& c) {
  sub->add_option("--threads", c.threads, "Threads for all kernels (default: all cores)")->check(at_least(0));
  sub->add_option("--data-dir", c.data_dir, "Data folder laid out like shared/data (default: the bundled data/)");
}

void apply_common(Common& c) {
  set_num_threads(c.threads);
  if (c.data_dir.empty()) c.data_dir = default_data_dir();
  if (!std::filesystem::is_directory(c.data_dir)) fail("--data-dir: '{}' is not a folder", c.data_dir);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const Common& c) {
  const std::string p = find_tokenizer(model_dir, c.data_dir);
  if (!std::filesystem::exists(p))
    fail("no tokenizer: neither {}/tokenizer.json nor {} exists (use --data-dir)", model_dir, p);
  return Tokenizer::load(p);
}

void write_json(const std::string& file, const nlohmann::json& j) {
  if (file == "-") {
    std::cout << j.dump(2) << "\n";
    return;
  }
  write_file_atomic(file, j.dump(2) + "\n");
}

void add_mode(CLI::App* sub, std::string& mode) {
  sub->add_option("--mode", mode,
                  "Execution: fp32 (ignore quantization), fake (quantize-dequantize in float), int8 (integer kernels); "
                  "default int8 for a quantized model, fp32 otherwise");
}

void add_backend(CLI::App* sub, Common& c) {
  sub->add_option("--backend", c.backend,
                  "Where the model computes: " + fmt::format("{}", fmt::join(backend_names(), ", ")) +
                      " (default: $MAMBAQ_BACKEND, else cpu = the widest cpu variant this CPU runs)");
}

void add_synthetic(CLI::App* sub, std::string& name, const std::string& why) {
  sub->add_option("--synthetic", name, why + fmt::format("{}", fmt::join(published_config_names(), ", ")));
}

std::shared_ptr<bool> add_force(CLI::App* sub) {
  auto force = std::make_shared<bool>(false);
  sub->add_flag("--force", *force, "Replace existing output files (without it, an existing file is refused)");
  return force;
}

void add_dtype(CLI::App* sub, Common& c) {
  sub->add_option("--dtype", c.dtype,
                  "The float weights' type on the backend: fp32 (default), bf16 or fp16 (mode fp32: the projections "
                  "and LM head in 16 bits, their inputs rounded to it, sums in fp32; for GPUs: the cpu backends run it "
                  "correctly but no faster)");
}

DType dtype_flag(const Common& c) {
  if (c.dtype.empty() || c.dtype == "fp32" || c.dtype == "f32" || c.dtype == "float32") return DType::F32;
  if (c.dtype == "bf16" || c.dtype == "bfloat16") return DType::BF16;
  if (c.dtype == "fp16" || c.dtype == "f16" || c.dtype == "float16") return DType::F16;
  fail("--dtype: '{}' is not a weight type (fp32, bf16 or fp16)", c.dtype);
}

Session make_session(const Model& m, const std::string& mode, const Common& c) {
  SessionOptions o;
  o.backend = c.backend;
  o.dtype = dtype_flag(c);
  if (!mode.empty()) o.mode = parse_mode(mode);
  return Session(m, o);
}

nlohmann::json parse_log_extra(const std::string& s) {
  if (s.empty()) return nlohmann::json::object();
  const nlohmann::json x = parse_json(s, "--log-extra");
  if (!x.is_object()) fail("--log-extra: must be a JSON object");
  return x;
}

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

}  // namespace mambaq::cli

int main(int argc, char** argv) {
  using namespace mambaq::cli;
  CLI::App app{"mambaq: load, run, evaluate and quantize Mamba and Mamba2 language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("mambaq ") + mambaq::version() + " (" + mambaq::git_describe() + ")");
  std::vector<std::pair<CLI::App*, Runner>> cmds;
  auto reg = [&](Runner r) { cmds.emplace_back(app.get_subcommands({}).back(), std::move(r)); };
  reg(register_info(app));
  reg(register_logits(app));
  reg(register_generate(app));
  reg(register_eval(app));
  reg(register_bench(app));
  reg(register_quantize(app));
  reg(register_logs(app));
  reg(register_verify_observer(app));
  reg(register_scales(app));
  reg(register_compare(app));
  reg(register_sweep(app));
  reg(register_report(app));
  reg(register_run(app));
  mambaq::set_command_line(argc, argv);
  std::vector<std::string> names;
  for (auto& [sub, run] : cmds) names.push_back(sub->get_name());
  // An unknown command: say so, with the nearest one (CLI11 would say "a subcommand is required").
  if (argc > 1 && argv[1][0] != '-' && std::find(names.begin(), names.end(), argv[1]) == names.end()) {
    const std::string near = closest(argv[1], names);
    std::cerr << "mambaq: error: unknown command '" << argv[1] << "'"
              << (near.empty() ? "" : " (did you mean '" + near + "'?)") << "; commands: " << fmt::format("{}", fmt::join(names, ", "))
              << "\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    // An unknown option: name it and the nearest option of that command.
    CLI::App* sub = nullptr;
    for (auto& [s2, run] : cmds)
      if (s2->parsed()) sub = s2;
    std::vector<std::string> opts;
    if (sub)
      for (const CLI::Option* op : sub->get_options())
        for (const auto& ln : op->get_lnames()) opts.push_back("--" + ln);
    std::string bad;
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      const std::string key = a.substr(0, a.find('='));
      if (a.rfind("--", 0) == 0 && std::find(opts.begin(), opts.end(), key) == opts.end()) {
        bad = key;
        break;
      }
    }
    if (!bad.empty()) {
      // Quamba's main.py flags that mambaq spells another way: what to write instead
      static const std::map<std::string, std::string> mainpy = {
          {"--quantize", "quantizing is the `mambaq quantize MODEL -o DIR` command itself; `mambaq run MODEL --quantize "
                         "...` takes main.py's flags as they are"},
          {"--eval_zero_shot", "evaluate with `mambaq eval DIR --tasks ...` (or `mambaq run ... --eval_zero_shot`)"},
          {"--eval_ppl", "add wikitext2 (or ppl:FILE) to eval's --tasks"},
          {"--task_list", "tasks are evaluated by `mambaq eval DIR --tasks ...` (or `mambaq run`)"},
          {"--pretrained_dir", "the output folder is -o DIR (main.py's PRETRAINED_DIR/SUBDIR/NAME is -o that path; "
                               "`mambaq run` builds it from --pretrained_dir and --output_subdir)"},
          {"--output_subdir", "the output folder is -o DIR (`mambaq run` takes --pretrained_dir and --output_subdir)"},
          {"--log_dir", "the experiment log is --log FILE; lm-eval's JSON is eval's --output-path DIR (`mambaq run` "
                        "takes --log_dir)"},
          {"--batch_size", "calibration runs its samples one by one (--calib-num, --calib-seqlen); eval takes "
                           "--batch_size"},
          {"--hybrid_blocks", "per-layer precisions are --layer-config FILE (a JSON list, as --hybrid_blocks_config)"},
          {"--hybrid_blocks_config", "per-layer precisions are --layer-config FILE"},
          {"--testing", "eval's --limit 100 does what main.py's --testing does"},
      };
      auto mp = mainpy.find(bad);
      if (mp != mainpy.end()) {
        std::cerr << "mambaq: error: " << (sub ? sub->get_name() + ": " : "") << bad << " is Quamba's main.py flag: "
                  << mp->second << "\n";
        return 2;
      }
      const std::string near = closest(bad, opts);
      std::cerr << "mambaq: error: " << (sub ? sub->get_name() + ": " : "") << "unknown option '" << bad << "'"
                << (near.empty() ? "" : " (did you mean '" + near + "'?)") << "\n";
      return 2;
    }
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line, like every other error (CLI11 adds a second "Run with --help" line).
    std::cerr << "mambaq: error: " << e.what() << "\n";
    return e.get_exit_code();
  }
  try {
    for (auto& [sub, run] : cmds)
      if (sub->parsed()) return run();
  } catch (const mambaq::OptionError& e) {
    // The library names its options (w_bits); say it as the flag the user typed (--w-bits).
    std::string msg = e.what();
    const std::string flag = "--" + std::string(e.option());
    std::string dashed = flag;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    if (msg.starts_with(e.option())) msg = dashed + msg.substr(e.option().size());
    std::cerr << "mambaq: error: " << msg << "\n";
    return 1;
  } catch (const mambaq::Error& e) {
    std::cerr << "mambaq: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "mambaq: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    // Not expected: every input error is a mambaq::Error naming its file or field. Say which
    // command met it, so that a report can be acted on.
    std::cerr << "mambaq: error: " << e.what() << " (an unexpected library error in `mambaq "
              << (argc > 1 ? argv[1] : "") << "`; please report it)\n";
    return 1;
  }
  return 0;
}
