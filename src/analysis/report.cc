#include "analysis/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "mambaq/error.h"
#include "quant/observer.h"

namespace mambaq {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"};

struct Series {
  std::string name;
  std::vector<double> x, y;
};

// A line chart of per-layer values; log_y plots log10(y) (non-positive values are dropped). Each
// series is one <g class="series"> named by its <title>; points of adjacent layers are joined, a
// layer that was not measured leaves a gap (no line drawn through it). The legend sits below.
std::string line_chart(const std::string& id, const std::string& title, const std::string& ylabel,
                       const std::vector<Series>& ss, bool log_y) {
  const double W = 720, L = 70, R = 20, T = 30, B = 40, plot_h = 230;
  const double H = T + plot_h + B + 16.0 * double(ss.size()) + 8;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  auto ty = [&](double v) { return log_y ? std::log10(v) : v; };
  auto usable = [&](const Series& s, size_t i) {
    return !(log_y && !(s.y[i] > 0)) && std::isfinite(s.x[i]) && std::isfinite(s.y[i]);
  };
  for (const auto& s : ss)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s, i)) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  std::string o = fmt::format(R"~(<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}">)~", esc(id), W, H, W, H);
  o += fmt::format(R"~(<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>)~", L, esc(title));
  if (x0 > x1) return o + R"~(<text x="80" y="150">no data</text></svg>)~";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1, y0 -= 1;
  // points kept 10 px inside the frame, so that the first and last layers are not drawn on it
  auto px = [&](double v) { return L + 10 + (v - x0) / (x1 - x0) * (W - L - R - 20); };
  auto py = [&](double v) { return T + plot_h - 10 - (v - y0) / (y1 - y0) * (plot_h - 20); };
  o += fmt::format(R"~(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>)~", L, T, W - L - R, plot_h);
  for (int k = 0; k <= 4; ++k) {
    const double v = y0 + (y1 - y0) * k / 4;
    o += fmt::format(R"~(<text x="{}" y="{:.1f}" font-size="10" text-anchor="end">{}</text>)~", L - 4, py(v) + 3,
                     fmt::format("{:.3g}", log_y ? std::pow(10.0, v) : v));
  }
  // x ticks: every layer when the positions are whole numbers (thinned to at most ~12), else 5 ticks
  bool whole = true;
  for (const auto& s : ss)
    for (double x : s.x) whole = whole && (!std::isfinite(x) || x == std::floor(x));
  const double step = whole ? std::max(1.0, std::ceil((x1 - x0) / 12)) : (x1 - x0) / 4;
  for (double v = x0; v <= x1 + 1e-9; v += step)
    o += fmt::format(R"~(<text x="{:.1f}" y="{}" font-size="10" text-anchor="middle">{:.3g}</text>)~", px(v),
                     T + plot_h + 14, v);
  o += fmt::format(R"~(<text x="{}" y="{}" font-size="11" text-anchor="middle">layer</text>)~", L + (W - L - R) / 2,
                   T + plot_h + 30);
  o += fmt::format(R"~(<text x="14" y="{}" font-size="11" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>)~",
                   T + plot_h / 2, T + plot_h / 2, esc(ylabel));
  for (size_t si = 0; si < ss.size(); ++si) {
    const char* col = kColors[si % 8];
    const Series& s = ss[si];
    o += R"~(<g class="series"><title>)~" + esc(s.name) + "</title>";
    std::string pts;
    int npts = 0;
    double prev = NAN;
    auto flush = [&] {
      if (npts > 1) o += fmt::format(R"~(<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>)~", pts, col);
      pts.clear(), npts = 0;
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s, i)) {
        flush();
        continue;
      }
      if (npts && whole && s.x[i] - prev != 1) flush();  // a layer in between was not measured
      pts += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(ty(s.y[i])));
      ++npts, prev = s.x[i];
      o += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="2.5" fill="{}"/>)~", px(s.x[i]), py(ty(s.y[i])), col);
    }
    flush();
    const double ly = T + plot_h + B + 12 + 16.0 * double(si);
    o += fmt::format(R"~(<line x1="{}" y1="{:.0f}" x2="{}" y2="{:.0f}" stroke="{}" stroke-width="2"/>)~", L, ly - 4, L + 18,
                     ly - 4, col);
    o += fmt::format(R"~(<text x="{}" y="{:.0f}" font-size="11" fill="{}">{}</text></g>)~", L + 24, ly, col, esc(s.name));
  }
  return o + "</svg>";
}

