// mambaq compare --ref MODEL --cand MODEL: where does the candidate (e.g. W8A8 int8) depart from
// the reference (FP32), layer by layer?
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "analysis/compare.h"
#include "cli/common.h"
#include "core/stats.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "quant/calibrate.h"

namespace mambaq::cli {

namespace fs = std::filesystem;

Runner register_compare(CLI::App& app) {
  struct Opts {
    std::string ref, ref_mode = "fp32", cand_mode, cand_modes, data, layers = "0,-1", json, save_dir, fp_ops;
    std::vector<std::string> cands;
    int samples = 4, seqlen = 256, hist_bins = 100;
    bool quiet = false, per_sample = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("compare", "Compare runs layer by layer against a reference (e.g. FP32 vs W8A8 int8)");
  sub->add_option("--ref", o->ref, "Reference model folder")->required();
  sub->add_option("--ref-mode", o->ref_mode, "Execution mode of the reference")->capture_default_str();
  sub->add_option("--cand", o->cands, "Candidate model folder (repeat for several: --cand A --cand B)")->required();
  sub->add_option("--cand-mode", o->cand_mode, "Execution mode of the candidates (default: each its own)");
  sub->add_option("--cand-modes", o->cand_modes, "Several candidate modes against one reference, e.g. int8,fake,fake+fp-ops=ssm (eval's spellings)");
  sub->add_option("--data", o->data, "Text to run (JSONL with \"text\" or raw; default <data-dir>/corpus/heldout.txt)");
  sub->add_option("--samples", o->samples, "Samples")->capture_default_str()->check(at_least(1));
  sub->add_option("--seqlen", o->seqlen, "Tokens per sample")->capture_default_str()->check(at_least(1));
  sub->add_option("--layers", o->layers, "Layers to compare: 0,11,-1 or all")->capture_default_str();
  sub->add_option("--fp-ops", o->fp_ops,
                  "Keep these op kinds in FP32 in the fake-mode candidate (linear, conv, ssm, norm, hadamard, head; "
                  "linear/conv/hadamard take the --ref FP model's weights; docs/analysis.md): how much error does the "
                  "rest add?");
  sub->add_option("--json", o->json, "Write the statistics as JSON to FILE ('-' = stdout)");
  auto force = add_force(sub);
  sub->add_option("--save-dir", o->save_dir,
                  "Keep every run's arrays (.npy per layer and tensor, logits) in one folder per run, named by the "
                  "model's identity, mode and fp-ops; a run saved there for the same inputs is reused, one saved for "
                  "other inputs is recomputed");
  sub->add_option("--hist-bins", o->hist_bins, "Bins of each difference histogram (JSON, report)")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_flag("--per-sample", o->per_sample, "Also print the statistics of every sample (always in --json)");
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  add_backend(sub, o->c);
  add_common(sub, o->c);
  return [o, force] {
    apply_common(o->c);
    check_new_output_file(o->json, "--json", *force);
    if (!o->save_dir.empty()) check_output_dir(o->save_dir, "--save-dir");
    if (o->data.empty()) o->data = (fs::path(o->c.data_dir) / "corpus" / "heldout.txt").string();
    auto ref = Model::load(o->ref);
    std::vector<std::unique_ptr<Model>> owned;
    std::vector<const Model*> cands;
    for (const auto& c : o->cands) {
      owned.push_back(Model::load(c));
      cands.push_back(owned.back().get());
    }
    CompareSpec spec;
    spec.ref_path = o->ref;
    spec.cand_paths = o->cands;
    spec.ref_mode = mode_name(parse_mode(o->ref_mode));
    spec.backend = o->c.backend;
    for (const auto& t : split_list(o->cand_modes.empty() ? o->cand_mode : o->cand_modes))
      spec.modes.push_back(t);  // fp32, fake, int8 or fake+fp-ops=OP:OP (checked by compare_models)
    spec.fp_ops = parse_fp_ops(o->fp_ops);
    spec.data_file = o->data;
    spec.seqlen = o->seqlen;
    spec.layers = parse_layers(o->layers, ref->config().n_layer);
    spec.save_dir = o->save_dir;
    spec.hist_bins = o->hist_bins;
    spec.progress = !o->quiet;
    auto tok = load_tokenizer(o->ref, o->c);
    const CalibSamples cs = make_calib_samples(*tok, o->data, o->seqlen, o->samples, "data");
    const std::vector<CompareRun> runs = compare_models(*ref, cands, spec, cs.samples);

    const std::string rmode = spec.ref_mode;
    for (const auto& run : runs) {
      fmt::print("\n{} vs {} ({}), {} samples x {} tokens\n", run.label, o->ref, rmode, cs.samples.size(),
                 o->seqlen);
      fmt::print("{:>5} {:<9} {:>11} {:>10} {:>10} {:>9} {:>10} {:>10} {:>10}  {}\n", "layer", "tensor", "MSE", "RMSE",
                 "MAE", "relMAE", "corr", "p99|d|", "max|d|", "quality (relMAE)");
      for (const auto& l : run.layers) {
        const TensorStats& s = l.stats;
        fmt::print("{:>5} {:<9} {:>11.4e} {:>10.4g} {:>10.4g} {:>8.3f}% {:>10.6f} {:>10.4g} {:>10.4g}  {}\n",
                   l.layer, l.tensor, s.mse, s.rmse, s.mae, 100 * s.rel_mae, s.corr, s.p99, s.max_abs,
                   rel_mae_band(s.rel_mae));
      }
      fmt::print("logits: mean KL(ref || cand) {:.6g}, top-1 agreement {:.4f} ({} positions)\n", run.logits.kl(),
                 run.logits.top1(), run.logits.rows);
      if (o->per_sample) {
        const LayerResult& last = run.layers[run.layers.size() - 2];  // block_out of the last layer
        fmt::print("{:>6} {:>7} {:>11} {:>8} {:>16} {:>10}   (block_out of layer {})\n", "sample", "tokens", "KL", "top-1",
                   "MSE", "corr", last.layer);
        for (size_t i = 0; i < run.logits_per_sample.size(); ++i)
          fmt::print("{:>6} {:>7} {:>11.4g} {:>8.4f} {:>16.4e} {:>10.6f}\n", i, run.logits_per_sample[i].rows,
                     run.logits_per_sample[i].kl(), run.logits_per_sample[i].top1(), last.per_sample[i].mse,
                     last.per_sample[i].corr);
      }
    }
    if (runs.size() > 1) {
      const int first = *spec.layers.begin(), last = *spec.layers.rbegin();
      size_t w = 9;
      for (const auto& r : runs) w = std::max(w, r.label.size());
      fmt::print("\n{:<{}} {:>12} {:>12} {:>14} {:>14} {:>10} {:>10} {:>8}   (block_out of layers {} and {})\n", "candidate",
                 w, "first MSE", "first MAE", "last MSE", "last MAE", "avg corr", "KL", "top-1", first, last);
      for (const auto& r : runs) {
        const TensorStats *f = nullptr, *l = nullptr;
        double corr = 0;
        int n = 0;
        for (const auto& x : r.layers)
          if (x.tensor == "block_out") {
            if (x.layer == first) f = &x.stats;
            if (x.layer == last) l = &x.stats;
            corr += x.stats.corr, ++n;
          }
        fmt::print("{:<{}} {:>12.4e} {:>12.4g} {:>14.4e} {:>14.4g} {:>10.6f} {:>10.4g} {:>8.4f}\n", r.label, w, f->mse,
                   f->mae, l->mse, l->mae, corr / n, r.logits.kl(), r.logits.top1());
      }
    }
    if (!o->json.empty()) {
      nlohmann::json jr = nlohmann::json::array();
      for (const auto& r : runs) jr.push_back(r.to_json());
      std::vector<size_t> toks;
      for (const auto& s : cs.samples) toks.push_back(s.size());
      nlohmann::json j = {{"ref", o->ref},          {"ref_mode", rmode},      {"cands", o->cands},
                          {"data", o->data},        {"samples", cs.samples.size()}, {"seqlen", o->seqlen},
                          {"sample_tokens", toks},  {"save_dir", o->save_dir}, {"runs", jr}};
      // the first run also at the top level (the shape of files written before --cand was repeatable)
      j["cand"] = jr[0]["cand"];
      j["cand_mode"] = jr[0]["mode"];
      j["layers"] = jr[0]["layers"];
      j["logits"] = jr[0]["logits"];
      j["reference_reused"] = jr[0]["reference_reused"];
      write_json(o->json, j);
    }
    return 0;
  };
}

}  // namespace mambaq::cli
