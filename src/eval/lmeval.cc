// lm-evaluation-harness 0.4's statistics and results shape (lm_eval/api/metrics.py, evaluator.py).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>

#include "core/stats.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/version.h"

namespace mambaq {

namespace {

double sample_stddev(const std::vector<double>& x) {
  const double mu = mean(x);
  double s = 0;
  for (double v : x) s += (v - mu) * (v - mu);
  return std::sqrt(s / double(x.size() - 1));
}

// Python's random.Random(seed) for a small non-negative int seed: MT19937 seeded by
// init_by_array({seed}) (CPython's random_seed), and random() = 53-bit float from two draws.
// std::mt19937 generates the same sequence from the same 624 state words; its own seeding
// differs, so the words are computed here and streamed in (the standard's text form).
class PyRandom {
 public:
  explicit PyRandom(uint32_t seed) {
    constexpr int N = 624;
    uint32_t mt[N];
    mt[0] = 19650218u;
    for (int i = 1; i < N; ++i) mt[i] = 1812433253u * (mt[i - 1] ^ (mt[i - 1] >> 30)) + uint32_t(i);
    int i = 1;
    const uint32_t key = seed;
    for (int k = N; k; --k) {  // key length 1: j is always 0
      mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + key;
      if (++i >= N) mt[0] = mt[N - 1], i = 1;
    }
    for (int k = N - 1; k; --k) {
      mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
      if (++i >= N) mt[0] = mt[N - 1], i = 1;
    }
    mt[0] = 0x80000000u;
    std::stringstream ss;
    for (uint32_t w : mt) ss << w << ' ';
    ss >> g_;
  }
  double random() {
    const uint32_t a = g_() >> 5, b = g_() >> 6;
    return (double(a) * 67108864.0 + double(b)) * (1.0 / 9007199254740992.0);
  }

 private:
  std::mt19937 g_;
};

}  // namespace

double mean_stderr(const std::vector<double>& x) {
  if (x.size() < 2) return -1;
  return sample_stddev(x) / std::sqrt(double(x.size()));
}

double perplexity_bootstrap_stderr(const std::vector<double>& ll, int iters) {
  // bootstrap_stderr: chunks of min(1000, iters) resamples, chunk i from random.Random(i),
  // each resample rnd.choices(xs, k=len(xs)) = xs[floor(random() * n)] drawn n times.
  if (ll.size() < 2 || iters <= 0) return -1;
  const int chunk = std::min(1000, iters), nchunks = iters / chunk;
  const size_t n = ll.size();
  std::vector<double> res(size_t(nchunks) * size_t(chunk));
#pragma omp parallel for schedule(dynamic)
  for (int c = 0; c < nchunks; ++c) {
    PyRandom rnd(static_cast<uint32_t>(c));
    for (int r = 0; r < chunk; ++r) {
      double s = 0;
      for (size_t i = 0; i < n; ++i) s += ll[size_t(std::floor(rnd.random() * double(n)))];
      res[size_t(c) * size_t(chunk) + size_t(r)] = std::exp(-(s / double(n)));
    }
  }
  return sample_stddev(res);
}

nlohmann::json lm_eval_results(const std::vector<TaskResult>& tasks, const LmEvalRun& run) {
  nlohmann::json j;
  nlohmann::json results = nlohmann::json::object(), versions = nlohmann::json::object(),
                 nshot = nlohmann::json::object(), nsamples = nlohmann::json::object(),
                 configs = nlohmann::json::object(), hib = nlohmann::json::object(),
                 groups = nlohmann::json::object(), own = nlohmann::json::object();
  for (const auto& t : tasks) {
    nlohmann::json r = nlohmann::json::object();
    nlohmann::json h = nlohmann::json::object();
    for (const auto& m : t.metrics) {
      r[m.name + ",none"] = m.value;
      if (m.stderr_ >= 0) r[m.name + "_stderr,none"] = m.stderr_;
      else r[m.name + "_stderr,none"] = "N/A";
      h[m.name] = !(m.name.find("perplexity") != std::string::npos || m.name == "bits_per_byte");
    }
    r["alias"] = t.key;
    results[t.key] = r;
    versions[t.key] = double(t.version);
    nshot[t.key] = 0;
    nsamples[t.key] = {{"original", t.n_original}, {"effective", t.n_effective}};
    nlohmann::json cfg = t.config;
    cfg["num_fewshot"] = 0;
    cfg["metadata"] = {{"version", double(t.version)}};
    configs[t.key] = cfg;
    hib[t.key] = h;
    groups[t.key] = nlohmann::json::array();
    own[t.key] = t.json;
    own[t.key]["seconds"] = t.seconds;
  }
  j["results"] = results;
  j["group_subtasks"] = groups;
  j["configs"] = configs;
  j["versions"] = versions;
  j["n-shot"] = nshot;
  j["higher_is_better"] = hib;
  j["n-samples"] = nsamples;
  j["config"] = {{"model", "mambaq"},
                 {"model_args", run.model_args},
                 {"batch_size", run.batch_tokens},
                 {"batch_sizes", nlohmann::json::array()},
                 {"device", run.device},
                 {"use_cache", nullptr},
                 {"limit", run.limit > 0 ? nlohmann::json(run.limit) : nlohmann::json(nullptr)},
                 {"bootstrap_iters", run.bootstrap_iters},
                 {"gen_kwargs", nullptr}};
  j["git_hash"] = git_describe();
  j["date"] = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  j["model_name"] = run.model_path;
  nlohmann::json m = {{"version", version()}, {"git", git_describe()}, {"results", own}};
  if (run.extra.is_object()) m.update(run.extra);
  j["mambaq"] = m;
  return j;
}

}  // namespace mambaq