// numpy-style histogram of differences (cand - ref): bars of log count over [lo, hi], a line at 0.
std::string diff_hist_chart(const std::string& id, const std::string& title, const nlohmann::json& h) {
  const double W = 720, H = 200, L = 50, R = 20, T = 30, B = 34;
  const double lo = h.at("lo").get<double>(), hi = h.at("hi").get<double>();
  const auto counts = h.at("counts").get<std::vector<uint64_t>>();
  std::string o = fmt::format(R"~(<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}">)~", esc(id), W, H, W, H);
  o += fmt::format(R"~(<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>)~", L, esc(title));
  if (counts.empty() || !(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi))
    return o + R"~(<text x="80" y="100">no data</text></svg>)~";
  uint64_t total = 0, cmax = 0;
  for (auto c : counts) total += c, cmax = std::max(cmax, c);
  const double pw = W - L - R, ph = H - T - B, lmax = std::log10(1.0 + double(cmax));
  const double bw = pw / double(counts.size());
  for (size_t b = 0; b < counts.size(); ++b) {
    const double hh = lmax > 0 ? std::log10(1.0 + double(counts[b])) / lmax * ph : 0;
    o += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.2f}" height="{:.1f}" fill="#9ecae1"/>)~", L + bw * double(b),
                     T + ph - hh, bw, hh);
  }
  o += fmt::format(R"~(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>)~", L, T, pw, ph);
  if (lo < 0 && hi > 0) {
    const double x0 = L + (0 - lo) / (hi - lo) * pw;
    o += fmt::format(R"~(<line x1="{:.1f}" y1="{}" x2="{:.1f}" y2="{}" stroke="#d62728" stroke-dasharray="4 2"/>)~", x0, T,
                     x0, T + ph);
  }
  o += fmt::format(R"~(<text x="{}" y="{}" font-size="10">{:.4g}</text><text x="{}" y="{}" font-size="10" text-anchor="end">{:.4g}</text>)~",
                   L, T + ph + 13, lo, L + pw, T + ph + 13, hi);
  o += fmt::format(R"~(<text x="{}" y="{}" font-size="11" text-anchor="middle">cand - ref ({} values, {} bins; bar height: log count)</text>)~",
                   L + pw / 2, H - 6, total, counts.size());
  return o + "</svg>";
}

// Histogram of |x| (log-count bars) with a vertical line at each alpha's clip value.
std::string histogram(const std::string& id, const std::string& title, const std::vector<float>& v,
                      const std::vector<double>& alphas) {
  const double W = 640, H = 240, L = 50, R = 150, T = 30, B = 36;
  // NaN and Inf cannot be binned: they are counted and named in the chart instead.
  std::vector<float> a;
  a.reserve(v.size());
  size_t bad = 0;
  for (float x : v) {
    if (std::isfinite(x)) a.push_back(std::fabs(x));
    else ++bad;
  }
  const float mx = a.empty() ? 1.f : std::max(*std::max_element(a.begin(), a.end()), 1e-30f);
  const int nb = 60;
  std::vector<int> cnt(nb, 0);
  for (float x : a) cnt[size_t(std::min(nb - 1, int(x / mx * nb)))]++;
  const double cmax = std::log10(1.0 + *std::max_element(cnt.begin(), cnt.end()));
  std::string o = fmt::format(R"~(<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}">)~", esc(id), W, H, W, H);
  o += fmt::format(R"~(<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>)~", L, esc(title));
  if (bad)
    o += fmt::format(R"~(<text x="{}" y="{}" font-size="12" fill="#d62728">{} non-finite values (NaN or Inf) not drawn</text>)~",
                     L + 8, T + 14, bad);
  const double pw = W - L - R, ph = H - T - B;
  for (int b = 0; b < nb; ++b) {
    const double h = cmax > 0 ? std::log10(1.0 + cnt[size_t(b)]) / cmax * ph : 0;
    o += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="#9ecae1"/>)~", L + pw * b / nb,
                     T + ph - h, pw / nb, h);
  }
  o += fmt::format(R"~(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>)~", L, T, pw, ph);
  o += fmt::format(R"~(<text x="{}" y="{}" font-size="10">0</text><text x="{}" y="{}" font-size="10" text-anchor="end">{:.4g}</text>)~",
                   L, H - B + 13, L + pw, H - B + 13, mx);
  o += fmt::format(R"~(<text x="{}" y="{}" font-size="11" text-anchor="middle">|x| ({} sampled values; bar height: log count)</text>)~",
                   L + pw / 2, H - 6, v.size());
  for (size_t k = 0; k < alphas.size(); ++k) {
    const float q = a.empty() ? 0.f : abs_quantile(a.data(), a.size(), alphas[k]);
    const double x = L + pw * std::min(1.0, double(q / mx));
    const char* col = kColors[(k + 1) % 8];
    o += fmt::format(R"~(<line x1="{:.1f}" y1="{}" x2="{:.1f}" y2="{}" stroke="{}" stroke-width="1.5" stroke-dasharray="4 2"/>)~",
                     x, T, x, T + ph, col);
    o += fmt::format(R"~(<text x="{}" y="{}" font-size="11" fill="{}">alpha {} : {:.4g}</text>)~", W - R + 8,
                     T + 14 + 15 * k, col, alphas[k], q);
  }
  return o + "</svg>";
}

