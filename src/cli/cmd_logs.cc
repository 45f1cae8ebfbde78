// mambaq logs [FILE] [--records] [--filter K=V] --last N | --compare I J: read the experiment log,
// as experiments (a quantize run and the evals of its output) or single records.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <charconv>
#include <cstdio>
#include <map>

#include "analysis/explog.h"
#include "cli/common.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"

namespace mambaq::cli {

namespace {
std::string str(const nlohmann::json& j) {
  if (j.is_null()) return "-";
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_float()) return fmt::format("{:.6g}", j.get<double>());
  return j.dump();
}
// A metric of a log record as text: records are read from a file that may hold anything, so a
// value that is not a number shows as "?" instead of failing the listing.
std::string num(const nlohmann::json& v, const char* spec) {
  if (!v.is_number()) return "?";
  return fmt::format(fmt::runtime(spec), v.get<double>());
}
const nlohmann::json& at(const nlohmann::json& j, std::initializer_list<const char*> path) {
  static const nlohmann::json null;
  const nlohmann::json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return null;
    p = &(*p)[k];
  }
  return *p;
}

// An eval record's mode as eval spells it: "fake+fp-ops=ssm" for a run with FP32-kept ops.
std::string mode_label(const nlohmann::json& r) {
  std::string mode = str(at(r, {"mode"}));
  if (at(r, {"fp_ops"}).is_string() && !r["fp_ops"].get<std::string>().empty()) mode += "+fp-ops=" + r["fp_ops"].get<std::string>();
  return mode;
}

// "task acc=.. ppl=.." for eval results; calibration time for quantize
std::string summary(const nlohmann::json& r) {
  std::string s;
  const auto& res = at(r, {"results"});
  if (str(at(r, {"kind"})) == "eval" && res.is_object()) {
    for (auto& [task, v] : res.items()) {
      s += task;
      if (v.is_object() && v.contains("acc")) s += " acc=" + num(v["acc"], "{:.4f}");
      if (v.is_object() && v.contains("ppl")) s += " ppl=" + num(v["ppl"], "{:.4f}");
      s += "  ";
    }
  } else if (str(at(r, {"kind"})) == "scales_set") {
    s = fmt::format("-> {}  {}", str(at(r, {"output"})), str(at(r, {"edit", "rule"})));
    if (at(r, {"edit", "note"}).is_string()) s += "  (" + str(at(r, {"edit", "note"})) + ")";
  } else if (res.is_object()) {
    s = fmt::format("-> {}  calib {:.1f}s", str(at(r, {"output"})), at(r, {"results", "calibrate_s"}).is_number()
                                                                         ? at(r, {"results", "calibrate_s"}).get<double>()
                                                                         : 0.0);
  }
  return s;
}

// Eval records as a Markdown table: source model, mode and quantization flags, every task's
// metrics, eval time and (for quantized models) the time `quantize` took.
void print_markdown(const std::vector<nlohmann::json>& recs, int first) {
  std::map<std::string, double> quantize_s;  // output folder -> wall time
  for (const auto& r : recs)
    if (str(at(r, {"kind"})) == "quantize" && at(r, {"wall_s"}).is_number())
      quantize_s[str(at(r, {"output"}))] = at(r, {"wall_s"}).get<double>();
  std::vector<std::string> cols;  // "task acc" / "task ppl", in order of appearance
  for (size_t i = size_t(first); i < recs.size(); ++i)
    if (str(at(recs[i], {"kind"})) == "eval" && at(recs[i], {"results"}).is_object())
      for (auto& [task, v] : recs[i]["results"].items())
        for (const auto& m : result_metrics())
          if (v.contains(m) && std::find(cols.begin(), cols.end(), task + " " + m) == cols.end())
            cols.push_back(task + " " + m);
  fmt::print("| model | mode | alpha | percentile | weights |");
  for (const auto& c : cols) fmt::print(" {} |", c);
  fmt::print(" eval s | quantize s |\n|---|---|---|---|---|");
  for (size_t i = 0; i < cols.size(); ++i) fmt::print("---|");
  fmt::print("---|---|\n");
  for (size_t i = size_t(first); i < recs.size(); ++i) {
    const auto& r = recs[i];
    if (str(at(r, {"kind"})) != "eval") continue;
    const bool q = at(r, {"quantization"}).is_object();
    const std::string src = q ? str(at(r, {"quantization", "source_model"})) : str(at(r, {"model"}));
    fmt::print("| {} | {} | {} | {} | {} |", std::filesystem::path(src).filename().string(), mode_label(r),
               q ? str(at(r, {"quantization", "observers", "percentile_alpha"})) : "-",
               q ? str(at(r, {"quantization", "observers", "percentile_mode"})) : "-",
               q ? str(at(r, {"quantization", "weight_granularity"})) : "-");
    for (const auto& c : cols) {
      const auto sp = c.rfind(' ');
      const auto& res = at(r, {"results"});
      const std::string task = c.substr(0, sp);
      const nlohmann::json v = res.is_object() && res.contains(task) ? res[task] : nlohmann::json();
      const std::string m = c.substr(sp + 1);
      if (v.is_object() && v.contains(m))
        fmt::print(" {}{} |", num(v[m], m == "ppl" ? "{:.3f}" : "{:.4f}"),
                   v.contains(m + "_stderr") ? " ±" + num(v[m + "_stderr"], "{:.4f}") : "");
      else
        fmt::print(" - |");
    }
    const auto qs = quantize_s.find(str(at(r, {"model"})));
    fmt::print(" {:.1f} | {} |\n", at(r, {"wall_s"}).is_number() ? at(r, {"wall_s"}).get<double>() : 0.0,
               qs != quantize_s.end() ? fmt::format("{:.1f}", qs->second) : "-");
  }
}

