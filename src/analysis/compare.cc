#include "analysis/compare.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "analysis/explog.h"
#include "io/mmap_file.h"
#include "io/npz.h"
#include "mambaq/checkpoint.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/version.h"
#include "quant/quantized.h"

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
          {"quality", rel_mae_band(rel_mae)}};
}

std::string rel_mae_band(double v) {
  return v < 1e-3 ? "excellent" : v < 1e-2 ? "very good" : v < 5e-2 ? "good" : v < 0.1 ? "fair" : "poor";
}

double row_kl(const float* a, const float* b, int V, bool* agree) {
  const int ia = int(std::max_element(a, a + V) - a), ib = int(std::max_element(b, b + V) - b);
  double za = 0, zb = 0;
  for (int v = 0; v < V; ++v) za += std::exp(double(a[v]) - a[ia]), zb += std::exp(double(b[v]) - b[ib]);
  const double la = std::log(za) + a[ia], lb = std::log(zb) + b[ib];  // log-sum-exp
  double kl = 0;
  for (int v = 0; v < V; ++v) {
    const double lpa = a[v] - la, lpb = b[v] - lb;
    kl += std::exp(lpa) * (lpa - lpb);
  }
  *agree = ia == ib;
  return std::max(0.0, kl);
}

void LogitStats::add(const float* ref, const float* cand, int n, int V) {
  for (int r = 0; r < n; ++r) {
    bool agree = false;
    const double kl = row_kl(ref + size_t(r) * V, cand + size_t(r) * V, V, &agree);
    add_row(kl, agree);
  }
}

