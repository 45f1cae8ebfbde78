// mambaq quantize MODEL -o OUT --recipe quamba1: calibrate, quantize, save, log.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "analysis/explog.h"
#include "analysis/snapshot.h"
#include "cli/common.h"
#include "io/mmap_file.h"
#include "io/npz.h"
#include "core/stats.h"
#include "core/threads.h"
#include "mambaq/error.h"
#include "mambaq/version.h"
#include "quant/quantized.h"

namespace mambaq::cli {

namespace fs = std::filesystem;

// min / median / max of the scales of each kind of point (the log's calibration statistics)
nlohmann::json scale_stats(const Calibration& cal) {
  std::map<std::string, std::vector<double>> by;
  for (const auto& p : cal.points) by[p.point].push_back(p.scale);
  nlohmann::json j = nlohmann::json::object();
  for (auto& [k, v] : by)
    j[k] = {{"count", v.size()},
            {"min", *std::min_element(v.begin(), v.end())},
            {"median", median(v)},
            {"max", *std::max_element(v.begin(), v.end())}};
  return j;
}

Runner register_quantize(CLI::App& app) {
  struct Opts {
    std::string model, out, recipe = "quamba1", calib_data, pmode = "ema", gran = "tensor", log = "experiments.jsonl",
                       npz;
    int w_bits = 8, a_bits = 8, calib_num = 512, calib_seqlen = 512;
    double alpha = 0.9995;
    bool force = false, verbose = false, quiet = false, no_log = false;
    std::string log_extra;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("quantize", "Calibrate and quantize a model (Quamba W8A8), save it as a folder");
  sub->add_option("MODEL", o->model, "FP model folder")->required();
  sub->add_option("-o,--output", o->out, "Output folder (never overwritten without --force)")->required();
  sub->add_option("--recipe", o->recipe, "Quantization recipe (quamba1)")->capture_default_str();
  sub->add_option("--w-bits,--w_bits", o->w_bits, "Weight bits")->capture_default_str();
  sub->add_option("--a-bits,--a_bits", o->a_bits, "Activation bits")->capture_default_str();
  sub->add_option("--calib-data", o->calib_data,
                  "Calibration documents: JSONL with a \"text\" field, or raw text (default: <data-dir>/corpus/calib.jsonl)");
  sub->add_option("--calib-num,--calib_data_num", o->calib_num, "Calibration samples")->capture_default_str()->check(at_least(1));
  sub->add_option("--calib-seqlen,--calib_seqlen", o->calib_seqlen, "Tokens per calibration sample")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_option("--percentile-alpha,--percentile_alpha", o->alpha,
                  "Quantile of |x| the percentile observer clips at (SSM input and state); 1 = max")
      ->capture_default_str();
  sub->add_option("--percentile-mode", o->pmode,
                  "ema: per-sample quantile, moving average (the reference); exact: quantile over all values")
      ->capture_default_str();
  sub->add_option("--weight-granularity", o->gran, "Weight scales: tensor (the reference) or channel")
      ->capture_default_str();
  sub->add_option("--save-activations", o->npz,
                  "Write up to 10,000 sampled values of every observed tensor of layers 0-2 to FILE.npz");
  sub->add_option("--log", o->log, "Experiment log (JSONL, appended)")->capture_default_str();
  sub->add_flag("--no-log", o->no_log, "Do not append to the experiment log");
  sub->add_option("--log-extra", o->log_extra, "JSON object merged into the log record (e.g. by sweeps)");
  sub->add_flag("--force", o->force, "Overwrite the files of an existing output folder");
  sub->add_flag("-v,--verbose", o->verbose, "Print alpha, max and scale of every quantization point");
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  add_common(sub, o->c);
  return [o] {
    const auto t0 = std::chrono::steady_clock::now();
    apply_common(o->c);
    check_output_dir(o->out, "-o");
    check_output_file(o->npz, "--save-activations");
    check_output_file(o->log, "--log");
    const nlohmann::json extra = parse_log_extra(o->log_extra);
    // Every flag is checked before the (long) calibration starts.
    if (!(o->alpha > 0 && o->alpha <= 1)) fail("--percentile-alpha {} must be in (0, 1]", o->alpha);
    if (o->pmode != "ema" && o->pmode != "exact") fail("--percentile-mode '{}': expected ema or exact", o->pmode);
    if (o->gran != "tensor" && o->gran != "channel")
      fail("--weight-granularity '{}': expected tensor or channel", o->gran);
    if (fs::exists(o->out)) {
      std::error_code ec;
      if (fs::exists(o->model) && fs::equivalent(o->out, o->model, ec))
        fail("-o {}: is the input model's folder; choose another output folder", o->out);
      if (!o->force) fail("-o {}: already exists (use --force to overwrite its files)", o->out);
    }
    if (o->calib_data.empty()) o->calib_data = (fs::path(o->c.data_dir) / "corpus" / "calib.jsonl").string();
    QuantMeta meta;
    meta.recipe = o->recipe;
    meta.w_bits = o->w_bits;
    meta.a_bits = o->a_bits;
    meta.granularity = o->gran == "tensor" ? Granularity::Tensor : Granularity::Channel;
    meta.alpha = o->alpha;
    meta.pmode = o->pmode == "ema" ? PercentileMode::Ema : PercentileMode::Exact;
    if (!fs::is_regular_file(o->model)) recipe(meta.recipe).validate(load_config(o->model), meta);
    auto fp = Model::load(o->model);
    if (fp->is_quantized()) fail("{}: the model is already quantized", o->model);
    if (fp->config().arch == Arch::Mamba2 && o->recipe == "quamba1")
      fmt::print(stderr, "note: the reference implementation quantizes Mamba2 with the Quamba2 recipe; quamba1 applies "
                         "Quamba's W8A8 scheme to Mamba2's points (docs/quantize.md)\n");
    auto tok = load_tokenizer(o->model, o->c);
    const auto cs = make_calib_samples(*tok, o->calib_data, o->calib_seqlen, o->calib_num);
    fmt::print(stderr, "calibration: {} samples of up to {} tokens from {} ({} available in {} documents)\n",
               cs.samples.size(), o->calib_seqlen, o->calib_data, cs.available, cs.documents);
    CalibOptions co;
    co.alpha = o->alpha;
    co.mode = meta.pmode;
    co.recipe = meta.recipe;
    co.progress = !o->quiet;
    co.verbose = o->verbose;
    std::unique_ptr<SnapshotTap> snap;
    if (!o->npz.empty()) {
      snap = std::make_unique<SnapshotTap>(fp->config(), 3, 10000, 1234);
      co.extra = snap.get();
    }
    const auto tc = std::chrono::steady_clock::now();
    const Calibration cal = calibrate(*fp, cs, co);
    const double calib_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    meta.calib_file = o->calib_data;
    meta.calib_sha256 = sha256_file(o->calib_data);
    meta.calib_samples = cs.samples.size();
    meta.calib_available = cs.available;
    meta.calib_seqlen = o->calib_seqlen;
    meta.source_model = o->model;
    meta.version = std::string(version()) + " (" + git_describe() + ")";
    auto q = quantize_model(*fp, cal, meta);
    save_quantized(*q, o->out, find_tokenizer(o->model, o->c.data_dir));
    if (snap) save_npz(o->npz, snap->arrays());
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("quantized {} -> {} ({} W{}A{}, alpha {} {}, weights per {}): {:.1f} MiB -> {:.1f} MiB, {:.1f} s\n",
               o->model, o->out, o->recipe, o->w_bits, o->a_bits, o->alpha, o->pmode, o->gran,
               double(fp->weight_bytes()) / (1 << 20), double(q->weight_bytes()) / (1 << 20), wall);
    if (!o->no_log) {
      nlohmann::json r = log_header("quantize");
      r["model"] = o->model;
      r["output"] = o->out;
      r["recipe"] = o->recipe;
      r["flags"] = {{"recipe", o->recipe},           {"w_bits", o->w_bits},
                    {"a_bits", o->a_bits},           {"calib_data", o->calib_data},
                    {"calib_num", o->calib_num},     {"calib_seqlen", o->calib_seqlen},
                    {"percentile_alpha", o->alpha},  {"percentile_mode", o->pmode},
                    {"weight_granularity", o->gran}, {"threads", num_threads()}};
      r["calibration"] = {{"samples", cs.samples.size()}, {"available", cs.available},
                          {"documents", cs.documents},    {"seqlen", o->calib_seqlen},
                          {"sha256", meta.calib_sha256},  {"scales", scale_stats(cal)}};
      r["results"] = {{"calibrate_s", calib_s},
                      {"weight_mib_fp32", double(fp->weight_bytes()) / (1 << 20)},
                      {"weight_mib_quantized", double(q->weight_bytes()) / (1 << 20)}};
      r["wall_s"] = wall;
      r["peak_rss_mib"] = peak_rss_mib();
      r.update(extra);
      append_log(o->log, r);
    }
    return 0;
  };
}

}  // namespace mambaq::cli
