// mambaq logs [FILE] --last N | --compare I J: read the experiment log.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
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
    fmt::print("| {} | {} | {} | {} | {} |", std::filesystem::path(src).filename().string(), str(at(r, {"mode"})),
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

}  // namespace

Runner register_logs(CLI::App& app) {
  struct Opts {
    std::string file = "experiments.jsonl", json;
    int last = 10;
    std::vector<int> compare;
    bool markdown = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("logs", "Show the experiment log: the last runs, or what differs between two");
  sub->add_option("FILE", o->file, "Experiment log")->capture_default_str();
  sub->add_option("--last", o->last, "Show the last N records")->capture_default_str()->check(at_least(1));
  sub->add_option("--compare", o->compare, "Show the flags and results that differ between records I and J "
                                           "(0-based; negative counts from the end)")
      ->expected(2);
  sub->add_option("--json", o->json, "Write the selected records as JSON to FILE ('-' = stdout)");
  sub->add_flag("--markdown", o->markdown,
                "Print the selected eval records as a Markdown results table (one column per task metric)");
  return [o] {
    check_output_file(o->json, "--json");
    const auto recs = read_log(o->file);
    const int n = int(recs.size());
    if (o->markdown) {
      print_markdown(recs, std::max(0, n - o->last));
      return 0;
    }
    if (!o->compare.empty()) {
      auto idx = [&](int i) {
        const int k = i < 0 ? n + i : i;
        if (k < 0 || k >= n) fail("--compare: record {} does not exist ({} has {} records)", i, o->file, n);
        return k;
      };
      const int a = idx(o->compare[0]), b = idx(o->compare[1]);
      std::map<std::string, std::pair<std::string, std::string>> rows;
      for (const auto& [k, v] : flatten(recs[size_t(a)])) rows[k].first = str(v);
      for (const auto& [k, v] : flatten(recs[size_t(b)])) rows[k].second = str(v);
      fmt::print("{:<48} {:>28} {:>28}\n", "field", fmt::format("#{}", a), fmt::format("#{}", b));
      nlohmann::json diff = nlohmann::json::object();
      for (const auto& [k, v] : rows) {
        if (v.first == v.second || k == "timestamp" || k == "command") continue;
        const bool shown = k.starts_with("flags.") || k.starts_with("results.") || k.starts_with("quantization.") ||
                           k == "model" || k == "kind" || k == "mode" || k == "wall_s" || k == "peak_rss_mib";
        if (!shown) continue;
        fmt::print("{:<48} {:>28} {:>28}\n", k, v.first.empty() ? "-" : v.first, v.second.empty() ? "-" : v.second);
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
            if (!head) fmt::print("\n{:<28} {:>12} {:>12} {:>24} {:>6}\n", "task metric", fmt::format("#{}", a),
                                  fmt::format("#{}", b), "difference ±stderr", "z"), head = true;
            fmt::print("{:<28} {:>12.4f} {:>12.4f} {:>24} {:>6}\n", task + " " + m, d.a, d.b, diff_str(d),
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
    fmt::print("{:>4}  {:<20} {:<8} {:<28} {:<6} {:<7} {:<6} {:<8} {}\n", "#", "timestamp", "kind", "model", "mode",
               "alpha", "pmode", "weights", "results");
    nlohmann::json sel = nlohmann::json::array();
    for (int i = first; i < n; ++i) {
      const auto& r = recs[size_t(i)];
      const bool q = str(at(r, {"kind"})) == "quantize";
      const auto& alpha = q ? at(r, {"flags", "percentile_alpha"}) : at(r, {"quantization", "observers", "percentile_alpha"});
      const auto& pm = q ? at(r, {"flags", "percentile_mode"}) : at(r, {"quantization", "observers", "percentile_mode"});
      const auto& wg = q ? at(r, {"flags", "weight_granularity"}) : at(r, {"quantization", "weight_granularity"});
      fmt::print("{:>4}  {:<20} {:<8} {:<28} {:<6} {:<7} {:<6} {:<8} {}\n", i, str(at(r, {"timestamp"})),
                 str(at(r, {"kind"})), str(at(r, {"model"})), q ? "-" : str(at(r, {"mode"})), str(alpha), str(pm),
                 str(wg), summary(r));
      sel.push_back(r);
    }
    if (!o->json.empty()) write_json(o->json, sel);
    return 0;
  };
}

}  // namespace mambaq::cli
