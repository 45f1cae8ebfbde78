#include "analysis/sweep.h"

#include "mambaq/eval.h"

#include "io/json_file.h"
#include "io/mmap_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include <fmt/format.h>

#include "analysis/explog.h"
#include "mambaq/error.h"
#include "mambaq/model.h"

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

namespace {
// One matrix's cells (its cartesian product, model outermost), appended to `cells`.
void expand_matrix(const nlohmann::json& mx, const std::string& path, const std::string& where,
                   std::vector<SweepCell>& cells) {
  if (!mx.contains("model")) fail("{}: {} needs model = [...]", path, where);
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> axes;
  for (auto& [k, v] : mx.items()) {
    if (k != "model" && k != "save_activations" && !kQuantizeKeys.count(k) && !kEvalKeys.count(k))
      fail("{}: {} key '{}' is not a quantize or eval flag (model, {}mode, ppl_seqlen, save_activations)", path, where, k,
           [] {
             std::string s2;
             for (auto& q : kQuantizeKeys) s2 += q + ", ";
             return s2;
           }());
    std::vector<nlohmann::json> vals = v.is_array() ? v.get<std::vector<nlohmann::json>>() : std::vector{v};
    if (vals.empty()) fail("{}: {} {} has no values", path, where, k);
    if (k == "save_activations")
      for (const auto& x : vals)
        if (!x.is_boolean()) fail("{}: {} save_activations is true or false", path, where);
    axes.emplace_back(k, vals);
  }
  // The matrix size, checked before expanding it: each cell is a quantize + eval run of minutes,
  // so a matrix beyond kMaxSweepCells is a typo, and expanding 10^8 cells would exhaust memory.
  size_t total = 1;
  for (const auto& [k, vals] : axes) {
    if (vals.size() > kMaxSweepCells || total * vals.size() > kMaxSweepCells)
      fail("{}: {} has more than {} cells (the product of its value counts); split the sweep", path, where,
           kMaxSweepCells);
    total *= vals.size();
  }
  std::stable_sort(axes.begin(), axes.end(), [](auto& a, auto& b) { return a.first == "model" && b.first != "model"; });
  std::vector<size_t> idx(axes.size(), 0);
  while (true) {
    SweepCell c;
    for (size_t a = 0; a < axes.size(); ++a) {
      const auto& [k, vals] = axes[a];
      const nlohmann::json& v = vals[idx[a]];
      if (k == "model") {
        if (!v.is_string()) fail("{}: {} model values must be strings", path, where);
        c.model = v.get<std::string>();
      } else if (k == "save_activations") {
        c.save_activations = v.get<bool>();
      } else if (kEvalKeys.count(k)) {
        c.eval[dashed(k)] = v;
      } else {
        c.quantize[dashed(k)] = v;
      }
    }
    cells.push_back(std::move(c));
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
}

std::string value_str(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// A folder name's part: letters, digits and . _ + - kept, anything else '_'.
std::string path_part(std::string v) {
  for (auto& ch : v)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '+' && ch != '-') ch = '_';
  return v.empty() ? "_" : v;
}
// "pa-1.0", "w4", "gptq", "no-gptq", "w4a8" (a preset, recipe or mode: its value alone)
std::string key_part(const std::string& key, const nlohmann::json& v) {
  static const std::map<std::string, std::string> abbr = {
      {"percentile_alpha", "pa"}, {"percentile_mode", "pm"}, {"w_bits", "w"},       {"a_bits", "a"},
      {"calib_num", "calib"},     {"calib_seqlen", "len"},   {"group_size", "g"},   {"gptq_num", "gptq"},
      {"gptq_seqlen", "gptqlen"}, {"ppl_seqlen", "ppllen"},  {"weight_granularity", "wg"}};
  if (key == "preset" || key == "recipe" || key == "mode" || key == "calib_data" || key == "gptq_data" ||
      key == "layer_config")
    return path_part(v.is_string() ? fs::path(v.get<std::string>()).stem().string() : v.dump());
  if (v.is_boolean()) return (v.get<bool>() ? "" : "no-") + path_part(key);
  auto it = abbr.find(key);
  const std::string name = it == abbr.end() ? key : it->second;
  return path_part(name + (name.size() == 1 ? "" : "-") + value_str(v));
}
const nlohmann::json* cell_json(const SweepCell& c, const std::string& key) {
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  if (c.quantize.count(flag)) return &c.quantize.at(flag);
  if (c.eval.count(flag)) return &c.eval.at(flag);
  return nullptr;
}
}  // namespace

std::string sweep_cell_folder(const SweepCell& c, const SweepSpec& s) {
  const std::string model = path_part(fs::path(c.model).filename().string());
  if (s.folder_template.empty()) {  // the varying keys, then the model
    std::string dir;
    for (const auto& k : s.varying)
      if (k != "model")
        if (const nlohmann::json* v = cell_json(c, k)) dir += (dir.empty() ? "" : "_") + key_part(k, *v);
    return dir.empty() ? model : dir + "/" + model;
  }
  std::string out;
  const std::string& t = s.folder_template;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] != '{') {
      out += t[i];
      continue;
    }
    const size_t e = t.find('}', i);
    const std::string key = t.substr(i + 1, e - i - 1);
    if (key == "model") out += model;
    else if (key == "id") out += c.id;
    else if (const nlohmann::json* v = cell_json(c, key)) out += key_part(key, *v);
    else out += "default";
    i = e;
  }
  return out;
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
      if (k != "name" && k != "tasks" && k != "limit" && k != "out_dir" && k != "log" && k != "folder")
        fail("{}: [sweep] has unknown key '{}' (name, tasks, limit, out_dir, folder, log)", path, k);
    s.name = sw.value("name", fs::path(path).stem().string());
    s.out_dir = sw.value("out_dir", "sweeps/" + s.name);
    s.log = sw.value("log", "experiments.jsonl");
    s.folder_template = sw.value("folder", "");
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
  {  // a folder template: {model}, {id} and matrix keys in braces, a relative path
    const std::string& t = s.folder_template;
    int depth = 0;
    for (char ch : t) {
      depth += ch == '{' ? 1 : ch == '}' ? -1 : 0;
      if (depth < 0 || depth > 1) fail("{}: [sweep] folder '{}': unbalanced braces", path, t);
    }
    if (depth) fail("{}: [sweep] folder '{}': unbalanced braces", path, t);
    if (!t.empty() && (t[0] == '/' || t.find("..") != std::string::npos))
      fail("{}: [sweep] folder '{}' must be a relative path inside out_dir", path, t);
  }
  if (!j.contains("matrix") || !(j["matrix"].is_object() || (j["matrix"].is_array() && !j["matrix"].empty())))
    fail("{}: missing [matrix] (or [[matrix]] tables)", path);
  std::vector<nlohmann::json> matrices;
  if (j["matrix"].is_object())
    matrices.push_back(j["matrix"]);
  else
    for (const auto& m : j["matrix"]) {
      if (!m.is_object()) fail("{}: each [[matrix]] is a table of keys", path);
      matrices.push_back(m);
    }
  for (size_t mi = 0; mi < matrices.size(); ++mi) {
    expand_matrix(matrices[mi], path, matrices.size() == 1 ? "[matrix]" : fmt::format("[[matrix]] {}", mi + 1), s.cells);
    if (s.cells.size() > kMaxSweepCells)
      fail("{}: more than {} cells in all; split the sweep", path, kMaxSweepCells);
  }
  // the keys whose value differs between cells (a key some cells lack differs too), model first
  std::set<std::string> keys;
  for (const auto& c : s.cells) {
    for (auto& [k, v] : c.quantize) keys.insert(k.substr(2));
    for (auto& [k, v] : c.eval) keys.insert(k.substr(2));
  }
  std::vector<std::string> order = {"model"};
  for (std::string k : keys) {
    std::replace(k.begin(), k.end(), '-', '_');
    order.push_back(k);
  }
  for (const auto& k : order) {
    std::set<std::string> vals;
    for (const auto& c : s.cells) vals.insert(k == "model" ? c.model : sweep_cell_value(c, k));
    if (vals.size() > 1) s.varying.push_back(k);
  }
  set_sweep_limit(s, s.limit);
  // readable folders, one per cell
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < s.cells.size(); ++i) {
    SweepCell& c = s.cells[i];
    c.folder = sweep_cell_folder(c, s);
    auto [it, fresh] = seen.emplace(c.folder, i);
    if (!fresh && s.cells[it->second].id != c.id)
      fail("{}: cells {} and {} would share the folder '{}' (the folder template leaves out a key that differs: add "
           "it, or {{id}})", path, it->second, i, c.folder);
  }
  return s;
}

