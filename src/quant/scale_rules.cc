#include "quant/scale_rules.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "mambaq/error.h"
#include "model/points.h"

namespace mambaq {

namespace {

std::string known_points(Arch a) {
  std::string s;
  for (const auto& p : scale_points(a)) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

double parse_number(const std::string& s, const std::string& what) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) fail("{}: '{}' is not a number", what, s);
  return v;
}

}  // namespace

std::vector<int> parse_layers(const std::string& s, int n_layer, const std::string& flag) {
  std::vector<int> out;
  if (s.empty() || s == "all") return out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    const std::string item = s.substr(i, j - i);
    if (item == "head" || item == "-1") {
      out.push_back(-1);
    } else {
      const size_t dash = item.find('-', 1);
      // a layer is written in decimal digits only (not 0x1, 1e0, +1 or empty)
      const auto num = [&](const std::string& t) {
        if (t.empty() || t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos)
          fail("{}: layer '{}' is not a layer number (decimal digits, a range like 2-5, or head)", flag, t);
        const int v = std::stoi(t);
        if (v >= n_layer) fail("{}: layer '{}' is not a layer of this model (0 to {}, or head)", flag, t, n_layer - 1);
        return v;
      };
      if (dash == std::string::npos) {
        out.push_back(num(item));
      } else {
        const int a = num(item.substr(0, dash)), b = num(item.substr(dash + 1));
        if (b < a) fail("{}: layer range '{}' runs backwards", flag, item);
        for (int l = a; l <= b; ++l) out.push_back(l);
      }
    }
    i = j + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

ScaleRule parse_scale_rule(const std::string& text, const ModelConfig& cfg, const std::string& flag) {
  ScaleRule r;
  r.text = text;
  const std::string what = flag + " '" + text + "'";
  std::string lhs, rhs;
  if (const size_t a = text.find(":alpha="); a != std::string::npos) {
    lhs = text.substr(0, a), rhs = text.substr(a + 7);
    r.kind = ScaleRule::Alpha;
    r.x = parse_number(rhs, what + ": alpha");
    if (!(r.x > 0 && r.x <= 1)) fail("{}: alpha must be in (0, 1] (got {})", what, r.x);
  } else {
    const size_t eq = text.rfind('=');
    if (eq == std::string::npos)
      fail("{}: expected POINT[@LAYERS]=*FACTOR, POINT[@LAYERS]=VALUE, POINT[@LAYERS]=+CLIP_OFFSET or "
           "POINT[@LAYERS]:alpha=A", what);
    lhs = text.substr(0, eq), rhs = text.substr(eq + 1);
    if (!rhs.empty() && rhs[0] == '*') {
      r.kind = ScaleRule::Factor;
      r.x = parse_number(rhs.substr(1), what + ": factor");
    } else if (!rhs.empty() && (rhs[0] == '+' || rhs[0] == '-')) {
      r.kind = ScaleRule::AddClip;
      r.x = parse_number(rhs, what + ": clip offset");
      if (r.x == 0 || !std::isfinite(r.x)) fail("{}: a clip offset must be a finite non-zero number (got {})", what, rhs);
    } else {
      r.kind = ScaleRule::Value;
      r.x = parse_number(rhs, what + ": value");
    }
    if (r.kind != ScaleRule::AddClip && !(r.x > 0))
      fail("{}: a scale {} must be positive (got {})", what, r.kind == ScaleRule::Factor ? "factor" : "value", r.x);
  }
  const size_t at = lhs.find('@');
  r.point = lhs.substr(0, at);
  if (!find_scale_point(cfg.arch, r.point))
    fail("{}: '{}' is not a scale point of {} (points: {})", what, r.point, arch_name(cfg.arch), known_points(cfg.arch));
  if (at != std::string::npos) {
    if (lhs.size() == at + 1) fail("{}: no layers after '@' (e.g. {}@0-3, or leave '@' out for every layer)", what, r.point);
    r.layers = parse_layers(lhs.substr(at + 1), cfg.n_layer, what);
  }
  return r;
}

std::map<std::pair<int, std::string>, double> rule_alphas(const std::vector<ScaleRule>& rules, const ModelConfig& cfg) {
  std::map<std::pair<int, std::string>, double> out;
  for (const auto& r : rules) {
    if (r.kind != ScaleRule::Alpha) continue;
    const ScalePoint* sp = find_scale_point(cfg.arch, r.point);
    std::vector<int> ls = r.layers;
    if (ls.empty()) {
      if (sp->head) ls = {-1};
      else for (int l = 0; l < cfg.n_layer; ++l) ls.push_back(l);
    }
    for (int l : ls) out[{l, r.point}] = r.x;
  }
  return out;
}

nlohmann::json apply_scale_rules(ScaleTable& t, const std::vector<ScaleRule>& rules, const std::string& flag) {
  nlohmann::json recs = nlohmann::json::array();
  for (const auto& r : rules) {
    if (r.kind == ScaleRule::Alpha) continue;
    nlohmann::json layers = nlohmann::json::array(), olds = nlohmann::json::array(), news = nlohmann::json::array();
    for (auto& p : t.points) {
      if (p.point != r.point) continue;
      if (!r.layers.empty() && !std::binary_search(r.layers.begin(), r.layers.end(), p.layer)) continue;
      olds.push_back(p.scale);
      if (r.kind == ScaleRule::AddClip) {
        // clip + C, at the point's own qmax (= clip / scale): every block of a grouped scale moves
        // its clip value by C alike
        const double qmax = double(p.amax) / double(p.scale);
        if (!(p.scale > 0) || !(qmax > 0) || !std::isfinite(qmax))
          fail("{} '{}': layer {} {} has no usable clip value (amax {}, scale {})", flag, r.text, p.layer, p.point, p.amax, p.scale);
        const double d = r.x / qmax;
        const double lowest = p.values.empty() ? double(p.scale) : double(*std::min_element(p.values.begin(), p.values.end()));
        if (!(lowest + d > 0))
          fail("{} '{}': layer {} {}: the clip value {} {:+} would not be positive", flag, r.text, p.layer, p.point,
               p.values.empty() ? double(p.amax) : lowest * qmax, r.x);
        p.scale = float(double(p.scale) + d);
        p.amax = float(double(p.amax) + r.x);
        for (auto& v : p.values) v = float(double(v) + d);
      } else {
        const double f = r.kind == ScaleRule::Factor ? r.x : r.x / double(p.scale);
        p.scale = float(r.kind == ScaleRule::Factor ? p.scale * r.x : r.x);
        p.amax = float(p.amax * f);
        for (auto& v : p.values) v = float(v * f);
      }
      // every new scale must be a positive, finite, normal float32 (what every loader accepts):
      // checked here, before any caller writes anything
      auto usable = [](float v) { return std::isnormal(v) && v > 0; };
      bool ok = usable(p.scale) && std::isfinite(p.amax);
      for (float v : p.values) ok = ok && usable(v);
      if (!ok)
        fail("{} '{}': layer {} {}: the new scale {} is not a positive, finite, normal float32 (from {}); nothing "
             "was written", flag, r.text, p.layer, p.point, p.scale, olds.back().get<float>());
      layers.push_back(p.layer);
      news.push_back(p.scale);
    }
    if (layers.empty()) fail("{} '{}': the model has no scale at {} in those layers", flag, r.text, r.point);
    nlohmann::json rec = {{"rule", r.text}, {"point", r.point}, {"layers", layers}, {"old", olds}, {"new", news}};
    rec[r.kind == ScaleRule::Factor ? "factor" : r.kind == ScaleRule::Value ? "value" : "clip_offset"] = r.x;
    recs.push_back(rec);
  }
  return recs;
}

}  // namespace mambaq