DiffHistogram diff_histogram(const float* ref, const float* cand, size_t n, int bins) {
  MQ_ASSERT(bins > 0);
  DiffHistogram h;
  h.counts.assign(size_t(bins), 0);
  if (n == 0) return h;
  double lo = double(cand[0]) - ref[0], hi = lo;
  for (size_t i = 1; i < n; ++i) {
    const double d = double(cand[i]) - ref[i];
    lo = std::min(lo, d), hi = std::max(hi, d);
  }
  if (!std::isfinite(lo) || !std::isfinite(hi)) fail("difference histogram: non-finite values in the compared outputs");
  if (lo == hi) lo -= 0.5, hi += 0.5;
  h.lo = lo, h.hi = hi;
  const double scale = double(bins) / (hi - lo);
  for (size_t i = 0; i < n; ++i) {
    const double d = double(cand[i]) - ref[i];
    h.counts[size_t(std::clamp(int((d - lo) * scale), 0, bins - 1))]++;  // the last bin holds hi
  }
  return h;
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

// ---- runs, the --save-dir cache of runs, and the comparison ----

namespace fs = std::filesystem;

RunCapture run_capture(Session& m, const std::vector<std::vector<int32_t>>& samples, const std::set<int>& layers,
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

namespace {

// The key of a run as JSON: what makes two runs the same computation (not where or when).
nlohmann::json key_json(const RunKey& k) {
  const std::string id = model_identity(k.model);
  return {{"mambaq", version()},
          {"role", k.role},
          {"model_id", id.empty() ? "path:" + fs::weakly_canonical(k.model).string() : id},
          {"mode", k.mode},
          {"fp_ops", k.fp_ops},
          {"fp_source", k.fp_source},
          {"basis", k.basis}};
}

// The inputs as JSON: the data's content (not its path), the tokens of every sample.
nlohmann::json inputs_json(const RunInputs& in, const std::vector<std::vector<int32_t>>& samples) {
  std::vector<size_t> toks;
  for (const auto& s : samples) toks.push_back(s.size());
  // the token ids themselves, hashed: the same file read with another tokenizer is other input
  std::string ids;
  for (const auto& s : samples) ids.append(reinterpret_cast<const char*>(s.data()), s.size() * sizeof(int32_t));
  return {{"data_sha256", in.data_sha256},
          {"seqlen", in.seqlen},
          {"sample_tokens", toks},
          {"tokens_sha256", sha256_string(ids)}};
}

std::string layer_file(int layer, const std::string& tensor) { return fmt::format("layer_{}_{}.npy", layer, tensor); }

// The content of a model folder: every regular file's name and sha256 (hidden files, mambaq's
// bookkeeping among them, left out). Each file's sha256 is remembered in SAVE_DIR/file-hashes.json
// by canonical path, size, mtime and inode (a 2.7B folder is hashed once, not at every compare; any
// rewrite of a file changes its mtime or inode, so a stale entry is never used); the cache is read
// once and written once per folder, and only when an entry changed.
std::string folder_content_sha256(const fs::path& save_dir, const std::string& model) {
  const fs::path cache = save_dir / "file-hashes.json";
  nlohmann::json c = nlohmann::json::object();
  if (fs::exists(cache)) {
    try {
      c = nlohmann::json::parse(read_text_file(cache.string()));
    } catch (const std::exception&) {
    }
    if (!c.is_object()) c = nlohmann::json::object();  // damaged: rebuilt (it holds only what can be recomputed)
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(model))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string all;
  bool changed = false;
  for (const auto& n : names) {
    const std::string path = fs::weakly_canonical(fs::path(model) / n).string();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) fail("{}: cannot read: {}", path, std::strerror(errno));
    const nlohmann::json stamp = {{"size", uint64_t(st.st_size)},
                                  {"mtime_ns", int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec},
                                  {"inode", uint64_t(st.st_ino)}};
    const nlohmann::json& e = c.contains(path) ? c[path] : nlohmann::json();
    std::string h;
    if (e.is_object() && e.value("stamp", nlohmann::json()) == stamp && e.value("sha256", "").size() == 64) {
      h = e["sha256"].get<std::string>();
    } else {
      h = sha256_file(path);
      c[path] = {{"stamp", stamp}, {"sha256", h}};
      changed = true;
    }
    all += n + " " + h + "\n";
  }
  if (changed) write_text_file(cache.string(), c.dump(1) + "\n");
  return sha256_string(all);
}

// Names the first field where a saved manifest differs from the run asked for ("" = reusable).
std::string why_not_reusable(const nlohmann::json& old, const nlohmann::json& key, const nlohmann::json& inputs,
                             const std::set<int>& layers) {
  if (!old.is_object() || !old.contains("key") || !old.contains("inputs") || !old.contains("layers"))
    return "its manifest.json is not one mambaq wrote";
  for (const auto& [k, v] : key.items())
    if (old["key"].value(k, nlohmann::json()) != v)
      return k == "files_sha256"
                 ? std::string("the model's files changed since (their content hash differs)")
                 : fmt::format("it was saved for {} {} (now {})", k, old["key"].value(k, nlohmann::json()).dump(), v.dump());
  for (const auto& [k, v] : inputs.items())
    if (old["inputs"].value(k, nlohmann::json()) != v) return fmt::format("it was saved for other inputs ({} differs)", k);
  std::set<int> have;
  for (const auto& l : old["layers"]) have.insert(l.get<int>());
  for (int l : layers)
    if (!have.count(l)) return fmt::format("layer {} was not saved there", l);
  return "";
}

void write_index(const fs::path& dir) {
  // compare-index.json: every run folder's key and inputs, for a person or a script looking in
  nlohmann::json idx = {{"written_by", "mambaq compare"}, {"runs", nlohmann::json::object()}};
  for (const auto& e : fs::directory_iterator(dir)) {
    const fs::path mf = e.path() / "manifest.json";
    if (!e.is_directory() || !fs::exists(mf)) continue;
    try {
      auto m = nlohmann::json::parse(read_text_file(mf.string()));
      idx["runs"][e.path().filename().string()] = {{"model", m.value("model", "")}, {"key", m["key"]}, {"inputs", m["inputs"]},
                                                   {"layers", m["layers"]}, {"written", m.value("written", "")}};
    } catch (const std::exception&) {
      // a manifest being written by another run, or not ours: not indexed
    }
  }
  write_text_file((dir / "compare-index.json").string(), idx.dump(2) + "\n");
}

// The folder of a run: readable, unique per key (kj = key_json(key)).
std::string dir_name(const RunKey& key, const nlohmann::json& kj) {
  std::string name = fs::path(key.model).filename().string();
  if (name.empty()) name = fs::path(key.model).parent_path().filename().string();  // "dir/"
  std::string safe;
  for (char c : name) safe += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ? c : '-';
  std::string ops = key.fp_ops;
  std::replace(ops.begin(), ops.end(), ',', '+');
  return fmt::format("{}-{}-{}{}-{}", key.role, safe.substr(0, 40), key.mode, ops.empty() ? "" : "-fp-" + ops,
                     sha256_string(kj.dump()).substr(0, 8));
}

}  // namespace

std::string run_dir_name(const RunKey& key) { return dir_name(key, key_json(key)); }

CachedRun cached_run(Session& m, const RunKey& key, const RunInputs& in,
                     const std::vector<std::vector<int32_t>>& samples, const std::set<int>& layers,
                     const std::string& save_dir, const std::string& label, bool progress) {
  CachedRun out;
  if (save_dir.empty()) {
    out.cap = run_capture(m, samples, layers, label, progress);
    return out;
  }
  const size_t dm = size_t(m.config().d_model), V = size_t(m.config().padded_vocab);
  size_t positions = 0;
  for (const auto& s : samples) positions += s.size();
  nlohmann::json kj = key_json(key);
  const nlohmann::json ij = inputs_json(in, samples);
  const fs::path dir = fs::path(save_dir) / dir_name(key, kj);  // one folder per key; new content recomputes into it
  const fs::path mf = dir / "manifest.json";
  out.dir = dir.string();
  if (fs::is_symlink(dir))
    fail("--save-dir: {} is a symbolic link; mambaq does not write into the folder it points to (remove the link)",
         dir.string());
  fs::create_directories(save_dir);
  if (fs::is_directory(key.model)) kj["files_sha256"] = folder_content_sha256(save_dir, key.model);
  if (fs::exists(mf)) {
    nlohmann::json old;
    try {
      old = nlohmann::json::parse(read_text_file(mf.string()));
    } catch (const std::exception&) {
      old = nullptr;
    }
    out.note = why_not_reusable(old, kj, ij, layers);
    if (out.note.empty()) {
      try {
        RunCapture R;
        std::vector<size_t> shape;
        const auto checked = [&](const std::string& name) {  // the file the manifest describes, byte for byte
          const std::string f = (dir / name).string();
          const nlohmann::json rec =
              old.contains("files") && old["files"].is_object() && old["files"].contains(name) ? old["files"][name] : nlohmann::json();
          if (!rec.is_object() || !rec.contains("sha256")) fail("{}: not in the manifest with its sha256", f);
          if (sha256_file(f) != rec["sha256"]) fail("{}: its content differs from the manifest's sha256", f);
          return f;
        };
        for (int l : layers)
          for (const char* t : {"block_out", "mixer_out"}) {
            auto v = load_npy(checked(layer_file(l, t)), &shape);
            if (shape != std::vector<size_t>{positions, dm}) fail("{}: shape differs", layer_file(l, t));
            R.layers[{l, t}] = std::move(v);
          }
        R.logits = load_npy(checked("logits.npy"), &shape);
        if (shape != std::vector<size_t>{positions, V}) fail("logits.npy: shape differs");
        out.cap = std::move(R);
        out.reused = true;
        return out;
      } catch (const Error& e) {
        out.note = fmt::format("a saved file is missing or damaged ({})", e.what());
      }
    }
  }
  // Computed first (the long part), then the folder rewritten: manifest removed, arrays, manifest.
  out.cap = run_capture(m, samples, layers, label, progress);
  fs::create_directories(dir);
  fs::remove(mf);
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".npy") fs::remove(e.path());
  nlohmann::json files = nlohmann::json::object();
  for (const auto& [k, v] : out.cap.layers) {
    const std::string f = (dir / layer_file(k.first, k.second)).string();
    save_npy(f, v, {v.size() / dm, dm});
    files[layer_file(k.first, k.second)] = {
        {"layer", k.first}, {"tensor", k.second}, {"shape", {v.size() / dm, dm}}, {"sha256", sha256_file(f)}};
  }
  save_npy((dir / "logits.npy").string(), out.cap.logits, {out.cap.logits.size() / V, V});
  files["logits.npy"] = {
      {"tensor", "logits"}, {"shape", {out.cap.logits.size() / V, V}}, {"sha256", sha256_file((dir / "logits.npy").string())}};
  nlohmann::json manifest = {{"model", fs::weakly_canonical(key.model).string()},
                             {"key", kj},
                             {"inputs", ij},
                             {"data", fs::weakly_canonical(in.data_file).string()},
                             {"layers", layers},
                             {"files", files},
                             {"git", git_describe()},
                             {"written", utc_timestamp()}};
  write_text_file(mf.string(), manifest.dump(2) + "\n");
  write_index(fs::path(save_dir));
  return out;
}

