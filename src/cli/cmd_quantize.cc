// mambaq quantize MODEL -o OUT --recipe quamba1: calibrate, quantize, save, log.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "analysis/explog.h"
#include "analysis/snapshot.h"
#include "cli/common.h"
#include "io/json_file.h"
#include "io/mmap_file.h"
#include "io/npz.h"
#include "core/stats.h"
#include "core/threads.h"
#include "mambaq/error.h"
#include "mambaq/version.h"
#include "quant/quantized.h"
#include "quant/scale_rules.h"

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

// --layer-config: a JSON list with one precision per layer (or {"layers": [...]}).
std::vector<LayerPrecision> read_layer_config(const std::string& path) {
  if (!fs::exists(path)) fail("--layer-config {}: file not found", path);
  nlohmann::json j = read_json_file(path);
  if (j.is_object() && j.contains("layers")) j = j["layers"];
  if (!j.is_array() || j.empty())
    fail("--layer-config {}: expected a JSON list of layer precisions (\"W4A8\", \"W4A16\", \"W8A8\", \"FP16\")", path);
  std::vector<LayerPrecision> v;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string()) fail("--layer-config {}: entry {} is not a string", path, i);
    v.push_back(LayerPrecision::parse(j[i].get<std::string>(), fmt::format("--layer-config {}: layer {}", path, i)));
  }
  return v;
}

