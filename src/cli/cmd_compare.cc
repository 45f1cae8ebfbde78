// mambaq compare --ref MODEL --cand MODEL: where does the candidate (e.g. W8A8 int8) depart from
// the reference (FP32), layer by layer?
#include <fmt/format.h>

#include <filesystem>
#include <sstream>

#include "analysis/compare.h"
#include "cli/common.h"
#include "io/mmap_file.h"
#include "io/npz.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/checkpoint.h"
#include "quant/calibrate.h"
#include "quant/quantized.h"

namespace mambaq::cli {

namespace fs = std::filesystem;

Runner register_compare(CLI::App& app) {
  struct Opts {
    std::string ref, ref_mode = "fp32", cand, cand_mode, cand_modes, data, layers = "0,-1", json, save_dir, fp_ops;
    int samples = 4, seqlen = 256;
    bool quiet = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("compare", "Compare two runs layer by layer (e.g. FP32 vs W8A8 int8)");
  sub->add_option("--ref", o->ref, "Reference model folder")->required();
  sub->add_option("--ref-mode", o->ref_mode, "Execution mode of the reference")->capture_default_str();
  sub->add_option("--cand", o->cand, "Candidate model folder")->required();
  sub->add_option("--cand-mode", o->cand_mode, "Execution mode of the candidate (default: its own)");
  sub->add_option("--cand-modes", o->cand_modes, "Several candidate modes against one reference, e.g. int8,fake,fp32");
  sub->add_option("--data", o->data, "Text to run (JSONL with \"text\" or raw; default <data-dir>/corpus/heldout.txt)");
  sub->add_option("--samples", o->samples, "Samples")->capture_default_str()->check(at_least(1));
  sub->add_option("--seqlen", o->seqlen, "Tokens per sample")->capture_default_str()->check(at_least(1));
  sub->add_option("--layers", o->layers, "Layers to compare: 0,11,-1 or all")->capture_default_str();
  sub->add_option("--fp-ops", o->fp_ops,
                  "Keep these op kinds in FP32 in the fake-mode candidate (linear, conv, ssm, norm, hadamard, head; "
                  "linear/conv/hadamard take the --ref FP model's weights; docs/analysis.md): how much error does the "
                  "rest add?");
  sub->add_option("--json", o->json, "Write the statistics as JSON to FILE ('-' = stdout)");
  sub->add_option("--save-dir", o->save_dir,
                  "Write .npy per layer, tensor and mode; a reference saved there for the same inputs is reused");
  sub->add_flag("-q,--quiet", o->quiet, "No progress bar");
  add_common(sub, o->c);
  return [o] {
    apply_common(o->c);
    check_output_file(o->json, "--json");
    if (!o->save_dir.empty()) check_output_dir(o->save_dir, "--save-dir");
    if (o->data.empty()) o->data = (fs::path(o->c.data_dir) / "corpus" / "heldout.txt").string();
    auto ref = load_model(o->ref, o->ref_mode);
    auto cand = Model::load(o->cand);
    std::string basis;
    if (cand->is_quantized() && changes_basis(*cand->quantized()) && !ref->is_quantized()) {
      // Quamba2 rotates the residual stream (and reorders heads): the FP reference runs in the same
      // basis, so that layer outputs correspond (logits are unchanged by it)
      const ExecMode rm = ref->mode();
      ref = fp_in_quantized_basis(*ref, *cand->quantized());
      ref->set_mode(rm);
      basis = cand->quantized()->meta.group_heads ? "rotated+reordered" : "rotated";
      fmt::print(stderr, "reference: {} in the candidate's basis ({} by the {} recipe)\n", o->ref, basis,
                 cand->quantized()->meta.recipe);
      if (cand->quantized()->meta.group_heads) basis += ":" + sha256_file(find_weights_file(o->cand));
    }
    const auto& rc = ref->config();
    const auto& cc = cand->config();
    if (rc.arch != cc.arch || rc.n_layer != cc.n_layer || rc.d_model != cc.d_model || rc.padded_vocab != cc.padded_vocab)
      fail("--ref {} and --cand {} have different shapes ({} layers x d_model {}, vocab {} vs {} x {}, {})", o->ref,
           o->cand, rc.n_layer, rc.d_model, rc.padded_vocab, cc.n_layer, cc.d_model, cc.padded_vocab);
    std::vector<std::string> modes;
    std::stringstream ss(o->cand_modes.empty() ? o->cand_mode : o->cand_modes);
    for (std::string t; std::getline(ss, t, ',');)
      if (!t.empty()) modes.push_back(mode_name(parse_mode(t)));
    if (modes.empty()) modes.push_back(mode_name(cand->mode()));
    const unsigned fp_ops = parse_fp_ops(o->fp_ops);
    if ((fp_ops & (kFpLinear | kFpConv)) && ref->is_quantized())
      fail("--fp-ops {}: keeping linear/conv in FP32 needs the FP model's weights: --ref {} is quantized, give the "
           "FP model it was made from",
           fp_ops_str(fp_ops), o->ref);
    if (fp_ops)
      for (const auto& m : modes)
        if (m != "fake") fail("--fp-ops runs in the fake-quant simulation: use --cand-mode fake (not {})", m);
    for (const auto& m : modes)
      if (m != "fp32" && !cand->is_quantized())
        fail("--cand-mode {}: {} is not quantized (make one with `mambaq quantize`, or use fp32)", m, o->cand);
    for (const auto& m : modes) {  // every candidate plan can be built, before the long runs
      Model probe(*cand);
      probe.set_mode(parse_mode(m));
      probe.set_fp_ops(fp_ops, ref.get());
    }
    const std::set<int> layers = parse_layers(o->layers, rc.n_layer);
    auto tok = load_tokenizer(o->ref, o->c);
    const CalibSamples cs = make_calib_samples(*tok, o->data, o->seqlen, o->samples, "data");
    const int V = rc.padded_vocab;

    // The reference: reused from --save-dir when it was saved there for exactly these inputs.
    bool reused = false;
    const RunCapture R =
        reference_run(*ref, {o->ref, o->data, o->seqlen, o->save_dir, basis}, cs.samples, layers, !o->quiet, &reused);
    if (reused) fmt::print(stderr, "reference reused from {}\n", o->save_dir);
    const std::string rmode = mode_name(ref->mode());

    nlohmann::json jmodes = nlohmann::json::array();
    struct Summary {
      std::string mode;
      double l0_mse, l0_mae, last_mse, last_mae, avg_corr, kl, top1;
    };
    std::vector<Summary> sums;
    for (const auto& mode : modes) {
      Model m(*cand);
      m.set_mode(parse_mode(mode));
      m.set_fp_ops(fp_ops, ref.get());
      const RunCapture C = run_capture(m, cs.samples, layers, "cand " + mode, !o->quiet);
      LogitStats ls;
      ls.add(R.logits.data(), C.logits.data(), int(R.logits.size() / size_t(V)), V);
      fmt::print("\n{} ({}{}) vs {} ({}), {} samples x {} tokens\n", o->cand, mode,
                 fp_ops ? ", FP32: " + fp_ops_str(fp_ops) : "", o->ref, rmode, cs.samples.size(), o->seqlen);
      fmt::print("{:>5} {:<9} {:>11} {:>10} {:>10} {:>9} {:>10} {:>10} {:>10}  {}\n", "layer", "tensor", "MSE", "RMSE",
                 "MAE", "relMAE", "corr", "p99|d|", "max|d|", "quality (MSE / corr / relMAE)");
      nlohmann::json jl = nlohmann::json::array();
      Summary su{mode, 0, 0, 0, 0, 0, ls.kl(), ls.top1()};
      double corr_sum = 0;
      int corr_n = 0;
      for (const auto& [k, rv] : R.layers) {
        const auto& cv = C.layers.at(k);
        const TensorStats s = compare_tensors(rv.data(), cv.data(), rv.size());
        fmt::print("{:>5} {:<9} {:>11.4e} {:>10.4g} {:>10.4g} {:>8.3f}% {:>10.6f} {:>10.4g} {:>10.4g}  {} / {} / {}\n",
                   k.first, k.second, s.mse, s.rmse, s.mae, 100 * s.rel_mae, s.corr, s.p99, s.max_abs,
                   mse_band(s.mse), corr_band(s.corr), rel_mae_band(s.rel_mae));
        nlohmann::json j = s.to_json();
        j["layer"] = k.first;
        j["tensor"] = k.second;
        jl.push_back(j);
        if (k.second == "block_out") {
          if (k.first == *layers.begin()) su.l0_mse = s.mse, su.l0_mae = s.mae;
          if (k.first == *layers.rbegin()) su.last_mse = s.mse, su.last_mae = s.mae;
          corr_sum += s.corr;
          ++corr_n;
        }
        if (!o->save_dir.empty())
          save_npy((fs::path(o->save_dir) / npy_name("cand", mode, k.first, k.second)).string(), cv,
                   {cv.size() / size_t(rc.d_model), size_t(rc.d_model)});
      }
      su.avg_corr = corr_n ? corr_sum / corr_n : 0;
      fmt::print("logits: mean KL(ref || cand) {:.6g}, top-1 agreement {:.4f} ({} positions)\n", ls.kl(), ls.top1(),
                 ls.rows);
      jmodes.push_back({{"mode", mode}, {"fp_ops", fp_ops_str(fp_ops)}, {"layers", jl}, {"logits", {{"kl", ls.kl()}, {"top1", ls.top1()},
                                                                   {"positions", ls.rows}}}});
      sums.push_back(su);
    }
    if (sums.size() > 1) {
      fmt::print("\n{:<6} {:>12} {:>12} {:>14} {:>14} {:>10} {:>10} {:>8}   (block_out of layers {} and {})\n", "mode",
                 "first MSE", "first MAE", "last MSE", "last MAE", "avg corr", "KL", "top-1", *layers.begin(),
                 *layers.rbegin());
      for (const auto& s : sums)
        fmt::print("{:<6} {:>12.4e} {:>12.4g} {:>14.4e} {:>14.4g} {:>10.6f} {:>10.4g} {:>8.4f}\n", s.mode, s.l0_mse,
                   s.l0_mae, s.last_mse, s.last_mae, s.avg_corr, s.kl, s.top1);
    }
    if (!o->json.empty()) {
      nlohmann::json j = {{"ref", o->ref},        {"ref_mode", rmode},   {"cand", o->cand},
                          {"data", o->data},      {"samples", cs.samples.size()}, {"seqlen", o->seqlen},
                          {"reference_reused", reused}, {"modes", jmodes}};
      j["layers"] = jmodes[0]["layers"];  // the first candidate mode also at top level
      j["logits"] = jmodes[0]["logits"];
      j["cand_mode"] = jmodes[0]["mode"];
      write_json(o->json, j);
    }
    return 0;
  };
}

}  // namespace mambaq::cli