// ---- planning and resuming (the `sweep` command prints and runs what these say) ----


// A matrix key's value in a cell ("percentile_alpha" -> "1.0"), "-" if the cell has none.
std::string sweep_cell_value(const SweepCell& c, const std::string& key) {
  const nlohmann::json* v = cell_json(c, key);
  return v ? value_str(*v) : "-";
}

size_t sweep_mark_duplicates(SweepSpec& s) {
  std::map<std::string, int> first;
  size_t n = 0;
  for (size_t i = 0; i < s.cells.size(); ++i) {
    SweepCell& c = s.cells[i];
    c.dup_of = -1;
    if (!c.invalid.empty()) continue;
    std::error_code ec;
    const fs::path canon = fs::weakly_canonical(c.model, ec);
    // planned: what the runs would do; not planned: the flags as written (equal ids)
    const nlohmann::json key = c.effective.is_null()
                                   ? nlohmann::json{{"id", c.id}}
                                   : nlohmann::json{{"model", ec ? c.model : canon.string()}, {"quantize", c.effective},
                                                    {"eval", c.eval}, {"tasks", s.tasks}, {"limit", s.limit}};
    auto [it, fresh] = first.emplace(key.dump(), int(i));
    if (!fresh) c.dup_of = it->second, ++n;
  }
  return n;
}