// Horizontal bars of relative differences (percent), one per label.
std::string bars(const std::string& id, const std::string& title, const std::vector<std::pair<std::string, double>>& rows) {
  const double W = 640, L = 220, R = 80, T = 30, rowh = 16;
  const double H = T + rowh * double(rows.size()) + 20;
  double m = 1e-12;
  for (const auto& r : rows)
    if (std::isfinite(r.second)) m = std::max(m, std::fabs(r.second));
  std::string o = fmt::format(R"~(<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{}" height="{:.0f}" viewBox="0 0 {} {:.0f}">)~", esc(id), W, H, W, H);
  o += fmt::format(R"~(<text x="10" y="18" font-size="13" font-weight="bold">{}</text>)~", esc(title));
  const double mid = L + (W - L - R) / 2, half = (W - L - R) / 2;
  o += fmt::format(R"~(<line x1="{}" y1="{}" x2="{}" y2="{:.0f}" stroke="#999"/>)~", mid, T - 4, mid, H - 16);
  for (size_t i = 0; i < rows.size(); ++i) {
    const double y = T + rowh * double(i), w = std::isfinite(rows[i].second) ? std::fabs(rows[i].second) / m * half : 0;
    const double x = rows[i].second >= 0 ? mid : mid - w;
    o += fmt::format(R"~(<text x="{}" y="{:.1f}" font-size="10" text-anchor="end">{}</text>)~", L - 6, y + 11,
                     esc(rows[i].first));
    o += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{}" fill="{}"/>)~", x, y + 2, w, rowh - 4,
                     rows[i].second >= 0 ? "#d62728" : "#1f77b4");
    o += fmt::format(R"~(<text x="{:.1f}" y="{:.1f}" font-size="10">{:+.3f}%</text>)~", W - R + 6, y + 11, rows[i].second);
  }
  return o + "</svg>";
}

