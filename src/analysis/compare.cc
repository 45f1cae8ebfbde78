#include "analysis/compare.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "mambaq/error.h"

namespace mambaq {

TensorStats compare_tensors(const float* ref, const float* cand, size_t n) {
  TensorStats s;
  s.n = n;
  if (n == 0) return s;
  double sr = 0, sc = 0, srr = 0, scc = 0, sd = 0, sdd = 0, sad = 0, sar = 0;
  double rmin = ref[0], rmax = ref[0], cmin = cand[0], cmax = cand[0], amax = 0;
  std::vector<float> absd(n);
  for (size_t i = 0; i < n; ++i) {
    const double r = ref[i], c = cand[i], d = c - r;
    sr += r, sc += c, srr += r * r, scc += c * c, sd += d, sdd += d * d, sad += std::fabs(d), sar += std::fabs(r);
    rmin = std::min(rmin, r), rmax = std::max(rmax, r), cmin = std::min(cmin, c), cmax = std::max(cmax, c);
    amax = std::max(amax, std::fabs(d));
    absd[i] = float(std::fabs(d));
  }
  const double N = double(n);
  s.ref_mean = sr / N, s.cand_mean = sc / N;
  s.ref_std = std::sqrt(std::max(0.0, srr / N - s.ref_mean * s.ref_mean));
  s.cand_std = std::sqrt(std::max(0.0, scc / N - s.cand_mean * s.cand_mean));
  s.ref_min = rmin, s.ref_max = rmax, s.cand_min = cmin, s.cand_max = cmax;
  s.diff_mean = sd / N;
  s.diff_std = std::sqrt(std::max(0.0, sdd / N - s.diff_mean * s.diff_mean));
  s.mse = sdd / N, s.rmse = std::sqrt(s.mse), s.mae = sad / N, s.mean_abs = s.mae, s.max_abs = amax;
  s.rel_mse = srr > 0 ? s.mse / (srr / N) : 0;
  s.rel_mae = sar > 0 ? s.mae / (sar / N) : 0;
  // Pearson correlation from centred sums (a second pass: stable for large offsets)
  double cxy = 0, cxx = 0, cyy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = ref[i] - s.ref_mean, y = cand[i] - s.cand_mean;
    cxy += x * y, cxx += x * x, cyy += y * y;
  }
  s.corr = (cxx == cyy && cxy == cxx) ? 1.0 : (cxx > 0 && cyy > 0 ? cxy / std::sqrt(cxx * cyy) : 0.0);
  auto pct = [&](double q) {  // linear interpolation between order statistics (numpy's default)
    const double pos = q * double(n - 1);
    const size_t lo = size_t(pos);
    std::nth_element(absd.begin(), absd.begin() + std::ptrdiff_t(lo), absd.end());
    const double a = absd[lo];
    if (lo + 1 >= n) return a;
    const double b = *std::min_element(absd.begin() + std::ptrdiff_t(lo) + 1, absd.end());
    return a + (pos - double(lo)) * (b - a);
  };
  s.p50 = pct(0.50), s.p90 = pct(0.90), s.p95 = pct(0.95), s.p99 = pct(0.99);
  return s;
}

nlohmann::json TensorStats::to_json() const {
  return {{"n", n},           {"ref_mean", ref_mean},   {"ref_std", ref_std},     {"ref_min", ref_min},
          {"ref_max", ref_max}, {"cand_mean", cand_mean}, {"cand_std", cand_std}, {"cand_min", cand_min},
          {"cand_max", cand_max}, {"diff_mean", diff_mean}, {"diff_std", diff_std}, {"mean_abs", mean_abs},
          {"max_abs", max_abs}, {"mse", mse},             {"rmse", rmse},           {"mae", mae},
          {"rel_mse", rel_mse}, {"rel_mae", rel_mae},     {"corr", corr},           {"p50", p50},
          {"p90", p90},         {"p95", p95},             {"p99", p99},
          {"mse_band", mse_band(mse)}, {"corr_band", corr_band(corr)}, {"rel_mae_band", rel_mae_band(rel_mae)}};
}

std::string mse_band(double v) {
  return v < 1e-5 ? "excellent" : v < 1e-4 ? "very good" : v < 1e-3 ? "good" : v < 1e-2 ? "fair" : "poor";
}
std::string corr_band(double v) {
  return v > 0.9999 ? "near-identical" : v > 0.999 ? "excellent" : v > 0.99 ? "good" : v > 0.95 ? "fair" : "poor";
}
std::string rel_mae_band(double v) {
  return v < 1e-3 ? "excellent" : v < 1e-2 ? "very good" : v < 5e-2 ? "good" : v < 0.1 ? "fair" : "poor";
}

void LogitStats::add(const float* ref, const float* cand, int n, int V) {
  for (int r = 0; r < n; ++r) {
    const float* a = ref + size_t(r) * V;
    const float* b = cand + size_t(r) * V;
    const int ia = int(std::max_element(a, a + V) - a), ib = int(std::max_element(b, b + V) - b);
    double za = 0, zb = 0;
    for (int v = 0; v < V; ++v) za += std::exp(double(a[v]) - a[ia]), zb += std::exp(double(b[v]) - b[ib]);
    const double la = std::log(za) + a[ia], lb = std::log(zb) + b[ib];  // log-sum-exp
    double kl = 0;
    for (int v = 0; v < V; ++v) {
      const double lpa = a[v] - la, lpb = b[v] - lb;
      kl += std::exp(lpa) * (lpa - lpb);
    }
    kl_sum += std::max(0.0, kl);
    top1_agree += ia == ib;
    ++rows;
  }
}