Runner register_quantize(CLI::App& app) {
  struct Opts {
    std::string model, out, recipe = "quamba1", calib_data, pmode = "ema", gran = "tensor", log = "experiments.jsonl",
                       npz, preset, gptq_data, layer_config, synthetic;
    int w_bits = 8, a_bits = 8, calib_num = 512, calib_seqlen = 512, group_size = 128, gptq_num = 128,
        gptq_seqlen = 512;
    double alpha = 0.9995, gptq_damp = 0.01;
    bool force = false, verbose = false, quiet = false, no_log = false, group_heads = false, gptq = false,
         q_embedding = false, q_lm_head = false, no_rotate = false, gptq_act_order = false, grouped_pct = false,
         dry_run = false;
    std::string log_extra;
    std::vector<std::string> overrides;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("quantize", "Calibrate and quantize a model (Quamba W8A8; Quamba2 W4A8, W4A16, W8A8), save it as a folder");
  sub->add_option("MODEL", o->model, "FP model folder (or --synthetic)");
  sub->add_option("--synthetic", o->synthetic,
                  "Quantize seeded random weights with the shapes of a published model (e.g. mamba-1.4b): for "
                  "measuring what a real size costs; calibrated on the calibration data as usual");
  sub->add_option("-o,--output", o->out, "Output folder (never overwritten without --force)")->required();
  sub->add_option("--recipe", o->recipe, "Quantization recipe: quamba1 (W8A8) or quamba2 (W4A8, W4A16, W8A8)")->capture_default_str();
  sub->add_option("--preset", o->preset,
                  "quamba2 as the reference's published commands: w8a8 (+ embedding, lm_head), w4a8 and w4a16 (+ GPTQ, "
                  "embedding, lm_head); Mamba2 with int8 activations also groups heads; implies --recipe quamba2");
  sub->add_option("--w-bits,--w_bits", o->w_bits, "Weight bits (quamba2: 4 or 8)")->capture_default_str();
  sub->add_option("--a-bits,--a_bits", o->a_bits, "Activation bits (quamba2: 8, or 16 = float activations)")->capture_default_str();
  sub->add_option("--group-size", o->group_size, "4-bit weights: input columns per scale")->capture_default_str()->check(at_least(32));
  sub->add_flag("--gptq,--apply_gptq", o->gptq, "GPTQ for in_proj and out_proj (and the LM head with --quantize-lm-head)");
  sub->add_option("--gptq-data", o->gptq_data, "GPTQ's documents (default: the calibration documents)");
  sub->add_option("--gptq-num", o->gptq_num, "GPTQ samples")->capture_default_str()->check(at_least(1));
  sub->add_option("--gptq-seqlen", o->gptq_seqlen, "Tokens per GPTQ sample")->capture_default_str()->check(at_least(1));
  sub->add_option("--gptq-damp", o->gptq_damp, "GPTQ damping, times the mean diagonal of the Hessian")->capture_default_str();
  sub->add_flag("--gptq-act-order", o->gptq_act_order, "GPTQ: columns in order of decreasing Hessian diagonal");
  sub->add_flag("--group-heads,--group_heads", o->group_heads, "quamba2: reorder and group Mamba2 heads (grouped scales)");
  sub->add_flag("--grouped-percentile", o->grouped_pct,
                "quamba2 with --group-heads: calibrate x and the SSM state with the percentile observer per block "
                "(--percentile-alpha) instead of min-max (the reference sets 0.99999 but never applies it)");
  sub->add_flag("--quantize-embedding,--quantize_embedding", o->q_embedding, "quamba2: embedding rows at the weight bits");
  sub->add_flag("--quantize-lm-head,--quantize_lm_head", o->q_lm_head, "quamba2: the LM head at the weight (and activation) bits");
  sub->add_flag("--no-residual-rotation", o->no_rotate, "quamba2: do not rotate the residual stream (ablation)");
  sub->add_option("--scale-override", o->overrides,
                  "Change activation scales at calibration, repeatable: POINT[@LAYERS]=*FACTOR, POINT[@LAYERS]=VALUE, "
                  "POINT[@LAYERS]=+C (add C to the clip value) or POINT[@LAYERS]:alpha=A (e.g. 'x_proj:input@0=*1.5', "
                  "'x_proj:input=+2025', 'ssm_state_act:input@0-3:alpha=1'); "
                  "recorded in the folder's config")
      ->take_all()
      ->allow_extra_args(false);
  sub->add_option("--layer-config", o->layer_config,
                  "quamba2: JSON list of one precision per layer (W4A8, W4A16, W8A8, FP16), like the reference's hybrid blocks");
  sub->add_option("--calib-data", o->calib_data,
                  "Calibration documents: JSONL with a \"text\" field, or raw text (default: <data-dir>/corpus/calib.jsonl)");
  sub->add_option("--calib-num,--calib_data_num", o->calib_num, "Calibration samples")->capture_default_str()->check(at_least(1));
  sub->add_option("--calib-seqlen,--calib_seqlen", o->calib_seqlen, "Tokens per calibration sample")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_option("--percentile-alpha,--percentile_alpha", o->alpha,
                  "Quantile of |x| the percentile observer clips at (SSM input and state); 1 = the max with "
                  "--percentile-mode exact, the moving average of each sample's max with ema")
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
  sub->add_flag("--force", o->force, "Replace the files of an existing output folder, and an existing --save-activations file");
  sub->add_flag("-v,--verbose", o->verbose, "Print alpha, max and scale of every quantization point");
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  sub->add_flag("--dry-run", o->dry_run,
                "Check every flag, print the settings the recipe will use as JSON (presets expanded, defaults filled, "
                "settings that cannot act left out) and stop: nothing is loaded or written");
  add_backend(sub, o->c);
  add_common(sub, o->c);
  return [o, sub] {
    const bool synth = !o->synthetic.empty();
    if (o->model.empty() == !synth) fail("quantize: give either MODEL or --synthetic NAME");
    if (synth) {
      (void)published_config(o->synthetic);  // an unknown name: the one error listing the known ones
      o->model = "synthetic:" + o->synthetic;
    }
    const auto t0 = std::chrono::steady_clock::now();
    apply_common(o->c);
    if (!o->dry_run) {  // a dry run writes nothing: its paths are checked by the run itself
      check_output_dir(o->out, "-o");
      check_new_output_file(o->npz, "--save-activations", o->force);
      if (!o->no_log) check_append_file(o->log, "--log");
    }
    const nlohmann::json extra = parse_log_extra(o->log_extra);
    // Every flag is checked before the (long) calibration starts.
    // recipe and preset names as people write them (Quamba2, W4A8), with the nearest known one
    auto known = [](std::string& v, const std::vector<std::string>& names, const char* flag) {
      std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      if (v.empty() || std::find(names.begin(), names.end(), v) != names.end()) return;
      const std::string near = closest(v, names);
      fail("{} '{}' is not in this build ({}{})", flag, v, fmt::join(names, ", "),
           near.empty() ? "" : fmt::format("; did you mean '{}'?", near));
    };
    known(o->recipe, recipe_names(), "--recipe");
    known(o->preset, {"w8a8", "w4a8", "w4a16"}, "--preset");
    if (!(o->alpha > 0 && o->alpha <= 1)) fail("--percentile-alpha {} must be in (0, 1]", o->alpha);
    if (o->pmode != "ema" && o->pmode != "exact") fail("--percentile-mode '{}': expected ema or exact", o->pmode);
    if (o->gran != "tensor" && o->gran != "channel")
      fail("--weight-granularity '{}': expected tensor or channel", o->gran);
    if (!o->preset.empty()) {  // the reference's eval.sh (quamba2.md §1); applied below
      if (o->recipe != "quamba1" && o->recipe != "quamba2") fail("--preset {} is a quamba2 preset, not {}", o->preset, o->recipe);
      o->recipe = "quamba2";
    }
    if (o->recipe != "quamba2" && (o->group_heads || o->grouped_pct || o->q_embedding || o->q_lm_head || o->no_rotate || !o->layer_config.empty()))
      fail("--group-heads, --quantize-embedding, --quantize-lm-head, --no-residual-rotation and --layer-config are "
           "quamba2 options (add --recipe quamba2)");
    if (!(o->gptq_damp > 0)) fail("--gptq-damp {} must be positive", o->gptq_damp);
    if (fs::exists(o->out) && !o->dry_run) {
      std::error_code ec;
      if (!synth && fs::exists(o->model) && fs::equivalent(o->out, o->model, ec))
        fail("-o {}: is the input model's folder; choose another output folder", o->out);
      if (!o->force) fail("-o {}: already exists (use --force to overwrite its files)", o->out);
    }
    if (o->calib_data.empty()) o->calib_data = (fs::path(o->c.data_dir) / "corpus" / "calib.jsonl").string();
    QuantMeta meta;
    meta.recipe = o->recipe;
    meta.preset = o->preset;
    meta.w_bits = o->w_bits;
    meta.a_bits = o->a_bits;
    meta.granularity = o->gran == "tensor" ? Granularity::Tensor : Granularity::Channel;
    if (o->recipe == "quamba2") meta.granularity = o->w_bits == 4 ? Granularity::Group : Granularity::Tensor;
    meta.alpha = o->alpha;
    meta.pmode = o->pmode == "ema" ? PercentileMode::Ema : PercentileMode::Exact;
    meta.group_size = o->group_size;
    meta.rotate_residual = o->recipe == "quamba2" && !o->no_rotate;
    meta.group_heads = o->group_heads;
    meta.grouped_percentile = o->grouped_pct;
    meta.quantize_embedding = o->q_embedding;
    meta.quantize_lm_head = o->q_lm_head;
    meta.gptq = o->gptq;
    meta.gptq_opts.num = o->gptq_num;
    meta.gptq_opts.seqlen = o->gptq_seqlen;
    meta.gptq_opts.damp = o->gptq_damp;
    meta.gptq_opts.act_order = o->gptq_act_order;
    if (!o->layer_config.empty()) meta.layers = read_layer_config(o->layer_config);
    if (synth || !fs::is_regular_file(o->model)) {
      const ModelConfig mc = synth ? published_config(o->synthetic) : load_config(o->model);
      if (!o->preset.empty()) {
        apply_quamba2_preset(meta, o->preset, mc);
        meta.rotate_residual = !o->no_rotate;
        o->w_bits = meta.w_bits, o->a_bits = meta.a_bits, o->gptq = meta.gptq, o->group_heads = meta.group_heads;
        o->q_embedding = meta.quantize_embedding, o->q_lm_head = meta.quantize_lm_head;
      }
      recipe(meta.recipe).validate(mc, meta);
    }
    // settings the rest of the recipe leaves without effect: said now, and recorded as not applied
    std::vector<std::string> given;
    for (const CLI::Option* opt : sub->get_options())
      if (opt->count() > 0 && !opt->get_lnames().empty()) given.push_back(opt->get_lnames()[0]);
    if (o->alpha == 1.0 && meta.pmode == PercentileMode::Ema && meta.any_a8() && !meta.not_applied.count("percentile-alpha") &&
        !inert_settings(meta, {"percentile-alpha"}).size())
      fmt::print(stderr, "note: --percentile-alpha 1 in ema mode (the reference's observer) is the moving average of each "
                         "sample's max |x|, below the largest one, so it still clips; --percentile-mode exact gives the "
                         "maximum over all samples\n");
    for (const auto& [flag, why] : inert_settings(meta, given)) {
      fmt::print(stderr, "note: --{} has no effect here: {}\n", flag, why);
      meta.not_applied[flag] = why;
    }
    if (o->gptq) {
      if (o->gptq_data.empty()) o->gptq_data = o->calib_data;
      if (!fs::exists(o->gptq_data)) fail("--gptq-data {}: file not found", o->gptq_data);
    }
    if (meta.any_a8() && !fs::exists(o->calib_data)) fail("--calib-data {}: file not found", o->calib_data);
    if (o->dry_run) {
      // what this run would do: every setting's value after the preset, defaults included, less
      // those that cannot act (two runs with equal "effective" quantize the same way: sweeps use it)
      nlohmann::json eff = {{"recipe", meta.recipe}, {"w-bits", meta.w_bits}, {"a-bits", meta.a_bits},
                            {"weight-granularity", o->gran}, {"group-size", o->group_size},
                            {"percentile-alpha", o->alpha}, {"percentile-mode", o->pmode},
                            {"calib-data", o->calib_data}, {"calib-num", o->calib_num},
                            {"calib-seqlen", o->calib_seqlen}, {"gptq", meta.gptq},
                            {"gptq-data", o->gptq_data.empty() ? o->calib_data : o->gptq_data},
                            {"gptq-num", o->gptq_num}, {"gptq-seqlen", o->gptq_seqlen}, {"gptq-damp", o->gptq_damp},
                            {"gptq-act-order", o->gptq_act_order}, {"group-heads", meta.group_heads},
                            {"grouped-percentile", meta.grouped_percentile},
                            {"quantize-embedding", meta.quantize_embedding},
                            {"quantize-lm-head", meta.quantize_lm_head}, {"residual-rotation", meta.rotate_residual},
                            {"scale-override", o->overrides}};
      if (!meta.layers.empty()) {
        nlohmann::json lc = nlohmann::json::array();
        for (const auto& l : meta.layers) lc.push_back(l.name());
        eff["layer-config"] = lc;
      }
      std::vector<std::string> keys;
      for (auto& [k, v] : eff.items()) keys.push_back(k);
      for (const auto& [flag, why] : inert_settings(meta, keys)) eff.erase(flag);
      nlohmann::json j = {{"model", o->model}, {"effective", eff}, {"not_applied", meta.not_applied}};
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    auto fp = synth ? Model::random(published_config(o->synthetic), 1) : Model::load(o->model);
    if (fp->is_quantized()) fail("{}: the model is already quantized", o->model);
    for (const auto& t : o->overrides) parse_scale_rule(t, fp->config(), "--scale-override");  // before calibrating
    if (fp->config().arch == Arch::Mamba2 && o->recipe == "quamba1")
      fmt::print(stderr, "note: the reference implementation quantizes Mamba2 with the Quamba2 recipe; quamba1 applies "
                         "Quamba's W8A8 scheme to Mamba2's points (docs/quantize.md)\n");
    auto tok = load_tokenizer(o->model, o->c);
    CalibSamples cs;
    if (meta.any_a8()) {
      cs = make_calib_samples(*tok, o->calib_data, o->calib_seqlen, o->calib_num);
      fmt::print(stderr, "calibration: {} samples of up to {} tokens from {} ({} available in {} documents)\n",
                 cs.samples.size(), o->calib_seqlen, o->calib_data, cs.available, cs.documents);
    } else {
      fmt::print(stderr, "calibration: none (activations stay in float)\n");
    }
    QuantizeInputs qi;
    if (o->gptq) {
      const auto gs = make_calib_samples(*tok, o->gptq_data, o->gptq_seqlen, o->gptq_num, "gptq_data");
      qi.gptq_samples = gs.samples;
      meta.gptq_opts.file = o->gptq_data;
      meta.gptq_opts.sha256 = sha256_file(o->gptq_data);
      meta.gptq_opts.num = int(gs.samples.size());
      fmt::print(stderr, "gptq: {} samples of up to {} tokens from {}\n", gs.samples.size(), o->gptq_seqlen, o->gptq_data);
    }
    if (o->verbose && o->recipe == "quamba2")
      fmt::print(stderr, "note: {}; the reference's Quamba2 sets alpha 0.99999 but never applies it (docs/quamba2.md)\n",
                 !meta.group_heads ? fmt::format("the percentile observer (alpha {}) calibrates x after the conv and the "
                                                 "SSM state, as the reference's non-grouped Mamba2 path", o->alpha)
                 : meta.grouped_percentile ? fmt::format("x and the SSM state are calibrated per head/dim group with the "
                                                         "percentile observer (alpha {})", o->alpha)
                                           : std::string("with grouped heads every observer is min-max (as the "
                                                         "reference); --grouped-percentile applies alpha per block"));
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
    if (meta.any_a8()) {
      meta.calib_file = o->calib_data;
      meta.calib_sha256 = sha256_file(o->calib_data);
      meta.calib_samples = cs.samples.size();
      meta.calib_available = cs.available;
      meta.calib_seqlen = o->calib_seqlen;
    }
    meta.source_model = o->model;
    meta.version = std::string(version()) + " (" + git_describe() + ")";
    meta.scale_overrides = o->overrides;
    qi.calib = &cs;
    qi.calib_opts = co;
    qi.calib_opts.backend = o->c.backend;
    qi.gptq.damp = o->gptq_damp;
    qi.gptq.act_order = o->gptq_act_order;
    qi.progress = !o->quiet;
    auto res = quantize(*fp, meta, qi);
    // what each --scale-override changed, old -> new per point (the verbose listing above is the
    // calibration's, before them)
    for (const auto& r : res.overrides)
      for (size_t i = 0; i < r["layers"].size(); ++i)
        fmt::print(stderr, "override '{}': layer {} {} scale {:.6g} -> {:.6g}\n", r["rule"].get<std::string>(),
                   r["layers"][i].get<int>(), r["point"].get<std::string>(), r["old"][i].get<double>(),
                   r["new"][i].get<double>());
    const Calibration& cal = res.calibration;
    const double calib_s = res.calibrate_s;
    auto& q = res.model;
    save_quantized(*q, o->out, find_tokenizer(o->model, o->c.data_dir));
    if (snap) save_npz(o->npz, snap->arrays());
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string wdesc = o->recipe == "quamba2"
                                  ? (o->w_bits == 4 ? fmt::format("weights 4-bit g{}", o->group_size) : "weights per tensor/split") +
                                        std::string(o->gptq ? " gptq" : "") + (o->q_embedding ? " +embedding" : "") +
                                        (o->q_lm_head ? " +lm_head" : "")
                                  : fmt::format("weights per {}{}", o->gran, o->gptq ? " gptq" : "");
    const std::string obs = !meta.any_a8()                                 ? "activations float"
                            : meta.group_heads && !meta.grouped_percentile ? "grouped min-max"
                                                                           : fmt::format("alpha {} {}", o->alpha, o->pmode);
    fmt::print("quantized {} -> {} ({} W{}A{}, {}, {}): {:.1f} MiB -> {:.1f} MiB, {:.1f} s\n", o->model, o->out,
               o->recipe, o->w_bits, o->a_bits, obs, wdesc, double(decode_weight_bytes(*fp)) / (1 << 20),
               double(decode_weight_bytes(*q)) / (1 << 20), wall);
    {  // the large tensors that stay in float, and why (what makes a folder larger than its model)
      const ModelWeights& qw = q->weights();
      auto is_float = [](const QTensor& t) { return t.format == WFormat::F32 || t.format == WFormat::F16 || t.format == WFormat::BF16; };
      auto mib = [](const QTensor& t) { return double(t.bytes()) / (1 << 20); };
      std::vector<std::string> kept;
      if (is_float(qw.embedding))
        kept.push_back(fmt::format("embedding {:.1f} MiB ({})", mib(qw.embedding),
                                   o->recipe == "quamba1" ? "Quamba keeps it" : "--quantize-embedding quantizes it"));
      if (!qw.tied() && is_float(qw.lm_head))
        kept.push_back(fmt::format(
            "lm_head {:.1f} MiB, stored apart from the embedding ({}; --quantize-lm-head quantizes it)", mib(qw.lm_head),
            meta.rotate_residual && fp->weights().tied()
                ? "the residual rotation folds the final norm's weight into it, so it is no longer the embedding"
                : "the checkpoint's own"));
      if (!kept.empty()) fmt::print(stderr, "kept in float: {}\n", fmt::join(kept, "; "));
    }
    if (!o->no_log) {
      nlohmann::json r = log_header("quantize");
      r["model"] = o->model;
      r["output"] = o->out;
      r["output_id"] = model_identity(o->out);
      r["recipe"] = o->recipe;
      r["flags"] = {{"recipe", o->recipe},           {"w_bits", o->w_bits},
                    {"a_bits", o->a_bits},           {"calib_data", o->calib_data},
                    {"calib_num", o->calib_num},     {"calib_seqlen", o->calib_seqlen},
                    {"percentile_alpha", o->alpha},  {"percentile_mode", o->pmode},
                    {"weight_granularity", o->gran}, {"threads", num_threads()}};
      if (o->recipe == "quamba2" || o->gptq) {
        r["flags"]["preset"] = o->preset;
        r["flags"]["group_size"] = o->group_size;
        r["flags"]["gptq"] = o->gptq;
        r["flags"]["group_heads"] = o->group_heads;
        r["flags"]["grouped_percentile"] = o->grouped_pct;
        r["flags"]["quantize_embedding"] = o->q_embedding;
        r["flags"]["quantize_lm_head"] = o->q_lm_head;
        r["flags"]["rotate_residual"] = meta.rotate_residual;
        if (!o->layer_config.empty()) r["flags"]["layer_config"] = o->layer_config;
        if (o->gptq) r["flags"]["gptq_data"] = o->gptq_data, r["flags"]["gptq_num"] = o->gptq_num,
                     r["flags"]["gptq_seqlen"] = o->gptq_seqlen;
      }
      if (!o->overrides.empty()) r["flags"]["scale_override"] = o->overrides;
      if (!meta.not_applied.empty()) r["not_applied"] = meta.not_applied;
      if (!res.overrides.empty()) r["scale_overrides"] = res.overrides;
      r["calibration"] = {{"samples", cs.samples.size()}, {"available", cs.available},
                          {"documents", cs.documents},    {"seqlen", o->calib_seqlen},
                          {"sha256", meta.calib_sha256},  {"scales", scale_stats(cal)}};
      nlohmann::json clip = nlohmann::json::array();  // what each percentile point's clip cuts off
      for (const auto& c : cal.clipping)
        clip.push_back({{"layer", c.layer}, {"point", c.point}, {"raw_max", c.stats.raw_max}, {"clip", c.stats.clip},
                        {"share_clipped", c.stats.share_clipped}, {"values", c.stats.values}});
      r["calibration"]["clipping"] = clip;
      r["results"] = {{"calibrate_s", calib_s},
                      {"gptq_s", res.gptq_s},
                      {"weight_mib_fp32", double(decode_weight_bytes(*fp)) / (1 << 20)},
                      {"weight_mib_quantized", double(decode_weight_bytes(*q)) / (1 << 20)}};
      r["wall_s"] = wall;
      r["peak_rss_mib"] = peak_rss_mib();
      r.update(extra);
      append_log(o->log, r);
    }
    return 0;
  };
}

}  // namespace mambaq::cli
