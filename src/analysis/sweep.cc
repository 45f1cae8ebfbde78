#include "analysis/sweep.h"

#include "mambaq/eval.h"

#include "io/json_file.h"
#include "io/mmap_file.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include <fmt/format.h>

#include "analysis/explog.h"
#include "mambaq/error.h"

namespace mambaq {

namespace fs = std::filesystem;

std::string stable_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

namespace {
const std::set<std::string> kQuantizeKeys = {"recipe",          "w_bits",          "a_bits",
                                             "percentile_alpha", "percentile_mode", "weight_granularity",
                                             "calib_data",      "calib_num",       "calib_seqlen",
                                             // quamba2 (docs/quamba2.md)
                                             "preset", "group_size", "gptq", "gptq_data", "gptq_num", "gptq_seqlen",
                                             "group_heads", "grouped_percentile", "quantize_embedding",
                                             "quantize_lm_head", "layer_config"};
const std::set<std::string> kEvalKeys = {"mode", "ppl_seqlen"};

std::string dashed(const std::string& k) {
  std::string s = "--" + k;
  for (auto& c : s)
    if (c == '_') c = '-';
  return s;
}

nlohmann::json read_spec(const std::string& path) {
  if (!fs::exists(path)) fail("{}: sweep spec not found", path);
  const std::string text = read_text_file(path);
  try {
    if (fs::path(path).extension() == ".json") return parse_json(text, path);
    toml::table t = toml::parse(text, path);
    std::stringstream js;
    js << toml::json_formatter{t};
    return parse_json(js.str(), path);
  } catch (const toml::parse_error& e) {
    fail("{}:{}:{}: bad TOML: {}", path, e.source().begin.line, e.source().begin.column, e.description());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad JSON: {}", path, e.what());
  }
}
}  // namespace

void set_sweep_limit(SweepSpec& s, int limit) {
  s.limit = limit;
  for (auto& c : s.cells) {
    nlohmann::json key = {{"model", c.model}, {"quantize", c.quantize}, {"eval", c.eval},
                          {"tasks", s.tasks}, {"limit", s.limit}};
    c.id = stable_hash(key.dump()).substr(0, 12);
  }
}

SweepSpec load_sweep(const std::string& path) {
  const nlohmann::json j = read_spec(path);
  SweepSpec s;
  s.source = path;
  if (!j.is_object()) fail("{}: a sweep spec is a table with [sweep] and [matrix]", path);
  for (auto& [k, v] : j.items())
    if (k != "sweep" && k != "matrix") fail("{}: unknown section '{}' (expected sweep and matrix)", path, k);
  const nlohmann::json sw = j.value("sweep", nlohmann::json::object());
  try {
    for (auto& [k, v] : sw.items())
      if (k != "name" && k != "tasks" && k != "limit" && k != "out_dir" && k != "log")
        fail("{}: [sweep] has unknown key '{}' (name, tasks, limit, out_dir, log)", path, k);
    s.name = sw.value("name", fs::path(path).stem().string());
    s.out_dir = sw.value("out_dir", "sweeps/" + s.name);
    s.log = sw.value("log", "experiments.jsonl");
    s.limit = int(json_int(sw, "limit", 0, path + ": [sweep]", 0, INT32_MAX));
    if (!sw.contains("tasks")) fail("{}: [sweep] needs tasks = [...]", path);
    s.tasks = sw["tasks"].get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: [sweep]: {}", path, e.what());
  }
  if (s.tasks.empty()) fail("{}: [sweep] tasks is empty", path);
  try {
    check_task_keys(s.tasks);
  } catch (const Error& e) {
    fail("{}: [sweep] {}", path, e.what());
  }
  if (!j.contains("matrix") || !j["matrix"].is_object()) fail("{}: missing [matrix]", path);
  const nlohmann::json& mx = j["matrix"];
  if (!mx.contains("model")) fail("{}: [matrix] needs model = [...]", path);
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> axes;
  for (auto& [k, v] : mx.items()) {
    if (k != "model" && !kQuantizeKeys.count(k) && !kEvalKeys.count(k))
      fail("{}: [matrix] key '{}' is not a quantize or eval flag (model, {}mode, ppl_seqlen)", path, k, [] {
        std::string s2;
        for (auto& q : kQuantizeKeys) s2 += q + ", ";
        return s2;
      }());
    std::vector<nlohmann::json> vals = v.is_array() ? v.get<std::vector<nlohmann::json>>() : std::vector{v};
    if (vals.empty()) fail("{}: [matrix] {} has no values", path, k);
    if (vals.size() > 1) s.varying.push_back(k);
    axes.emplace_back(k, vals);
  }
  // The matrix size, checked before expanding it: each cell is a quantize + eval run of minutes,
  // so a matrix beyond kMaxSweepCells is a typo, and expanding 10^8 cells would exhaust memory.
  size_t total = 1;
  for (const auto& [k, vals] : axes) {
    if (vals.size() > kMaxSweepCells || total * vals.size() > kMaxSweepCells)
      fail("{}: [matrix] has more than {} cells (the product of its value counts); split the sweep", path, kMaxSweepCells);
    total *= vals.size();
  }
  // cartesian product, model outermost
  std::stable_sort(axes.begin(), axes.end(), [](auto& a, auto& b) { return a.first == "model" && b.first != "model"; });
  std::vector<size_t> idx(axes.size(), 0);
  while (true) {
    SweepCell c;
    for (size_t a = 0; a < axes.size(); ++a) {
      const auto& [k, vals] = axes[a];
      const nlohmann::json& v = vals[idx[a]];
      if (k == "model") {
        if (!v.is_string()) fail("{}: [matrix] model values must be strings", path);
        c.model = v.get<std::string>();
      } else if (kEvalKeys.count(k)) {
        c.eval[dashed(k)] = v;
      } else {
        c.quantize[dashed(k)] = v;
      }
    }
    s.cells.push_back(std::move(c));
    bool wrapped = true;  // odometer: advance the last axis, carry to the left
    for (size_t a = axes.size(); a-- > 0;) {
      if (++idx[a] < axes[a].second.size()) {
        wrapped = false;
        break;
      }
      idx[a] = 0;
    }
    if (wrapped) break;
  }
  set_sweep_limit(s, s.limit);
  return s;
}

// ---- planning and resuming (the `sweep` command prints and runs what these say) ----

static std::string value_str(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// A matrix key's value in a cell ("percentile_alpha" -> "1.0"), "-" if the cell has none.
std::string sweep_cell_value(const SweepCell& c, const std::string& key) {
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  const auto& m = c.quantize.count(flag) ? c.quantize : c.eval;
  return m.count(flag) ? value_str(m.at(flag)) : "-";
}

// Rough cost of a cell in tokens through the model: calibration plus evaluation.
double sweep_cell_tokens(const SweepCell& c, const SweepSpec& s, const std::string& data_dir) {
  auto num = [&](const char* k, double d) {
    return c.quantize.count(k) && c.quantize.at(k).is_number() ? c.quantize.at(k).get<double>() : d;
  };
  double t = std::min(num("--calib-num", 512), 300.0) * num("--calib-seqlen", 512);
  for (const auto& task : s.tasks) {
    std::string f = task.substr(task.find(':') + 1);
    if (task == "lambada_openai") f = "lambada_openai/lambada_test.jsonl";
    if (task == "wikitext2") f = "wikitext-2-raw/wiki.test.raw";
    const fs::path p = fs::exists(f) ? fs::path(f) : fs::path(data_dir) / f;
    const double bytes = fs::exists(p) ? double(fs::file_size(p)) : 1e6;
    double tok = bytes / 4.5;  // about 4.5 bytes per GPT-NeoX token of English
    if (s.limit > 0) tok = std::min(tok, double(s.limit) * (task.starts_with("ppl") || task == "wikitext2" ? 1024 : 90));
    t += tok;
  }
  return t;
}

std::map<std::string, nlohmann::json> sweep_done(const std::string& log) {
  std::map<std::string, nlohmann::json> done;
  if (!fs::exists(log)) return done;
  for (const auto& r : read_log(log))
    if (r.contains("sweep_cell") && r["sweep_cell"].is_string() && r.value("kind", "") == "eval")
      done[r["sweep_cell"].get<std::string>()] = r;
  return done;
}

SweepCommands sweep_cell_commands(const SweepCell& c, const SweepSpec& s, int threads, const std::string& data_dir) {
  SweepCommands cmd;
  const std::string out = (fs::path(s.out_dir) / c.id).string();
  const std::string extra = nlohmann::json{{"sweep", s.name}, {"sweep_cell", c.id}}.dump();
  cmd.quantize = {"quantize", c.model, "-o", out, "--force", "-q", "--log", s.log, "--log-extra",
                  extra, "--threads", std::to_string(threads), "--data-dir", data_dir};
  for (const auto& [k, v] : c.quantize) {
    if (v.is_boolean())  // a flag: --gptq=true / --gptq=false
      cmd.quantize.push_back(k + "=" + (v.get<bool>() ? "true" : "false"));
    else
      cmd.quantize.insert(cmd.quantize.end(), {k, value_str(v)});
  }
  std::string tasks;
  for (const auto& t : s.tasks) tasks += (tasks.empty() ? "" : ",") + t;
  cmd.eval = {"eval", out, "--tasks", tasks, "-q", "--log", s.log, "--log-extra", extra,
              "--threads", std::to_string(threads), "--data-dir", data_dir};
  if (s.limit > 0) cmd.eval.insert(cmd.eval.end(), {"--limit", std::to_string(s.limit)});
  for (const auto& [k, v] : c.eval) cmd.eval.insert(cmd.eval.end(), {k, value_str(v)});
  return cmd;
}

std::vector<std::string> sweep_result_columns(const SweepSpec& s, const std::map<std::string, nlohmann::json>& done) {
  std::vector<std::string> cols;
  for (const auto& c : s.cells) {
    auto it = done.find(c.id);
    if (it == done.end()) continue;
    const nlohmann::json res = it->second.value("results", nlohmann::json::object());
    if (!res.is_object()) continue;
    for (auto& [task, v] : res.items())
      for (const auto& m : result_metrics())
        if (v.is_object() && v.contains(m) && std::find(cols.begin(), cols.end(), task + " " + m) == cols.end())
          cols.push_back(task + " " + m);
  }
  return cols;
}

std::string sweep_result_text(const nlohmann::json& record, const std::string& column, const nlohmann::json* base) {
  const auto sp = column.rfind(' ');
  auto task_of = [&](const nlohmann::json& r) {
    const auto res = r.value("results", nlohmann::json::object());
    return res.is_object() ? res.value(column.substr(0, sp), nlohmann::json::object()) : nlohmann::json();
  };
  const auto v = task_of(record);
  const std::string m = column.substr(sp + 1);
  if (!v.is_object() || !v.contains(m) || !v[m].is_number()) return "-";
  std::string s = fmt::format("{:.4f}", v[m].get<double>());
  MetricDiff d;
  if (base && base != &record && metric_diff(task_of(*base), v, m, d)) s += " (" + diff_str(d) + ")";
  return s;
}

}  // namespace mambaq