void LayerCapture::on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) {
  if (!layers_.count(layer) || (point != "block_out" && point != "mixer_out")) return;
  auto& v = got[{layer, std::string(point)}];
  v.insert(v.end(), data, data + size_t(rows) * cols);
}

std::set<int> parse_layers(const std::string& spec, int n_layer) {
  std::set<int> out;
  if (spec == "all") {
    for (int l = 0; l < n_layer; ++l) out.insert(l);
    return out;
  }
  std::stringstream ss(spec);
  for (std::string t; std::getline(ss, t, ',');) {
    if (t.empty()) continue;
    int v = 0;
    try {
      size_t used = 0;
      v = std::stoi(t, &used);
      if (used != t.size()) throw std::invalid_argument(t);
    } catch (const std::exception&) {
      fail_option("layers", "layers: '{}' is not a layer index (use e.g. 0,11,-1 or all)", t);
    }
    const int l = v < 0 ? n_layer + v : v;
    if (l < 0 || l >= n_layer) fail_option("layers", "layers: layer {} does not exist (the model has {} layers)", v, n_layer);
    out.insert(l);
  }
  if (out.empty()) fail_option("layers", "layers: no layer given");
  return out;
}

}  // namespace mambaq

// ---- runs and the reference cache (library logic `compare` and the report share) ----
#include <filesystem>
#include <fstream>

#include "io/mmap_file.h"
#include "io/npz.h"
#include "mambaq/eval.h"

namespace mambaq {

namespace fs = std::filesystem;

RunCapture run_capture(const Model& m, const std::vector<std::vector<int32_t>>& samples, const std::set<int>& layers,
                       const std::string& label, bool progress) {
  RunCapture rc;
  LayerCapture cap(layers);
  const int dm = m.config().d_model, V = m.config().padded_vocab;
  Progress bar(label, int64_t(samples.size()), progress);
  for (const auto& s : samples) {
    const int T = int(s.size()), lens[1] = {T};
    std::vector<float> hidden(size_t(T) * dm);
    m.forward(s, lens, nullptr, hidden.data(), &cap);
    const size_t off = rc.logits.size();
    rc.logits.resize(off + size_t(T) * V);
    m.lm_head(hidden.data(), T, rc.logits.data() + off);
    bar.add(1);
  }
  bar.finish();
  rc.layers = std::move(cap.got);
  return rc;
}

std::string npy_name(const std::string& who, const std::string& mode, int layer, const std::string& tensor) {
  return fmt::format("{}_{}_layer_{}_{}.npy", who, mode, layer, tensor);
}

RunCapture reference_run(const Model& ref, const ReferenceSource& src, const std::vector<std::vector<int32_t>>& samples,
                         const std::set<int>& layers, bool progress, bool* reused) {
  *reused = false;
  size_t tokens = 0;
  for (const auto& s : samples) tokens += s.size();
  const std::string rmode = mode_name(ref.mode());
  nlohmann::json manifest = {{"ref", fs::weakly_canonical(src.model_path).string()},
                                   {"ref_mode", rmode},
                                   {"data_sha256", sha256_file(src.data_file)},
                                   {"samples", samples.size()},
                                   {"seqlen", src.seqlen},
                                   {"layers", layers},
                                   {"tokens", tokens}};
  if (!src.basis.empty()) manifest["basis"] = src.basis;
  const fs::path dir(src.save_dir);
  if (!src.save_dir.empty()) {
    fs::create_directories(dir);
    const fs::path mf = dir / "reference.json";
    if (fs::exists(mf)) {
      nlohmann::json old;
      try {
        old = nlohmann::json::parse(read_text_file(mf.string()));
      } catch (const std::exception&) {
        old = nullptr;  // unreadable: recomputed below
      }
      if (old == manifest) {
        RunCapture R;
        for (int l : layers)
          for (const char* t : {"block_out", "mixer_out"})
            R.layers[{l, t}] = load_npy((dir / npy_name("ref", rmode, l, t)).string());
        R.logits = load_npy((dir / ("ref_" + rmode + "_logits.npy")).string());
        *reused = true;
        return R;
      }
    }
  }
  RunCapture R = run_capture(ref, samples, layers, "reference", progress);
  if (!src.save_dir.empty()) {
    const size_t dm = size_t(ref.config().d_model), V = size_t(ref.config().padded_vocab);
    for (const auto& [k, v] : R.layers) save_npy((dir / npy_name("ref", rmode, k.first, k.second)).string(), v, {v.size() / dm, dm});
    save_npy((dir / ("ref_" + rmode + "_logits.npy")).string(), R.logits, {R.logits.size() / V, V});
    std::ofstream out(dir / "reference.json");
    out << manifest.dump(2) << "\n";
    if (!out) fail("{}: cannot write", (dir / "reference.json").string());
  }
  return R;
}

}  // namespace mambaq