// An experiment as one record-like object: what made the model (flags, calibration scales, the
// edit) and every eval of it, results keyed "task [mode]".
nlohmann::json experiment_view(const Experiment& e, const std::vector<nlohmann::json>& recs) {
  nlohmann::json j = nlohmann::json::object();
  if (e.producer >= 0) {
    const auto& p = recs[size_t(e.producer)];
    j["kind"] = at(p, {"kind"});
    j["timestamp"] = at(p, {"timestamp"});
    j["model"] = at(p, {"model"});
    j["output"] = at(p, {"output"});
    if (at(p, {"flags"}).is_object()) j["flags"] = p["flags"];
    if (at(p, {"edit"}).is_object()) j["edit"] = p["edit"];
    if (at(p, {"calibration", "scales"}).is_object()) j["scales"] = p["calibration"]["scales"];
    if (at(p, {"calibration", "clipping"}).is_array()) {  // per point: the largest share clipped, and where
      nlohmann::json c = nlohmann::json::object();
      for (const auto& x : p["calibration"]["clipping"]) {
        const std::string pt = str(at(x, {"point"}));
        const double sh = at(x, {"share_clipped"}).is_number() ? x["share_clipped"].get<double>() : 0;
        if (!c.contains(pt) || sh > c[pt]["max_share_clipped"].get<double>())
          c[pt] = {{"max_share_clipped", sh}, {"layer", at(x, {"layer"})}, {"raw_max", at(x, {"raw_max"})},
                   {"clip", at(x, {"clip"})}};
      }
      j["clipping"] = c;
    }
    if (at(p, {"scale_overrides"}).is_array()) j["scale_overrides"] = p["scale_overrides"];
  } else {
    const auto& f = recs[size_t(e.evals.at(0))];
    j["kind"] = "eval";
    j["timestamp"] = at(f, {"timestamp"});
    j["model"] = at(f, {"model"});
    if (at(f, {"quantization"}).is_object()) j["quantization"] = f["quantization"];
  }
  j["results"] = nlohmann::json::object();
  for (int i : e.evals) {
    const auto& r = recs[size_t(i)];
    const std::string mode = mode_label(r);
    if (at(r, {"results"}).is_object())
      for (auto& [task, v] : r["results"].items()) j["results"][task + " [" + mode + "]"] = v;
  }
  j["records"] = nlohmann::json(e.producer >= 0 ? std::vector<int>{e.producer} : std::vector<int>{});
  for (int i : e.evals) j["records"].push_back(i);
  return j;
}