std::vector<std::string> candidate_labels(const std::vector<const Model*>& cands, const std::vector<std::string>& paths) {
  const std::vector<std::string> names = candidate_names(paths);
  if (cands.size() < 2) return names;
  // each quantized candidate's recipe settings, flattened ("observers/percentile_alpha": 1.0);
  // what only identifies a file or a build is left out; edits count as their rules
  std::vector<std::map<std::string, std::string>> flat(cands.size());
  for (size_t c = 0; c < cands.size(); ++c) {
    if (!cands[c]->is_quantized()) return names;
    nlohmann::json j = cands[c]->quantized()->meta.to_json();
    for (const char* k : {"source_model", "mambaq_version", "save_id", "not_applied"}) j.erase(k);
    if (j.contains("calibration")) j["calibration"].erase("file"), j["calibration"].erase("sha256"), j["calibration"].erase("available");
    if (j.contains("gptq")) j["gptq"].erase("file"), j["gptq"].erase("sha256");
    if (j.contains("edits")) {
      nlohmann::json rules = nlohmann::json::array();
      for (const auto& e : j["edits"]) rules.push_back(e.value("rule", std::string("?")));
      j["edits"] = rules;
    }
    const nlohmann::json f = j.flatten();  // kept: items() refers to it
    for (auto& [k, v] : f.items()) flat[c][k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  std::set<std::string> keys;
  for (const auto& f : flat)
    for (const auto& [k, v] : f) keys.insert(k);
  std::vector<std::string> differ;
  for (const auto& k : keys) {
    std::set<std::string> vals;
    for (const auto& f : flat) vals.insert(f.count(k) ? f.at(k) : "-");
    if (vals.size() > 1) differ.push_back(k);
  }
  if (differ.empty() || differ.size() > 4) return names;  // nothing, or too much, to say in a label
  std::vector<std::string> labels;
  for (const auto& f : flat) {
    std::string l;
    for (const auto& k : differ) {
      std::string name = k.substr(k.rfind('/') + 1);
      if (std::all_of(name.begin(), name.end(), ::isdigit)) name = k.substr(1, k.find('/', 1) - 1) + "[" + name + "]";
      l += (l.empty() ? "" : " ") + name + "=" + (f.count(k) ? f.at(k) : "-");
    }
    labels.push_back(l);
  }
  if (std::set<std::string>(labels.begin(), labels.end()).size() != labels.size()) return names;
  return labels;
}

std::vector<std::string> candidate_names(const std::vector<std::string>& paths) {
  // the last `depth` components of each path, one more for every name two different paths share
  auto suffix = [](const std::string& p, size_t depth) {
    std::vector<std::string> parts;
    for (const auto& c : fs::path(p))
      if (!c.empty() && c != "/") parts.push_back(c.string());
    if (depth >= parts.size()) return p;
    std::string s;
    for (size_t i = parts.size() - depth; i < parts.size(); ++i) s += (s.empty() ? "" : "/") + parts[i];
    return s;
  };
  std::vector<size_t> depth(paths.size(), 1);
  std::vector<std::string> names(paths.size());
  for (size_t round = 0; round < 64; ++round) {
    for (size_t i = 0; i < paths.size(); ++i) names[i] = suffix(paths[i], depth[i]);
    bool clash = false;
    for (size_t i = 0; i < paths.size(); ++i)
      for (size_t k = 0; k < paths.size(); ++k)
        if (i != k && names[i] == names[k] && paths[i] != paths[k]) {
          ++depth[i], clash = true;
          break;
        }
    if (!clash) break;
  }
  return names;
}

nlohmann::json CompareRun::to_json() const {
  nlohmann::json jl = nlohmann::json::array();
  for (const auto& l : layers) {
    nlohmann::json j = l.stats.to_json();
    j["layer"] = l.layer;
    j["tensor"] = l.tensor;
    j["diff_histogram"] = l.hist.to_json();
    nlohmann::json ps = nlohmann::json::array();
    for (const auto& s : l.per_sample)
      ps.push_back({{"tokens", s.tokens}, {"mse", s.mse}, {"mae", s.mae}, {"rel_mae", s.rel_mae}, {"max_abs", s.max_abs},
                    {"corr", s.corr}});
    j["per_sample"] = ps;
    jl.push_back(j);
  }
  nlohmann::json lps = nlohmann::json::array();
  for (const auto& s : logits_per_sample) lps.push_back({{"tokens", s.rows}, {"kl", s.kl()}, {"top1", s.top1()}});
  return {{"cand", cand},
          {"cand_id", cand_id},
          {"label", label},
          {"mode", mode},
          {"fp_ops", fp_ops},
          {"basis", basis},
          {"saved", saved},
          {"reused", reused},
          {"reference_saved", ref_saved},
          {"reference_reused", ref_reused},
          {"layers", jl},
          {"logits", {{"kl", logits.kl()}, {"top1", logits.top1()}, {"positions", logits.rows}, {"per_sample", lps}}}};
}

std::vector<CompareRun> compare_models(const Model& ref, const std::vector<const Model*>& cands, const CompareSpec& spec,
                                       const std::vector<std::vector<int32_t>>& samples) {
  MQ_ASSERT(cands.size() == spec.cand_paths.size() && !cands.empty());
  const auto& rc = ref.config();
  const std::string rmode = mode_name(parse_mode(spec.ref_mode));
  const SessionOptions ref_opts{.backend = spec.backend, .mode = parse_mode(spec.ref_mode)};
  // plans are checked on a host backend (no uploads), before the first long run
  auto probe = [](SessionOptions o) { return o.backend = "ref", o; };
  (void)Session(ref, probe(ref_opts));
  // Every check and every plan before the first long run.
  for (size_t c = 0; c < cands.size(); ++c) {
    const auto& cc = cands[c]->config();
    if (const std::string d = config_difference(rc, cc); !d.empty())
      fail("--ref {} and --cand {} are not the same architecture ({}: --ref's first)", spec.ref_path, spec.cand_paths[c], d);
  }
  struct Plan {
    size_t cand;
    std::string mode;
    unsigned fp_ops = 0;  // the mode's own (fake+fp-ops=...), else spec.fp_ops
  };
  std::vector<Plan> plans;
  unsigned all_ops = 0;
  for (size_t c = 0; c < cands.size(); ++c) {
    std::vector<std::string> modes = spec.modes;
    if (modes.empty()) modes.push_back(cands[c]->is_quantized() ? "int8" : "fp32");
    for (const auto& spelled : modes) {
      // "fake+fp-ops=ssm:linear": eval's per-mode spelling
      const size_t plus = spelled.find('+');
      const std::string m = mode_name(parse_mode(spelled.substr(0, plus)));
      unsigned ops = spec.fp_ops;
      if (plus != std::string::npos) {
        const std::string rest = spelled.substr(plus + 1);
        if (!rest.starts_with("fp-ops="))
          fail_option("mode", "mode '{}': after '+' only fp-ops=OP:OP... is understood (e.g. fake+fp-ops=ssm)", spelled);
        std::string list = rest.substr(7);
        std::replace(list.begin(), list.end(), ':', ',');
        ops = parse_fp_ops(list);
      }
      if (ops && m != "fake")
        fail_option("fp_ops", "fp_ops {} runs in the fake-quant simulation: run the candidate in mode fake "
                    "(--cand-mode fake, or fake+fp-ops=... in --cand-modes), not {}", fp_ops_str(ops), m);
      if (m != "fp32" && !cands[c]->is_quantized())
        fail("--cand-mode {}: {} is not quantized (make one with `mambaq quantize`, or use fp32)", m, spec.cand_paths[c]);
      plans.push_back({c, m, ops});
      all_ops |= ops;
    }
  }
  if ((all_ops & (kFpLinear | kFpConv)) && ref.is_quantized())
    fail_option("fp_ops", "fp_ops {}: keeping linear/conv in FP32 needs the FP model's weights: the reference {} is "
                "quantized, give the FP model it was made from", fp_ops_str(all_ops), spec.ref_path);
  // The reference in every basis the candidates need (Quamba2 rotates the residual stream and may
  // reorder heads: the FP reference runs in the same basis so that layer outputs correspond).
  std::map<std::string, std::unique_ptr<Model>> moved;  // basis -> the FP reference in it
  std::vector<std::string> bases(cands.size());
  for (size_t c = 0; c < cands.size(); ++c) {
    const Model& cm = *cands[c];
    if (!(cm.is_quantized() && changes_basis(*cm.quantized()) && !ref.is_quantized())) continue;
    std::string b = cm.quantized()->meta.group_heads ? "rotated+reordered" : "rotated";
    if (cm.quantized()->meta.group_heads) b += ":" + sha256_file(find_weights_file(spec.cand_paths[c]));
    bases[c] = b;
    if (!moved.count(b)) {
      auto r = fp_in_quantized_basis(ref, *cm.quantized());
      fmt::print(stderr, "reference: {} in {}'s basis ({} by the {} recipe)\n", spec.ref_path, spec.cand_paths[c],
                   b.substr(0, b.find(':')), cm.quantized()->meta.recipe);
      moved.emplace(b, std::move(r));
    }
  }
  auto ref_in = [&](const std::string& basis) -> const Model& { return basis.empty() ? ref : *moved.at(basis); };
  auto cand_opts = [&](const Plan& p) {
    return SessionOptions{.backend = spec.backend, .mode = parse_mode(p.mode), .fp_ops = p.fp_ops,
                          .fp = &ref_in(bases[p.cand])};
  };
  for (const auto& p : plans) (void)Session(*cands[p.cand], probe(cand_opts(p)));  // every candidate plan can be built
  const RunInputs in{spec.data_file, sha256_file(spec.data_file), spec.seqlen};  // hashed once for every run
  const std::string ref_id = model_identity(spec.ref_path);
  const std::vector<std::string> names = candidate_labels(cands, spec.cand_paths);

  std::map<std::string, CachedRun> refs;  // basis -> the reference run
  std::vector<CompareRun> out;
  const int V = rc.padded_vocab, dm = rc.d_model;
  for (const auto& p : plans) {
    const std::string& basis = bases[p.cand];
    if (!refs.count(basis)) {
      Session rs(ref_in(basis), ref_opts);
      CachedRun r = cached_run(rs, {"ref", spec.ref_path, rmode, "", "", basis}, in, samples, spec.layers,
                               spec.save_dir, "reference", spec.progress);
      if (!r.note.empty()) fmt::print(stderr, "reference in {} recomputed: {}\n", r.dir, r.note);
      if (r.reused) fmt::print(stderr, "reference reused from {}\n", r.dir);
      refs.emplace(basis, std::move(r));
    }
    const CachedRun& R = refs.at(basis);
    Session m(*cands[p.cand], cand_opts(p));
    const std::string ops = fp_ops_str(p.fp_ops);
    const RunKey key{"cand", spec.cand_paths[p.cand], p.mode, ops, p.fp_ops ? ref_id + "|" + basis : "", ""};
    const std::string label = names[p.cand] + " " + p.mode + (ops.empty() ? "" : " (FP32: " + ops + ")");
    CachedRun C = cached_run(m, key, in, samples, spec.layers, spec.save_dir, "cand " + label, spec.progress);
    if (!C.note.empty()) fmt::print(stderr, "candidate in {} recomputed: {}\n", C.dir, C.note);
    if (C.reused) fmt::print(stderr, "candidate {} reused from {}\n", label, C.dir);

    CompareRun run;
    run.cand = spec.cand_paths[p.cand];
    run.cand_id = model_identity(run.cand);
    run.label = label, run.mode = p.mode, run.fp_ops = ops, run.basis = basis.substr(0, basis.find(':'));
    run.saved = C.dir, run.reused = C.reused, run.ref_saved = R.dir, run.ref_reused = R.reused;
    for (int l : spec.layers)
      for (const char* t : {"block_out", "mixer_out"}) {
        const auto& rv = R.cap.layers.at({l, t});
        const auto& cv = C.cap.layers.at({l, t});
        MQ_ASSERT(rv.size() == cv.size());
        LayerResult lr{l, t, compare_tensors(rv.data(), cv.data(), rv.size()),
                       diff_histogram(rv.data(), cv.data(), rv.size(), spec.hist_bins), {}};
        size_t off = 0;
        for (const auto& s : samples) {
          const size_t n = s.size() * size_t(dm);
          const TensorStats ts = compare_tensors(rv.data() + off, cv.data() + off, n);
          lr.per_sample.push_back({s.size(), ts.mse, ts.mae, ts.rel_mae, ts.max_abs, ts.corr});
          off += n;
        }
        run.layers.push_back(std::move(lr));
      }
    size_t row = 0;
    for (const auto& s : samples) {
      LogitStats ps;
      for (size_t r = 0; r < s.size(); ++r, ++row) {
        bool agree = false;
        const double kl = row_kl(R.cap.logits.data() + row * size_t(V), C.cap.logits.data() + row * size_t(V), V, &agree);
        ps.add_row(kl, agree);
        run.logits.add_row(kl, agree);
      }
      run.logits_per_sample.push_back(ps);
    }
    out.push_back(std::move(run));
  }
  return out;
}

}  // namespace mambaq
