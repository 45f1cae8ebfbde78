// End-to-end speed: prefill tokens/s, decode tokens/s, time to first token, peak memory,
// and the decode bound implied by this machine's memory bandwidth.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "cli/common.h"
#include "kernels/cpu/ops.h"
#include "mambaq/error.h"

namespace mambaq::cli {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
// Read bandwidth: sum a 1 GiB buffer with all threads, best of 5. 64 independent partial sums
// per thread (4 AVX-512 registers) so the loop is bound by memory, not by add latency.
double read_bandwidth_gbs() {
  constexpr size_t kLanes = 64;
  const size_t n = size_t(1) << 28;  // floats
  std::vector<float> a(n, 1.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now_s();
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
      float acc[kLanes] = {};
#pragma omp for schedule(static)
      for (size_t blk = 0; blk < n / kLanes; ++blk) {
        const float* p = a.data() + blk * kLanes;
#pragma omp simd
        for (size_t j = 0; j < kLanes; ++j) acc[j] += p[j];
      }
      for (size_t j = 0; j < kLanes; ++j) total += acc[j];
    }
    const double dt = now_s() - t0;
    if (total != float(n)) fail("internal error: bandwidth probe summed {} instead of {}", total, n);
    best = std::max(best, double(n) * 4 / dt / 1e9);
  }
  return best;
}
}  // namespace

Runner register_bench(CLI::App& app) {
  struct Opts {
    std::string model, synthetic, json;
    int prompt = 1024, decode = 128, repeats = 3;
    uint64_t seed = 1;
    bool no_bw = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("bench", "Measure prefill and decode speed, time to first token and peak memory");
  sub->add_option("MODEL", o->model, "Model folder (or use --synthetic)");
  sub->add_option("--synthetic", o->synthetic,
                  "Random weights with the shapes of a published model: " + [] {
                    std::string s;
                    for (auto& n : published_config_names()) s += (s.empty() ? "" : ", ") + n;
                    return s;
                  }());
  sub->add_option("--prompt-len", o->prompt, "Prefill length")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--decode", o->decode, "Tokens to decode")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--repeats", o->repeats, "Runs; the median is reported")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--seed", o->seed, "Seed of synthetic weights and prompt")->capture_default_str();
  sub->add_flag("--no-bandwidth", o->no_bw, "Skip the memory bandwidth measurement");
  sub->add_option("--json", o->json, "Write the results as JSON to FILE ('-' = stdout)");
  add_common(sub, o->c);
  return [o] {
    apply_common(o->c);
    if (o->model.empty() == o->synthetic.empty()) fail("bench: give either MODEL or --synthetic NAME");
    const double t_load = now_s();
    auto m = o->synthetic.empty() ? Model::load(o->model) : Model::random(published_config(o->synthetic), o->seed);
    const double load_s = now_s() - t_load;
    const auto& c = m->config();
    std::mt19937 rng(uint32_t(o->seed));
    std::vector<int32_t> prompt(size_t(o->prompt));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(std::min(c.vocab_size, 50000)));
    const int dm = c.d_model, V = c.padded_vocab;
    std::vector<double> pre, dec;
    std::vector<float> hidden(prompt.size() * size_t(dm)), logits(static_cast<size_t>(V));
    for (int r = 0; r < o->repeats; ++r) {
      SeqState st = m->new_state();
      SeqState* sp[1] = {&st};
      const int lens[1] = {o->prompt};
      double t0 = now_s();
      m->forward(prompt, lens, sp, hidden.data());
      m->lm_head(hidden.data() + size_t(o->prompt - 1) * dm, 1, logits.data());
      pre.push_back(now_s() - t0);
      int32_t tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      const int one[1] = {1};
      t0 = now_s();
      for (int i = 0; i < o->decode; ++i) {
        m->forward(std::span<const int32_t>(&tok, 1), one, sp, hidden.data());
        m->lm_head(hidden.data(), 1, logits.data());
        tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      dec.push_back(now_s() - t0);
    }
    const double ttft = median(pre), dect = median(dec);
    const double peak_mib = peak_rss_mib();  // before the bandwidth probe's own 1 GiB buffer
    const double bytes = double(m->weight_bytes());
    const double bw = o->no_bw ? 0 : read_bandwidth_gbs();
    const double bound = bw > 0 ? bw * 1e9 / bytes : 0;
    const std::string name = o->synthetic.empty() ? o->model : "synthetic:" + o->synthetic;
    fmt::print("{:<28} {:>8} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10}\n", "model", "threads", "prefill_tok/s",
               "decode_tok/s", "ttft_ms", "weights_MiB", "decode_bound", "peak_MiB");
    fmt::print("{:<28} {:>8} {:>12.1f} {:>12.2f} {:>10.1f} {:>12.1f} {:>12.2f} {:>10.1f}\n", name, num_threads(),
               o->prompt / ttft, o->decode / dect, 1e3 * ttft, bytes / 1048576.0, bound, peak_mib);
    if (bw > 0)
      fmt::print("memory read bandwidth {:.1f} GB/s -> decode bound {:.2f} tok/s ({:.0f}% reached)\n", bw, bound,
                 100.0 * (o->decode / dect) / bound);
    if (!o->json.empty())
      write_json(o->json, {{"model", name},
                           {"threads", num_threads()},
                           {"prompt_len", o->prompt},
                           {"decode_tokens", o->decode},
                           {"repeats", o->repeats},
                           {"prefill_tok_s", o->prompt / ttft},
                           {"decode_tok_s", o->decode / dect},
                           {"ttft_ms", 1e3 * ttft},
                           {"prefill_runs_s", pre},
                           {"decode_runs_s", dec},
                           {"weight_bytes_per_token", bytes},
                           {"read_bandwidth_gbs", bw},
                           {"decode_bound_tok_s", bound},
                           {"load_s", load_s},
                           {"peak_rss_mib", peak_mib}});
    return 0;
  };
}

}  // namespace mambaq::cli