// --filter values, checked before the log is read: alpha a number in (0, 1], bits WnAm, since /
// until an ISO date or date-time prefix (2026, 2026-11, 2026-11-30, 2026-11-30T14:05, ...), no
// empty value; one error naming the filter.
void check_filters(const std::vector<std::string>& filters) {
  static const std::regex date(R"(\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])([T ]([01]\d|2[0-3])(:[0-5]\d(:[0-5]\d)?)?)?)?)?)");
  static const std::regex bits(R"(W[1-9]\d?A[1-9]\d?)");
  for (const auto& f : filters) {
    const size_t eq = f.find('=');
    if (eq == std::string::npos) continue;  // named by matches()
    const std::string k = f.substr(0, eq), v = f.substr(eq + 1);
    if (v.empty()) fail("--filter '{}': no value after '='", f);
    if (k == "alpha") {
      double x = 0;
      const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
      if (ec != std::errc() || p != v.data() + v.size() || !(x > 0 && x <= 1))
        fail("--filter '{}': alpha must be a number in (0, 1], e.g. alpha=0.9995", f);
    } else if (k == "bits" && !std::regex_match(v, bits)) {
      fail("--filter '{}': bits must look like W8A8 or W4A16", f);
    } else if ((k == "since" || k == "until") && !std::regex_match(v, date)) {
      fail("--filter '{}': {} must be an ISO date or date-time prefix (2026-11-30, 2026-11-30T14:05)", f, k);
    }
  }
}

// --filter KEY=VALUE on an experiment (or record) view.
bool matches(const nlohmann::json& v, const std::vector<std::string>& filters) {
  for (const auto& f : filters) {
    const size_t eq = f.find('=');
    if (eq == std::string::npos) fail("--filter '{}': expected KEY=VALUE (keys: model, recipe, alpha, bits, mode, since, until)", f);
    const std::string k = f.substr(0, eq), want = f.substr(eq + 1);
    const auto& flags = at(v, {"flags"});
    if (k == "model") {
      if (str(at(v, {"model"})).find(want) == std::string::npos && str(at(v, {"output"})).find(want) == std::string::npos)
        return false;
    } else if (k == "recipe") {
      const std::string r = at(flags, {"recipe"}).is_string() ? str(at(flags, {"recipe"}))
                                                               : str(at(v, {"quantization", "recipe"}));
      if (r != want) return false;
    } else if (k == "alpha") {
      const auto& a = at(flags, {"percentile_alpha"}).is_number() ? at(flags, {"percentile_alpha"})
                                                                   : at(v, {"quantization", "observers", "percentile_alpha"});
      if (!a.is_number() || std::abs(a.get<double>() - std::strtod(want.c_str(), nullptr)) > 1e-12) return false;
    } else if (k == "bits") {
      const auto& w = at(flags, {"w_bits"}).is_number() ? at(flags, {"w_bits"}) : at(v, {"quantization", "w_bits"});
      const auto& a = at(flags, {"a_bits"}).is_number() ? at(flags, {"a_bits"}) : at(v, {"quantization", "a_bits"});
      if (!w.is_number() || !a.is_number() || fmt::format("W{}A{}", w.get<int>(), a.get<int>()) != want) return false;
    } else if (k == "mode") {
      bool any = str(at(v, {"mode"})) == want;
      if (at(v, {"results"}).is_object())
        for (auto& [key, x] : v["results"].items()) any = any || key.find("[" + want) != std::string::npos;
      if (!any) return false;
    } else if (k == "gptq" || k == "group_heads") {
      const nlohmann::json& fl = at(flags, {k.c_str()});
      bool on = false;
      if (fl.is_boolean()) on = fl.get<bool>();
      else if (k == "gptq") on = at(v, {"quantization", "gptq"}).is_object();
      else on = at(v, {"quantization", "group_heads"}).is_boolean() && v["quantization"]["group_heads"].get<bool>();
      if (want != "true" && want != "false") fail("--filter '{}': {} is true or false", f, k);
      if (on != (want == "true")) return false;
    } else if (k == "preset") {
      const auto& p = at(flags, {"preset"}).is_string() ? at(flags, {"preset"}) : at(v, {"quantization", "preset"});
      if (str(p) != want) return false;
    } else if (k == "since" || k == "until") {
      const std::string t = str(at(v, {"timestamp"}));
      if (k == "since" ? t < want : t.substr(0, want.size()) > want) return false;
    } else {
      fail("--filter '{}': unknown key '{}' (keys: model, recipe, preset, alpha, bits, gptq, group_heads, mode, since, "
           "until)", f, k);
    }
  }
  return true;
}

// One line of results for an experiment: "task metric=v±se [mode]".
std::string results_line(const nlohmann::json& res) {
  std::string s;
  if (!res.is_object()) return s;
  for (auto& [key, v] : res.items()) {
    for (const auto& m : result_metrics())
      if (v.is_object() && v.contains(m))
        s += fmt::format("{} {}={}{}  ", key, m, num(v[m], m == "ppl" ? "{:.3f}" : "{:.4f}"),
                         v.contains(m + "_stderr") ? "±" + num(v[m + "_stderr"], "{:.4f}") : "");
  }
  return s;
}

}  // namespace