// Heatmap of block_out MSE, one row per sample and one column per measured layer (log colour scale,
// white = smallest, dark red = largest), the value in each cell's tooltip.
std::string sample_heatmap(const std::string& id, const std::string& title, const nlohmann::json& layers) {
  std::vector<int> cols;
  std::vector<std::vector<double>> v;  // [layer column][sample]
  for (const auto& l : layers)
    if (l.value("tensor", "") == "block_out" && l.contains("per_sample")) {
      cols.push_back(l.at("layer").get<int>());
      std::vector<double> c;
      for (const auto& p : l.at("per_sample")) c.push_back(p.value("mse", 0.0));
      v.push_back(c);
    }
  if (cols.empty() || v[0].empty()) return "";
  const size_t ns = v[0].size();
  double lo = 1e300, hi = -1e300;
  for (const auto& c : v)
    for (double x : c)
      if (x > 0 && std::isfinite(x)) lo = std::min(lo, std::log10(x)), hi = std::max(hi, std::log10(x));
  if (lo > hi) lo = hi = 0;
  const double L = 70, T = 30, cw = std::max(12.0, std::min(48.0, 600.0 / double(cols.size()))), ch = 16;
  const double W = L + cw * double(cols.size()) + 20, H = T + ch * double(ns) + 40;
  std::string o = fmt::format(R"~(<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{:.0f}" height="{:.0f}" viewBox="0 0 {:.0f} {:.0f}">)~",
                              esc(id), W, H, W, H);
  o += fmt::format(R"~(<text x="10" y="18" font-size="13" font-weight="bold">{}</text>)~", esc(title));
  for (size_t c = 0; c < cols.size(); ++c)
    for (size_t r = 0; r < ns && r < v[c].size(); ++r) {
      const double x = v[c][r];
      const double t = x > 0 && std::isfinite(x) && hi > lo ? (std::log10(x) - lo) / (hi - lo) : 0;
      const int g = int(255 * (1 - t)), rr = int(255 - 90 * t);  // white -> dark red
      o += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{}" fill="rgb({},{},{})"><title>sample {} layer {}: MSE {:.4e}</title></rect>)~",
                       L + cw * double(c), T + ch * double(r), cw - 1, ch - 1, rr, g, g, r, cols[c], x);
    }
  for (size_t r = 0; r < ns; ++r)
    o += fmt::format(R"~(<text x="{}" y="{:.1f}" font-size="10" text-anchor="end">sample {}</text>)~", L - 4,
                     T + ch * double(r) + 11, r);
  for (size_t c = 0; c < cols.size(); ++c)
    o += fmt::format(R"~(<text x="{:.1f}" y="{:.1f}" font-size="10" text-anchor="middle">{}</text>)~",
                     L + cw * (double(c) + 0.5), T + ch * double(ns) + 12, cols[c]);
  o += fmt::format(R"~(<text x="{}" y="{:.1f}" font-size="10">layer (block_out); colour: log MSE from {:.3g} (white) to {:.3g} (red)</text>)~",
                   L, T + ch * double(ns) + 30, std::pow(10.0, lo), std::pow(10.0, hi));
  return o + "</svg>";
}

// ---- compare files: every run of every file overlaid, then each file's details ----

// The runs of one compare JSON: "runs" (mambaq >= 0.x with several candidates), "modes" (one
// candidate, several modes), or the single run at the top level.
std::vector<nlohmann::json> runs_of(const nlohmann::json& j) {
  if (j.contains("runs")) return j.at("runs").get<std::vector<nlohmann::json>>();
  if (j.contains("modes")) return j.at("modes").get<std::vector<nlohmann::json>>();
  return {{{"mode", j.value("cand_mode", "cand")}, {"layers", j.at("layers")}, {"logits", j.at("logits")}}};
}

std::string base_name(const std::string& p) {
  std::string s = p;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  const size_t k = s.rfind('/');
  return k == std::string::npos ? s : s.substr(k + 1);
}

struct RunRef {
  size_t file;
  std::string label;
  nlohmann::json run;
};