// What a cell costs, in tokens through the model: its calibration and GPTQ samples (when its
// effective settings use them) and its tasks' documents.
SweepWork sweep_cell_work(const SweepCell& c, const SweepSpec& s, const std::string& data_dir) {
  const nlohmann::json& e = c.effective;
  auto num = [&](const char* k, double d) {
    if (e.is_object()) return e.contains(k) && e[k].is_number() ? e[k].get<double>() : 0.0;
    const std::string f = std::string("--") + k;
    return c.quantize.count(f) && c.quantize.at(f).is_number() ? c.quantize.at(f).get<double>() : d;
  };
  SweepWork w;
  // calibration samples: as many as asked, or as the documents hold (~4.5 bytes per token)
  double calib = num("calib-num", 512);
  const double seqlen = num("calib-seqlen", 512);
  if (e.is_object() && e.contains("calib-data") && e["calib-data"].is_string()) {
    std::error_code ec;
    const auto bytes = fs::file_size(e["calib-data"].get<std::string>(), ec);
    if (!ec && seqlen > 0) calib = std::min(calib, std::ceil(double(bytes) / 4.5 / seqlen));
  }
  w.calib_tokens = calib * seqlen;
  if (e.is_object() && e.value("gptq", false)) w.gptq_tokens = num("gptq-num", 128) * num("gptq-seqlen", 512);
  double& t = w.eval_tokens;
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
  return w;
}

double sweep_layer_params(const ModelConfig& c) {
  double layer = double(c.d_model) * c.in_proj_dim() + double(c.d_inner) * c.d_model;
  if (c.arch == Arch::Mamba1) layer += double(c.d_inner) * (c.dt_rank + 2 * c.d_state) + double(c.dt_rank) * c.d_inner;
  return layer * c.n_layer;
}

double sweep_cell_seconds(const SweepWork& w, const ModelConfig& c, double tok_s) {
  tok_s = std::max(tok_s, 1e-9);
  // Calibration: the forward, plus the observers over every activation value they see (about
  // 2 d_model + 6 d_inner per layer and token, ~7e7 values/s on one of these CPUs' cores pairs:
  // measured on mamba-tiny, 60 s for 274 x 512 tokens). GPTQ: ~3 forwards per token (the
  // Hessians in double, then the solves). Evaluation: the forward plus the LM head, which a big
  // GEMM runs at about twice the layers' efficiency. Plus loading and saving.
  const double values = double(c.n_layer) * (2.0 * c.d_model + 6.0 * c.d_inner);
  const double head = 0.5 * double(c.padded_vocab) * c.d_model / std::max(1.0, sweep_layer_params(c));
  return w.calib_tokens / tok_s + w.calib_tokens * values / 7e7 + 3.0 * w.gptq_tokens / tok_s +
         w.eval_tokens * (1 + head) / tok_s + 3.0;
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
  const std::string out = (fs::path(s.out_dir) / c.folder).string();
  const std::string extra = nlohmann::json{{"sweep", s.name}, {"sweep_cell", c.id}}.dump();
  cmd.quantize = {"quantize", c.model, "-o", out, "--force", "--log", s.log, "--log-extra",
                  extra, "--threads", std::to_string(threads), "--data-dir", data_dir};
  for (const auto& [k, v] : c.quantize) {
    if (v.is_boolean())  // a flag: --gptq=true / --gptq=false
      cmd.quantize.push_back(k + "=" + (v.get<bool>() ? "true" : "false"));
    else
      cmd.quantize.insert(cmd.quantize.end(), {k, value_str(v)});
  }
  if (c.save_activations) cmd.quantize.insert(cmd.quantize.end(), {"--save-activations", out + ".activations.npz"});
  std::string tasks;
  for (const auto& t : s.tasks) tasks += (tasks.empty() ? "" : ",") + t;
  cmd.eval = {"eval", out, "--tasks", tasks, "--log", s.log, "--log-extra", extra,
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
