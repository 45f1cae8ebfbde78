// mambaq scales MODEL [MODEL_B]: every scale of a quantized model (which observer made it), or
// the same scales of two models side by side.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include <sys/stat.h>

#include "cli/common.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "core/stats.h"
#include "model/points.h"
#include "model/quant_state.h"
#include "analysis/explog.h"
#include "io/folder.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "quant/scale_rules.h"

#include <filesystem>
namespace fs = std::filesystem;

namespace mambaq::cli {

namespace {
struct ScaleRow {
  int layer;
  std::string kind, observer, tensor;
  double scale;  // grouped scales: their largest
  std::vector<double> values = {};  // grouped scales: all of them (the per-kind summary uses them)
};

std::vector<ScaleRow> scale_rows(const Model& m, const std::string& path) {
  const QuantState* q = m.quantized();
  if (!q) fail("{}: not a quantized model (its config.json has no \"quantization\" section)", path);
  std::vector<ScaleRow> rows;
  for (const auto& p : q->scales.points) {
    const std::string t = scale_tensor_name(m.config().arch, p.layer, p.point);
    if (p.values.empty()) {
      rows.push_back({p.layer, p.point, p.observer, t, p.scale});
    } else {  // grouped (Quamba2): one row, the largest of the blocks; the summary sees them all
      rows.push_back({p.layer, fmt::format("{}(max/{})", p.point, p.values.size()), p.observer, t, p.scale,
                      std::vector<double>(p.values.begin(), p.values.end())});
    }
  }
  // weight scales: per tensor as is; per channel, split or group as their mean
  const auto weight_row = [&](int layer, const std::string& n, const QTensor& w, const std::string& tensor) {
    if (w.scales.empty()) return;
    double s = 0;
    for (float v : w.scales) s += v;
    const char* what = w.granularity == Granularity::Group && w.ngroups() > 1 ? ".weight(mean/group)"
                       : w.scales.size() > 1              ? ".weight(mean/row)"
                                                          : ".weight";
    rows.push_back({layer, n + what, fmt::format("absmax-{}b", w.bits), tensor, s / double(w.scales.size())});
  };
  for (size_t l = 0; l < m.weights().layers.size(); ++l)
    for (int p = 0; p < kProjs; ++p) {
      const char* n = proj_name(Proj(p));
      weight_row(int(l), n, m.weights().layers[l].proj(Proj(p)),
                 "backbone.layers." + std::to_string(l) + ".mixer." + n + ".weight_scale");
    }
  weight_row(-1, "embedding", m.weights().embedding, "backbone.embedding.weight_scale");
  if (!m.weights().tied()) weight_row(-1, "lm_head", m.weights().lm_head, "lm_head.weight_scale");
  std::sort(rows.begin(), rows.end(), [](const ScaleRow& a, const ScaleRow& b) {
    return std::tie(a.layer, a.kind) < std::tie(b.layer, b.kind);
  });
  return rows;
}

struct Stat {
  size_t n = 0;
  double min = 0, median = 0, max = 0, mean = 0;
};
Stat stat(std::vector<double> v) {
  Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.min = v.front();
  s.max = v.back();
  s.median = median(v);
  for (double x : v) s.mean += x / double(v.size());
  return s;
}
}  // namespace

// `scales set`: rewrite some activation scales of a saved folder (every other byte kept) and
// append the edit to config.json's quantization.edits.
struct SetOpts {
  std::string model, out, point, layers = "all", note, log = "experiments.jsonl";
  double factor = 0, value = 0, add_clip = NAN;
  bool in_place = false, force = false, no_log = false, recover = false;
};

// `scales set DIR --recover`: a folder whose in-place edit was interrupted (its journal,
// io/folder.h, still there) is put back in order: if config.json already records the edit, the
// edit completed and only the journal goes; otherwise the old scales and save id go back into the
// weights (byte for byte as before the edit) and then the journal goes.
int run_recover(const SetOpts& s) {
  const fs::path dir(s.model);
  FolderLock lock(dir.string());
  const std::string jp = (dir / kPendingEditFile).string();
  if (!fs::exists(jp)) fail("scales set --recover: {} has no interrupted edit (no {})", s.model, kPendingEditFile);
  const nlohmann::json j = read_json_file(jp);
  const std::string cfg_path = (dir / "config.json").string();
  const nlohmann::json cfg = read_json_file(cfg_path);
  const size_t edits = cfg.contains("quantization") && cfg["quantization"].contains("edits") ? cfg["quantization"]["edits"].size() : 0;
  const std::string weights = (dir / "model.safetensors").string();
  std::string what;
  if (edits > j.at("edits_before").get<size_t>()) {
    what = "the edit had completed (config.json records it)";
  } else {
    std::map<std::string, std::vector<float>> old;
    for (const auto& [name, v] : j.at("old").items()) old[name] = v.get<std::vector<float>>();
    const std::string id_old = j.value("old_save_id", ""), id_new = j.value("new_save_id", "");
    TensorStore head;
    load_safetensors(weights, head);
    const auto it = head.metadata.find(kSaveIdKey);
    const std::string now = it == head.metadata.end() ? "" : it->second;
    patch_safetensors_f32(weights, old, kSaveIdKey, now, now == id_new ? id_old : "");  // the old id back if it moved
    what = "the scales from before the edit are back";
  }
  remove_file_durably(jp);
  Model::load(dir.string());  // whole again
  fmt::print("{}: {}\n", s.model, what);
  return 0;
}

int run_set(const SetOpts& s) {
  if (s.recover) {
    if (!s.out.empty() || s.in_place || !s.point.empty()) fail("scales set --recover: give only MODEL");
    return run_recover(s);
  }
  if (s.point.empty()) fail("scales set: --point is required");
  if (!s.out.empty() && s.in_place) fail("scales set: give -o NEW or --in-place, not both");
  if (s.out.empty() && !s.in_place)
    fail("scales set: give -o NEW (a copy with the edit) or --in-place (edit {} itself)", s.model);
  const bool add = !std::isnan(s.add_clip);
  if (int(s.factor > 0) + int(s.value > 0) + int(add) != 1)
    fail("scales set: give one of --factor F, --value V (positive) or --add-clip C");
  if (!s.no_log) check_append_file(s.log, "--log");
  const fs::path src(s.model);
  if (fs::is_regular_file(src)) fail("scales set: {} is a file; give the quantized model's folder", s.model);
  fs::path dst = src;
  if (!s.out.empty()) {
    dst = s.out;
    if (fs::exists(dst) && fs::equivalent(src, dst)) fail("-o {}: is the model itself (use --in-place)", s.out);
    if (fs::exists(dst) && !s.force) fail("-o {}: already exists (add --force to replace its files)", s.out);
    check_output_dir(s.out, "-o");
  }
  // One writer at a time: the edited folder is locked from before it is read until it reloads.
  std::unique_ptr<FolderLock> lock;
  if (s.in_place) lock = std::make_unique<FolderLock>(src.string());
  auto m = Model::load(s.model);
  const QuantState* q = m->quantized();
  if (!q) fail("scales set: {} is not a quantized model (its config.json has no \"quantization\" section)", s.model);
  const std::string rule_text =
      s.point + "@" + s.layers +
      (s.factor > 0 ? fmt::format("=*{}", s.factor) : add ? fmt::format("={:+}", s.add_clip) : fmt::format("={}", s.value));
  const ScaleRule rule = parse_scale_rule(rule_text, m->config(), "scales set");
  ScaleTable table = q->scales;
  nlohmann::json rec = apply_scale_rules(table, {rule}, "scales set")[0];
  if (!s.out.empty()) {
    fs::create_directories(dst);
    lock = std::make_unique<FolderLock>(dst.string());
    // every file but config.json first: config.json is written last (below), so until the copy
    // is whole NEW has none (or its old one, of another save: refused as a mixed folder)
    for (const auto& e : fs::directory_iterator(src))
      if (e.is_regular_file() && !is_folder_bookkeeping(e.path().filename().string()) &&
          e.path().filename() != "config.json") {
        // a new file under each name: a link in NEW is replaced, not written through
        AtomicWriter w((dst / e.path().filename()).string());
        w.copy_from(e.path().string());
        w.commit();
      }
  }
  const std::string weights = (dst / "model.safetensors").string();
  std::map<std::string, std::vector<float>> patch, old;
  for (const auto& p : table.points) {
    const PointScale* was = q->scales.find(p.layer, p.point);
    if (was && was->scale == p.scale && was->values == p.values) continue;
    const std::string name = scale_tensor_name(m->config().arch, p.layer, p.point);
    patch[name] = p.values.empty() ? std::vector<float>{p.scale} : p.values;
    if (was) old[name] = was->values.empty() ? std::vector<float>{was->scale} : was->values;
  }
  const std::string cfg_file = (dst / "config.json").string();
  if (s.in_place) {  // config.json is replaced by a new file below; refuse first what patching cannot keep apart
    struct stat st {};
    if (::lstat(cfg_file.c_str(), &st) == 0 && (S_ISLNK(st.st_mode) || st.st_nlink > 1))
      fail("{}: is a link or has other names; editing the folder in place would mix it with the copies it shares "
           "files with (write a copy with -o NEW)", cfg_file);
  }
  // The journal first (what --recover needs to undo the patch), then the weights with a new save
  // id, then config.json recording the edit and the id, then the journal goes: a kill at any point
  // leaves a folder that loads as before, or one refused until `--recover`.
  // (-o: the copy's weights are patched, then config.json written; no journal: until config.json
  // lands, NEW is not a folder that loads)
  nlohmann::json cfg = read_json_file((src / "config.json").string());
  const std::string id_old = q->meta.save_id, id_new = id_old.empty() ? "" : new_save_id();
  rec["time"] = utc_timestamp();
  const std::string journal = (dst / kPendingEditFile).string();
  if (s.in_place)
    write_json(journal, {{"rule", rule_text}, {"time", rec["time"]}, {"edits_before", q->meta.edits.size()},
                         {"old_save_id", id_old}, {"new_save_id", id_new}, {"old", old}});
  patch_safetensors_f32(weights, patch, kSaveIdKey, id_old, id_new);  // no id before: none after
  if (!s.note.empty()) rec["note"] = s.note;
  if (!s.out.empty()) rec["from"] = s.model;
  cfg["quantization"]["edits"].push_back(rec);
  if (!id_new.empty()) cfg["quantization"]["save_id"] = id_new;
  write_text_file(cfg_file, cfg.dump(2) + "\n");
  if (s.in_place) remove_file_durably(journal);
  // the folder reloads with exactly the new scales
  auto check = Model::load(dst.string());
  for (const auto& p : table.points) {
    const PointScale* got = check->quantized()->scales.find(p.layer, p.point);
    if (!got || got->scale != p.scale) fail("internal error: {} did not reload with the edited scale", dst.string());
  }
  lock.reset();
  if (!s.no_log) {
    nlohmann::json r = log_header("scales_set");
    r["model"] = s.model;
    r["output"] = dst.string();
    r["output_id"] = model_identity(dst.string());
    r["edit"] = rec;
    append_log(s.log, r);
  }
  const auto& layers = rec["layers"];
  fmt::print("{} in {} layer(s) ({}): {} -> {}{}; written to {}\n", s.point, layers.size(), layers.dump(),
             rec["old"][0].get<double>(), rec["new"][0].get<double>(),
             s.factor > 0 ? fmt::format(" (x{})", s.factor) : add ? fmt::format(" (clip {:+})", s.add_clip) : "", dst.string());
  return 0;
}

void print_edits(const std::string& who, const QuantMeta& qm) {
  for (const auto& e : qm.edits)
    fmt::print("{}edit {}: {} layers {}{}\n", who, e.value("time", ""), e.value("rule", ""), e.value("layers", nlohmann::json()).dump(),
               e.contains("note") ? " (" + e["note"].get<std::string>() + ")" : "");
  if (!qm.scale_overrides.empty())
    fmt::print("{}calibrated with --scale-override {}\n", who, nlohmann::json(qm.scale_overrides).dump());
}

Runner register_scales(CLI::App& app) {
  struct Opts {
    std::string a, b, json;
    double threshold = 0.01;
    SetOpts set;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("scales", "List the scales of a quantized model, compare two models' scales, or "
                                           "change some (scales set)");
  auto* set = sub->add_subcommand("set", "Rewrite activation scales of a quantized folder (every other byte kept); "
                                         "the edit is appended to config.json's quantization.edits");
  set->add_option("MODEL", o->set.model, "Quantized model folder")->required();
  set->add_option("-o,--output", o->set.out, "Write the edited copy here (the folder is copied, then edited)");
  set->add_flag("--in-place", o->set.in_place, "Edit MODEL itself");
  set->add_flag("--force", o->set.force, "-o: replace the files of an existing folder");
  set->add_option("--point", o->set.point, "Scale point, e.g. x_proj:input (`mambaq scales MODEL` lists them)");
  set->add_flag("--recover", o->set.recover,
                "Put a folder whose in-place edit was interrupted back in order (the old scales, or the completed edit)");
  set->add_option("--layers", o->set.layers, "all, N, N-M or a comma list (head: the LM head's input)")->capture_default_str();
  set->add_option("--factor", o->set.factor, "Multiply the scales by F")->check(CLI::PositiveNumber);
  set->add_option("--value", o->set.value, "Set the scales to V")->check(CLI::PositiveNumber);
  set->add_option("--add-clip", o->set.add_clip,
                  "Add C to the clip value (scale = (clip + C) / qmax; the notes' cur_max + 2025); C may be negative");
  set->add_option("--note", o->set.note, "Why: kept with the edit in the folder's history");
  set->add_option("--log", o->set.log, "Experiment log (JSONL, appended)")->capture_default_str();
  set->add_flag("--no-log", o->set.no_log, "Do not append to the experiment log");
  sub->add_option("MODEL", o->a, "Quantized model folder");
  sub->add_option("MODEL_B", o->b, "Second quantized model: show both side by side");
  sub->add_option("--threshold", o->threshold, "List scales whose relative difference exceeds this")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Write the rows and the summary as JSON to FILE ('-' = stdout)");
  auto force = add_force(sub);
  return [o, set, force] {
    if (set->parsed()) return run_set(o->set);
    if (o->a.empty()) fail("scales: MODEL is required (or: scales set MODEL --point P ...)");
    check_new_output_file(o->json, "--json", *force);
    auto ma = Model::load(o->a);
    const auto ra = scale_rows(*ma, o->a);
    if (o->b.empty()) {
      const QuantMeta& qm = ma->quantized()->meta;
      fmt::print("{}\n", qm.summary());
      print_edits("", qm);
      if (!qm.layers.empty()) fmt::print("layer precision: {}\n", qm.layers_str());
      // columns as wide as the longest kind and observer names (a grouped kind is long)
      size_t kw = 28, ow = 14;
      for (const auto& r : ra) kw = std::max(kw, r.kind.size()), ow = std::max(ow, r.observer.size());
      fmt::print("{:>5}  {:<{}} {:<{}} {:>12}  {}\n", "layer", "kind", kw, "observer", ow, "scale", "tensor");
      std::map<std::string, std::vector<double>> by;
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& r : ra) {
        fmt::print("{:>5}  {:<{}} {:<{}} {:>12.6g}  {}\n", r.layer, r.kind, kw, r.observer, ow, r.scale, r.tensor);
        auto& v = by[r.kind.substr(0, r.kind.find("(max/"))];
        if (r.values.empty()) v.push_back(r.scale); else v.insert(v.end(), r.values.begin(), r.values.end());
        nlohmann::json row = {{"layer", r.layer}, {"kind", r.kind}, {"observer", r.observer}, {"tensor", r.tensor},
                              {"scale", r.scale}};
        if (!r.values.empty()) row["values"] = r.values;
        rows.push_back(row);
      }
      fmt::print("\n{:<{}} {:>6} {:>12} {:>12} {:>12}\n", "kind", kw, "count", "min", "median", "max");
      nlohmann::json summary = nlohmann::json::object();
      for (const auto& [k, v] : by) {
        const Stat s = stat(v);
        fmt::print("{:<{}} {:>6} {:>12.6g} {:>12.6g} {:>12.6g}\n", k, kw, s.n, s.min, s.median, s.max);
        summary[k] = {{"count", s.n}, {"min", s.min}, {"median", s.median}, {"max", s.max}};
      }
      if (!o->json.empty())
        write_json(o->json, {{"model", o->a}, {"quantization", qm.to_json()}, {"scales", rows}, {"summary", summary}});
      return 0;
    }
    auto mb = Model::load(o->b);
    const auto& ca = ma->config();
    const auto& cb = mb->config();
    if (ca.arch != cb.arch || ca.n_layer != cb.n_layer || ca.d_model != cb.d_model || ca.d_inner != cb.d_inner ||
        ca.d_state != cb.d_state)
      fail("{} and {} have different shapes ({} {} layers x d_model {} vs {} {} layers x d_model {}); their scales "
           "do not correspond",
           o->a, o->b, arch_name(ca.arch), ca.n_layer, ca.d_model, arch_name(cb.arch), cb.n_layer, cb.d_model);
    const auto rb = scale_rows(*mb, o->b);
    print_edits("A: ", ma->quantized()->meta);
    print_edits("B: ", mb->quantized()->meta);
    std::map<std::pair<int, std::string>, const ScaleRow*> idx;
    for (const auto& r : rb) idx[{r.layer, r.kind}] = &r;
    size_t kw = 28, ow = 12;
    for (const auto& r : ra) kw = std::max(kw, r.kind.size()), ow = std::max(ow, r.observer.size());
    fmt::print("{:>5}  {:<{}} {:<{}} {:>12} {:>12} {:>10}\n", "layer", "kind", kw, "observer", ow, "A", "B", "rel diff");
    std::map<std::string, std::vector<double>> diffs;
    nlohmann::json rows = nlohmann::json::array(), big = nlohmann::json::array();
    std::vector<std::string> over;
    for (const auto& r : ra) {
      auto it = idx.find({r.layer, r.kind});
      if (it == idx.end()) continue;
      const double d = (it->second->scale - r.scale) / r.scale;
      fmt::print("{:>5}  {:<{}} {:<{}} {:>12.6g} {:>12.6g} {:>+9.3f}%\n", r.layer, r.kind, kw, r.observer, ow, r.scale,
                 it->second->scale, 100 * d);
      diffs[r.kind].push_back(std::fabs(d));
      nlohmann::json row = {{"layer", r.layer}, {"kind", r.kind},  {"observer", r.observer}, {"tensor", r.tensor},
                            {"a", r.scale},     {"b", it->second->scale}, {"rel_diff", d}};
      rows.push_back(row);
      if (std::fabs(d) > o->threshold) {
        big.push_back(row);
        over.push_back(fmt::format("  layer {:>3} {:<{}} {:+.3f}%", r.layer, r.kind, kw, 100 * d));
      }
    }
    fmt::print("\n{:<{}} {:>6} {:>12} {:>12} {:>12}   (|relative difference|)\n", "kind", kw, "count", "mean", "median",
               "max");
    nlohmann::json summary = nlohmann::json::object();
    for (const auto& [k, v] : diffs) {
      const Stat s = stat(v);
      fmt::print("{:<{}} {:>6} {:>11.4f}% {:>11.4f}% {:>11.4f}%\n", k, kw, s.n, 100 * s.mean, 100 * s.median, 100 * s.max);
      summary[k] = {{"count", s.n}, {"mean", s.mean}, {"median", s.median}, {"max", s.max}};
    }
    fmt::print("\n{} scales differ by more than {}%\n", over.size(), 100 * o->threshold);
    for (const auto& l : over) fmt::print("{}\n", l);
    if (!o->json.empty())
      write_json(o->json, {{"a", o->a}, {"b", o->b}, {"threshold", o->threshold}, {"scales", rows},
                           {"summary", summary}, {"over_threshold", big},
                           {"edits_a", ma->quantized()->meta.edits}, {"edits_b", mb->quantized()->meta.edits}});
    return 0;
  };
}

}  // namespace mambaq::cli