std::string compare_sections(const std::vector<std::pair<std::string, nlohmann::json>>& files, std::string& current) {
  if (files.empty()) return "";
  std::vector<RunRef> runs;
  for (size_t f = 0; f < files.size(); ++f) {
    const auto& [file, j] = files[f];
    current = file;
    for (auto& r : runs_of(j)) {
      std::string label = r.value("label", "");
      if (label.empty()) {  // files from before labels: the candidate's folder name, mode and fp-ops
        const std::string ops = r.value("fp_ops", "");
        label = base_name(r.value("cand", j.value("cand", "cand"))) + " " + r.value("mode", "?") +
                (ops.empty() ? "" : " (FP32: " + ops + ")");
      }
      runs.push_back({f, label, std::move(r)});
    }
  }
  // the same label from two files (same candidate, other inputs or reference): say which file
  std::map<std::string, int> uses;
  for (const auto& r : runs) uses[r.label]++;
  for (auto& r : runs)
    if (uses[r.label] > 1) r.label += " [" + base_name(files[r.file].first) + "]";
  std::string h = fmt::format("<details open=\"open\"><summary>Layer errors: {} run{} from {} compare file{}</summary>\n",
                              runs.size(), runs.size() == 1 ? "" : "s", files.size(), files.size() == 1 ? "" : "s");
  h += "<ul>";
  std::set<std::string> inputs;
  for (const auto& [file, j] : files) {
    const std::string in = fmt::format("{} ({}), {} samples x {} tokens, data {}", j.value("ref", "?"), j.value("ref_mode", "?"),
                                       j.value("samples", 0), j.value("seqlen", 0), j.value("data", "?"));
    inputs.insert(in);
    h += "<li>" + esc(file) + ": reference " + esc(in) + "</li>";
  }
  h += "</ul>\n";
  if (inputs.size() > 1)
    h += "<p><b>These files were measured against other references or inputs</b>: their curves are not strictly "
         "comparable.</p>\n";
  for (const char* tensor : {"block_out", "mixer_out"}) {
    std::vector<Series> mse, corr;
    for (const auto& r : runs) {
      current = files[r.file].first;
      Series a{r.label, {}, {}}, c{r.label, {}, {}};
      for (const auto& l : r.run.at("layers"))
        if (l.value("tensor", "") == tensor) {
          a.x.push_back(l.at("layer").get<double>()), a.y.push_back(l.at("mse").get<double>());
          c.x.push_back(l.at("layer").get<double>()), c.y.push_back(1.0 - l.at("corr").get<double>());
        }
      mse.push_back(a), corr.push_back(c);
    }
    h += line_chart(fmt::format("overlay-mse-{}", tensor), fmt::format("MSE of {} by layer", tensor), "MSE (log)", mse, true) +
         "\n";
    h += line_chart(fmt::format("overlay-corr-{}", tensor), fmt::format("1 - correlation of {} by layer", tensor),
                    "1 - corr (log)", corr, true) + "\n";
  }
  h += "<table><tr><th>run</th><th>file</th><th>layers measured</th><th>mean KL(ref || cand)</th><th>top-1 agreement</th></tr>";
  for (const auto& r : runs) {
    current = files[r.file].first;
    std::set<int> ls;
    for (const auto& l : r.run.at("layers")) ls.insert(l.at("layer").get<int>());
    std::string lstr;
    for (int l : ls) lstr += fmt::format("{}{}", lstr.empty() ? "" : ",", l);
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.6g}</td><td>{:.4f}</td></tr>", esc(r.label),
                     esc(base_name(files[r.file].first)), lstr, r.run.at("logits").value("kl", 0.0),
                     r.run.at("logits").value("top1", 0.0));
  }
  h += "</table>\n</details>\n";

  // Details per file: per-sample statistics and difference histograms, closed until opened.
  for (size_t f = 0; f < files.size(); ++f) {
    current = files[f].first;
    h += "<details><summary>Details: " + esc(files[f].first) + "</summary>\n";
    size_t k = 0;
    for (const auto& r : runs) {
      if (r.file != f) continue;
      h += "<h3>" + esc(r.label) + "</h3>\n";
      const auto& lg = r.run.at("logits");
      const nlohmann::json* last = nullptr;  // block_out of the last layer measured
      for (const auto& l : r.run.at("layers"))
        if (l.value("tensor", "") == "block_out") last = &l;
      if (lg.contains("per_sample") && last && last->contains("per_sample")) {
        h += fmt::format("<table><tr><th>sample</th><th>tokens</th><th>KL</th><th>top-1</th><th>MSE (layer {} block_out)</th>"
                         "<th>corr</th><th>max |d|</th></tr>", last->at("layer").get<int>());
        const auto& ps = lg.at("per_sample");
        const auto& ls = last->at("per_sample");
        for (size_t i = 0; i < ps.size() && i < ls.size(); ++i)
          h += fmt::format("<tr><td>{}</td><td>{}</td><td>{:.4g}</td><td>{:.4f}</td><td>{:.4e}</td><td>{:.6f}</td><td>{:.4g}</td></tr>",
                           i, ps[i].value("tokens", 0), ps[i].value("kl", 0.0), ps[i].value("top1", 0.0),
                           ls[i].value("mse", 0.0), ls[i].value("corr", 0.0), ls[i].value("max_abs", 0.0));
        h += "</table>\n";
        h += sample_heatmap(fmt::format("samples-{}-{}", f, k), "MSE by sample and layer: " + r.label, r.run.at("layers")) + "\n";
      } else {
        h += "<p>No per-sample statistics in this file (written by an older mambaq compare).</p>\n";
      }
      std::string charts;
      for (const auto& l : r.run.at("layers"))
        if (l.contains("diff_histogram"))
          charts += diff_hist_chart(fmt::format("diff-{}-{}-{}-{}", f, k, l.at("layer").get<int>(), l.value("tensor", "")),
                                    fmt::format("layer {} {}: difference", l.at("layer").get<int>(), l.value("tensor", "")),
                                    l.at("diff_histogram")) + "\n";
      if (!charts.empty()) h += "<details><summary>Difference histograms: " + esc(r.label) + "</summary>\n" + charts + "</details>\n";
      ++k;
    }
    h += "</details>\n";
  }
  return h;
}

}  // namespace

