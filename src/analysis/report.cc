#include "analysis/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

// A line chart; log_y plots log10(y) (non-positive values are dropped).
std::string line_chart(const std::string& id, const std::string& title, const std::string& ylabel,
                       const std::vector<Series>& ss, bool log_y) {
  const double W = 640, H = 300, L = 70, R = 150, T = 30, B = 40;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  auto ty = [&](double v) { return log_y ? std::log10(v) : v; };
  for (const auto& s : ss)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if ((log_y && !(s.y[i] > 0)) || !std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  std::string o = fmt::format(R"~(<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}">)~", esc(id), W, H, W, H);
  o += fmt::format(R"~(<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>)~", L, esc(title));
  if (x0 > x1) return o + R"~(<text x="80" y="150">no data</text></svg>)~";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1, y0 -= 1;
  auto px = [&](double v) { return L + (v - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
  o += fmt::format(R"~(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>)~", L, T, W - L - R, H - T - B);
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
    o += fmt::format(R"~(<text x="{:.1f}" y="{}" font-size="10" text-anchor="middle">{:.3g}</text>)~", px(v), H - B + 14, v);
  o += fmt::format(R"~(<text x="{}" y="{}" font-size="11" text-anchor="middle">layer</text>)~", L + (W - L - R) / 2, H - 6);
  o += fmt::format(R"~(<text x="14" y="{}" font-size="11" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>)~",
                   T + (H - T - B) / 2, T + (H - T - B) / 2, esc(ylabel));
  for (size_t si = 0; si < ss.size(); ++si) {
    const char* col = kColors[si % 8];
    std::string pts;
    for (size_t i = 0; i < ss[si].x.size(); ++i) {
      if ((log_y && !(ss[si].y[i] > 0)) || !std::isfinite(ss[si].x[i]) || !std::isfinite(ss[si].y[i])) continue;
      pts += fmt::format("{:.1f},{:.1f} ", px(ss[si].x[i]), py(ty(ss[si].y[i])));
      o += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="2.5" fill="{}"/>)~", px(ss[si].x[i]), py(ty(ss[si].y[i])), col);
    }
    o += fmt::format(R"~(<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>)~", pts, col);
    o += fmt::format(R"~(<text x="{}" y="{}" font-size="11" fill="{}">{}</text>)~", W - R + 8, T + 14 + 16 * si, col,
                     esc(ss[si].name));
  }
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
                  "</style></head><body>\n<h1>" + esc(in.title) + "</h1>\n";
  int n = 0;
  for (const auto& [file, j] : in.compares) {
    current = file;
    h += "<h2>Layer errors: " + esc(file) + "</h2>\n<p>" +
         esc(fmt::format("{} vs {} ({}), {} samples x {} tokens", j.value("cand", "?"), j.value("ref", "?"),
                         j.value("ref_mode", "?"), j.value("samples", 0), j.value("seqlen", 0))) + "</p>\n";
    const nlohmann::json modes = j.contains("modes") ? j["modes"]
                                                     : nlohmann::json::array({{{"mode", j.value("cand_mode", "cand")},
                                                                               {"layers", j["layers"]},
                                                                               {"logits", j["logits"]}}});
    for (const char* tensor : {"block_out", "mixer_out"}) {
      std::vector<Series> mse, corr;
      for (const auto& m : modes) {
        Series a{m.value("mode", "?"), {}, {}}, c{m.value("mode", "?"), {}, {}};
        for (const auto& l : m["layers"])
          if (l.value("tensor", "") == tensor) {
            a.x.push_back(l["layer"].get<double>()), a.y.push_back(l["mse"].get<double>());
            c.x.push_back(l["layer"].get<double>()), c.y.push_back(1.0 - l["corr"].get<double>());
          }
        mse.push_back(a), corr.push_back(c);
      }
      h += line_chart(fmt::format("compare-{}-mse-{}", n, tensor), fmt::format("MSE of {} by layer", tensor), "MSE (log)",
                      mse, true) + "\n";
      h += line_chart(fmt::format("compare-{}-corr-{}", n, tensor), fmt::format("1 - correlation of {} by layer", tensor),
                      "1 - corr (log)", corr, true) + "\n";
    }
    h += "<table><tr><th>mode</th><th>mean KL(ref || cand)</th><th>top-1 agreement</th></tr>";
    for (const auto& m : modes)
      h += fmt::format("<tr><td>{}</td><td>{:.6g}</td><td>{:.4f}</td></tr>", esc(m.value("mode", "?")),
                       m["logits"].value("kl", 0.0), m["logits"].value("top1", 0.0));
    h += "</table>\n";
    ++n;
  }
  for (const auto& [file, j] : in.scales) {
    current = file;
    h += "<h2>Scale differences: " + esc(file) + "</h2>\n<p>" +
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
    ++n;
  }
  for (const auto& [file, arrays] : in.snapshots) {
    h += "<h2>Activations: " + esc(file) + "</h2>\n<p>Dashed lines: the clip value (|x| quantile) each alpha would choose "
         "on these sampled values.</p>\n";
    for (const auto& [k, v] : arrays)
      h += histogram(fmt::format("hist-{}-{}", n, k), k, v, in.alphas) + "\n";
    ++n;
  }
  if (in.compares.empty() && in.scales.empty() && in.snapshots.empty()) h += "<p>No inputs.</p>\n";
  return h + "</body></html>\n";
}

}  // namespace mambaq