Runner register_logs(CLI::App& app) {
  struct Opts {
    std::string file = "experiments.jsonl", json;
    int last = 10;
    std::vector<int> compare;
    std::vector<std::string> filters;
    bool markdown = false, records = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("logs", "Show the experiment log: experiments (a quantize run and the evals of its "
                                         "output), or what differs between two");
  sub->add_option("FILE", o->file, "Experiment log")->capture_default_str();
  sub->add_option("--last", o->last, "Show the last N experiments (records with --records)")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_option("--compare", o->compare, "Show the flags, scales and results that differ between experiments I "
                                           "and J (records with --records; 0-based; negative counts from the end)")
      ->expected(2);
  sub->add_flag("--records", o->records, "Work on single records (each quantize / eval run) instead of experiments");
  sub->add_option("--filter", o->filters, "KEY=VALUE, repeatable: model (substring), recipe, alpha, bits (W8A8), "
                                          "mode, since / until (ISO date prefix)")
      ->allow_extra_args(false);
  sub->add_option("--json", o->json, "Write the selected records as JSON to FILE ('-' = stdout)");
  auto force = add_force(sub);
  sub->add_flag("--markdown", o->markdown,
                "Print the selected eval records as a Markdown results table (one column per task metric)");
  return [o, force] {
    check_new_output_file(o->json, "--json", *force);
    check_filters(o->filters);
    // --json -: stdout holds the JSON alone; the table goes to stderr
    std::FILE* tout = o->json == "-" ? stderr : stdout;
    std::vector<std::string> skipped;
    const auto all = read_log(o->file, &skipped);
    for (const auto& w : skipped) fmt::print(stderr, "warning: skipped {}\n", w);
    // the units shown: experiments, or records; then the filters
    std::vector<nlohmann::json> recs;
    if (o->records) {
      recs = all;
    } else {
      int k = 0;
      for (const auto& e : group_experiments(all)) {
        recs.push_back(experiment_view(e, all));
        recs.back()["experiment"] = k++;
      }
    }
    if (!o->filters.empty()) {
      std::vector<nlohmann::json> kept;
      for (auto& r : recs)
        if (matches(r, o->filters)) kept.push_back(std::move(r));
      recs = std::move(kept);
    }
    const int n = int(recs.size());
    if (o->markdown) {
      print_markdown(all, std::max(0, int(all.size()) - o->last));
      return 0;
    }
    if (!o->compare.empty()) {
      auto idx = [&](int i) {
        const int k = i < 0 ? n + i : i;
        if (k < 0 || k >= n)
          fail("--compare: {} {} does not exist ({} has {} {}{})", o->records ? "record" : "experiment", i, o->file, n,
               o->records ? "records" : "experiments", o->filters.empty() ? "" : " after --filter");
        return k;
      };
      const int a = idx(o->compare[0]), b = idx(o->compare[1]);
      std::map<std::string, std::pair<std::string, std::string>> rows;
      for (const auto& [k, v] : flatten(recs[size_t(a)])) rows[k].first = str(v);
      for (const auto& [k, v] : flatten(recs[size_t(b)])) rows[k].second = str(v);
      fmt::print(tout, "{:<48} {:>28} {:>28}\n", "field", fmt::format("#{}", a), fmt::format("#{}", b));
      nlohmann::json diff = nlohmann::json::object();
      for (const auto& [k, v] : rows) {
        if (v.first == v.second || k == "timestamp" || k == "command") continue;
        const bool shown = k.starts_with("flags.") || k.starts_with("results.") || k.starts_with("quantization.") ||
                           k.starts_with("scales.") || k.starts_with("edit.") || k == "scale_overrides" ||
                           k.starts_with("clipping.") ||
                           k == "model" || k == "output" || k == "kind" || k == "mode" || k == "wall_s" ||
                           k == "peak_rss_mib";
        if (!shown) continue;
        fmt::print(tout, "{:<48} {:>28} {:>28}\n", k, v.first.empty() ? "-" : v.first, v.second.empty() ? "-" : v.second);
        diff[k] = {v.first, v.second};
      }
      // every task metric both records hold: the difference and its standard error
      nlohmann::json rdiff = nlohmann::json::object();
      const auto& ra = at(recs[size_t(a)], {"results"});
      const auto& rb = at(recs[size_t(b)], {"results"});
      if (ra.is_object() && rb.is_object()) {
        bool head = false;
        for (auto& [task, va] : ra.items()) {
          if (!rb.contains(task)) continue;
          for (const auto& m : result_metrics()) {
            MetricDiff d;
            if (!metric_diff(va, rb[task], m, d)) continue;
            if (!head) fmt::print(tout, "\n{:<28} {:>12} {:>12} {:>24} {:>6}\n", "task metric", fmt::format("#{}", a),
                                  fmt::format("#{}", b), "difference ±stderr", "z"), head = true;
            fmt::print(tout, "{:<28} {:>12.4f} {:>12.4f} {:>24} {:>6}\n", task + " " + m, d.a, d.b, diff_str(d),
                       d.se > 0 ? fmt::format("{:.1f}", d.diff / d.se) : "-");
            rdiff[task][m] = {{"a", d.a}, {"b", d.b}, {"diff", d.diff}};
            if (d.se >= 0) rdiff[task][m]["stderr"] = d.se;
          }
        }
      }
      if (!o->json.empty())
        write_json(o->json, {{"a", a}, {"b", b}, {"differences", diff}, {"results_diff", rdiff}});
      return 0;
    }
    const int first = std::max(0, n - o->last);
    nlohmann::json sel = nlohmann::json::array();
    if (!o->records) {
      fmt::print(tout, "{:>4}  {:<20} {:<10} {:<24} {:<8} {:<6} {:<7} {:<28} {}\n", "#", "timestamp", "made by", "model",
                 "recipe", "bits", "alpha", "output", "results [mode]");
      for (int i = first; i < n; ++i) {
        const auto& e = recs[size_t(i)];
        const auto& f = at(e, {"flags"});
        const std::string bits = at(f, {"w_bits"}).is_number() && at(f, {"a_bits"}).is_number()
                                     ? fmt::format("W{}A{}", f["w_bits"].get<int>(), f["a_bits"].get<int>())
                                     : "-";
        std::string made = str(at(e, {"kind"}));
        if (made == "scales_set") made = "scales set";
        std::string clip;  // the percentile points' largest clipped share
        if (at(e, {"clipping"}).is_object())
          for (auto& [pt, c] : e["clipping"].items())
            clip += fmt::format("clipped {} ≤{:.3f}%  ", pt, 100 * c.value("max_share_clipped", 0.0));
        fmt::print(tout, "{:>4}  {:<20} {:<10} {:<24} {:<8} {:<6} {:<7} {:<28} {}{}{}\n", i, str(at(e, {"timestamp"})), made,
                   str(at(e, {"model"})), str(at(f, {"recipe"})), bits, str(at(f, {"percentile_alpha"})),
                   str(at(e, {"output"})), results_line(at(e, {"results"})), clip,
                   at(e, {"edit", "rule"}).is_string() ? "edit " + str(e["edit"]["rule"]) : "");
        sel.push_back(e);
      }
      if (!o->json.empty()) write_json(o->json, sel);
      return 0;
    }
    fmt::print(tout, "{:>4}  {:<20} {:<8} {:<28} {:<18} {:<7} {:<6} {:<8} {}\n", "#", "timestamp", "kind", "model", "mode",
               "alpha", "pmode", "weights", "results");
    for (int i = first; i < n; ++i) {
      const auto& r = recs[size_t(i)];
      const bool q = str(at(r, {"kind"})) == "quantize";
      const auto& alpha = q ? at(r, {"flags", "percentile_alpha"}) : at(r, {"quantization", "observers", "percentile_alpha"});
      const auto& pm = q ? at(r, {"flags", "percentile_mode"}) : at(r, {"quantization", "observers", "percentile_mode"});
      const auto& wg = q ? at(r, {"flags", "weight_granularity"}) : at(r, {"quantization", "weight_granularity"});
      fmt::print(tout, "{:>4}  {:<20} {:<8} {:<28} {:<18} {:<7} {:<6} {:<8} {}\n", i, str(at(r, {"timestamp"})),
                 str(at(r, {"kind"})), str(at(r, {"model"})), q ? "-" : mode_label(r), str(alpha), str(pm),
                 str(wg), summary(r));
      sel.push_back(r);
    }
    if (!o->json.empty()) write_json(o->json, sel);
    return 0;
  };
}

}  // namespace mambaq::cli