static std::string render_impl(const ReportInputs& in, std::string& current);

std::string render_report(const ReportInputs& in) {
  std::string current;  // the input being drawn, for errors
  try {
    return render_impl(in, current);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a file `mambaq compare --json` or `mambaq scales --json` wrote: {}", current, e.what());
  }
}

static std::string render_impl(const ReportInputs& in, std::string& current) {
  std::string h = "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/><title>" +
                  esc(in.title) +
                  "</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
                  "h2{border-bottom:1px solid #ccc}table{border-collapse:collapse;font-size:12px}"
                  "td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}svg{display:block;margin:1em 0}"
                  "summary{font-size:1.3em;font-weight:bold;margin:1em 0 .5em;cursor:pointer}"
                  "details details summary{font-size:1em}"
                  "</style></head><body>\n<h1>" + esc(in.title) + "</h1>\n";
  int n = 0;
  h += compare_sections(in.compares, current);
  n = int(in.compares.size());  // ids of the later sections count on from the compare files
  for (const auto& [file, j] : in.scales) {
    current = file;
    h += "<details open=\"open\"><summary>Scale differences: " + esc(file) + "</summary>\n<p>" +
         esc(fmt::format("{} vs {}", j.value("a", "?"), j.value("b", "?"))) + "</p>\n";
    std::vector<std::pair<std::string, double>> kinds;
    const nlohmann::json summary = j.value("summary", nlohmann::json::object());
    const nlohmann::json scales = j.value("scales", nlohmann::json::array());
    for (auto& [k, v] : summary.items())
      kinds.emplace_back(k + " (max)", 100 * v.value("max", 0.0));
    h += bars(fmt::format("scales-{}-kinds", n), "largest |relative difference| per kind of scale", kinds) + "\n";
    std::vector<std::pair<std::string, double>> rows;
    for (const auto& s : scales)
      if (s.value("observer", "") == "percentile")
        rows.emplace_back(fmt::format("L{} {}", s.value("layer", 0), s.value("kind", "")), 100 * s.value("rel_diff", 0.0));
    if (!rows.empty())
      h += bars(fmt::format("scales-{}-percentile", n), "percentile-observer scales: relative difference (B vs A)", rows) + "\n";
    h += "</details>\n";
    ++n;
  }
  for (const auto& [file, arrays] : in.snapshots) {
    h += std::string(in.snapshots.size() == 1 ? "<details open=\"open\">" : "<details>") + "<summary>Activations: " +
         esc(file) + "</summary>\n<p>Dashed lines: the clip value (|x| quantile) each alpha would choose "
         "on these sampled values.</p>\n";
    for (const auto& [k, v] : arrays)
      h += histogram(fmt::format("hist-{}-{}", n, k), k, v, in.alphas) + "\n";
    h += "</details>\n";
    ++n;
  }
  if (in.compares.empty() && in.scales.empty() && in.snapshots.empty()) h += "<p>No inputs.</p>\n";
  return h + "</body></html>\n";
}

}  // namespace mambaq
