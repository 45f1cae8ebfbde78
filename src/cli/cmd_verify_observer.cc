// mambaq verify-observer: the percentile observer checked on synthetic activations with outliers.
#include <fmt/format.h>

#include "analysis/verify_observer.h"
#include "cli/common.h"
#include "io/mmap_file.h"

namespace mambaq::cli {

Runner register_verify_observer(CLI::App& app) {
  struct Opts {
    ObserverCheckOptions v;
    std::string json;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "verify-observer",
      "Check the percentile observer on seeded activations with planted outliers: scale non-decreasing in alpha, "
      "at least alpha of the values inside +-127*scale, all of them at alpha 1; exit 1 on a violation");
  sub->add_option("--alphas", o->v.alphas, "Alphas to check")->capture_default_str();
  sub->add_option("--samples", o->v.samples, "Calibration samples (exact and 'ema xN' see all, 'ema' the first)")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_option("--values", o->v.values, "Values per sample")->capture_default_str()->check(between(2, 1 << 28));
  sub->add_option("--outliers", o->v.outlier_share, "Share of planted outliers")->capture_default_str();
  sub->add_option("--seed", o->v.seed, "Seed of the activations")->capture_default_str();
  sub->add_option("--json", o->json, "Write the rows as JSON to FILE ('-' = stdout)");
  auto force = add_force(sub);
  add_common(sub, o->c);
  return [o, force] {
    apply_common(o->c);
    check_new_output_file(o->json, "--json", *force);
    const auto rows = verify_observer(o->v);
    fmt::print("{:<7} {:>8} {:>12} {:>12} {:>12} {:>12}  {}\n", "mode", "alpha", "clip", "scale", "inside",
               "clipped", "check");
    bool ok = true;
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      fmt::print("{:<7} {:>8} {:>12.5g} {:>12.5g} {:>11.5f}% {:>11.5f}%  {}\n", r.mode, r.alpha, r.amax, r.scale,
                 100 * r.inside, 100 * r.clipped, r.ok ? "ok" : "FAIL: " + r.problem);
      ok = ok && r.ok;
      j.push_back({{"mode", r.mode}, {"alpha", r.alpha}, {"amax", r.amax}, {"scale", r.scale}, {"inside", r.inside},
                   {"clipped", r.clipped}, {"ok", r.ok}, {"problem", r.problem}});
    }
    if (!o->json.empty()) write_json(o->json, {{"ok", ok}, {"rows", j}});
    for (const auto& r : rows)
      if (r.mode.starts_with("ema x") && r.alpha >= 1.0)
        fmt::print("coverage at alpha 1 over {} samples: {:.5f}% in ema (the moving average of each sample's max sits "
                   "below the largest: it clips), 100% in exact\n", o->v.samples, 100 * r.inside);
    fmt::print("{}\n", ok ? "observer verified" : "observer check FAILED");
    return ok ? 0 : 1;
  };
}

}  // namespace mambaq::cli
