// mambaq scales MODEL [MODEL_B]: every scale of a quantized model (which observer made it), or
// the same scales of two models side by side.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "cli/common.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "core/stats.h"
#include "model/points.h"
#include "model/quant_state.h"

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

Runner register_scales(CLI::App& app) {
  struct Opts {
    std::string a, b, json;
    double threshold = 0.01;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("scales", "List the scales of a quantized model, or compare two models' scales");
  sub->add_option("MODEL", o->a, "Quantized model folder")->required();
  sub->add_option("MODEL_B", o->b, "Second quantized model: show both side by side");
  sub->add_option("--threshold", o->threshold, "List scales whose relative difference exceeds this")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Write the rows and the summary as JSON to FILE ('-' = stdout)");
  return [o] {
    check_output_file(o->json, "--json");
    auto ma = Model::load(o->a);
    const auto ra = scale_rows(*ma, o->a);
    if (o->b.empty()) {
      const QuantMeta& qm = ma->quantized()->meta;
      fmt::print("{}\n", qm.summary());
      if (!qm.layers.empty()) fmt::print("layer precision: {}\n", qm.layers_str());
      fmt::print("{:>5}  {:<28} {:<14} {:>12}  {}\n", "layer", "kind", "observer", "scale", "tensor");
      std::map<std::string, std::vector<double>> by;
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& r : ra) {
        fmt::print("{:>5}  {:<28} {:<14} {:>12.6g}  {}\n", r.layer, r.kind, r.observer, r.scale, r.tensor);
        auto& v = by[r.kind.substr(0, r.kind.find("(max/"))];
        if (r.values.empty()) v.push_back(r.scale); else v.insert(v.end(), r.values.begin(), r.values.end());
        nlohmann::json row = {{"layer", r.layer}, {"kind", r.kind}, {"observer", r.observer}, {"tensor", r.tensor},
                              {"scale", r.scale}};
        if (!r.values.empty()) row["values"] = r.values;
        rows.push_back(row);
      }
      fmt::print("\n{:<28} {:>6} {:>12} {:>12} {:>12}\n", "kind", "count", "min", "median", "max");
      nlohmann::json summary = nlohmann::json::object();
      for (const auto& [k, v] : by) {
        const Stat s = stat(v);
        fmt::print("{:<28} {:>6} {:>12.6g} {:>12.6g} {:>12.6g}\n", k, s.n, s.min, s.median, s.max);
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
    std::map<std::pair<int, std::string>, const ScaleRow*> idx;
    for (const auto& r : rb) idx[{r.layer, r.kind}] = &r;
    fmt::print("{:>5}  {:<28} {:<12} {:>12} {:>12} {:>10}\n", "layer", "kind", "observer", "A", "B", "rel diff");
    std::map<std::string, std::vector<double>> diffs;
    nlohmann::json rows = nlohmann::json::array(), big = nlohmann::json::array();
    std::vector<std::string> over;
    for (const auto& r : ra) {
      auto it = idx.find({r.layer, r.kind});
      if (it == idx.end()) continue;
      const double d = (it->second->scale - r.scale) / r.scale;
      fmt::print("{:>5}  {:<28} {:<12} {:>12.6g} {:>12.6g} {:>+9.3f}%\n", r.layer, r.kind, r.observer, r.scale,
                 it->second->scale, 100 * d);
      diffs[r.kind].push_back(std::fabs(d));
      nlohmann::json row = {{"layer", r.layer}, {"kind", r.kind},  {"observer", r.observer}, {"tensor", r.tensor},
                            {"a", r.scale},     {"b", it->second->scale}, {"rel_diff", d}};
      rows.push_back(row);
      if (std::fabs(d) > o->threshold) {
        big.push_back(row);
        over.push_back(fmt::format("  layer {:>3} {:<28} {:+.3f}%", r.layer, r.kind, 100 * d));
      }
    }
    fmt::print("\n{:<28} {:>6} {:>12} {:>12} {:>12}   (|relative difference|)\n", "kind", "count", "mean", "median",
               "max");
    nlohmann::json summary = nlohmann::json::object();
    for (const auto& [k, v] : diffs) {
      const Stat s = stat(v);
      fmt::print("{:<28} {:>6} {:>11.4f}% {:>11.4f}% {:>11.4f}%\n", k, s.n, 100 * s.mean, 100 * s.median, 100 * s.max);
      summary[k] = {{"count", s.n}, {"mean", s.mean}, {"median", s.median}, {"max", s.max}};
    }
    fmt::print("\n{} scales differ by more than {}%\n", over.size(), 100 * o->threshold);
    for (const auto& l : over) fmt::print("{}\n", l);
    if (!o->json.empty())
      write_json(o->json, {{"a", o->a}, {"b", o->b}, {"threshold", o->threshold}, {"scales", rows},
                           {"summary", summary}, {"over_threshold", big}});
    return 0;
  };
}

}  // namespace mambaq::cli
