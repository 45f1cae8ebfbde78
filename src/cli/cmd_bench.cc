// End-to-end speed: forward tokens/s (the evaluation path), prefill tokens/s, decode tokens/s, time to first token, peak memory,
// and the decode bound implied by this machine's memory bandwidth.
#include <fmt/format.h>
#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <fstream>
#include <random>
#include <sstream>

#include "cli/common.h"
#include "io/mmap_file.h"
#include "quant/quantized.h"
#include "core/stats.h"
#include "core/threads.h"
#include "kernels/backend.h"
#include "mambaq/error.h"

namespace mambaq::cli {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
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

struct BenchRun {
  std::vector<double> fwd, pre, dec;
  double fwdt = 0, ttft = 0, dect = 0, peak_mib = 0;
};

// Peak RSS (VmHWM) since the last reset_peak_rss(), MiB.
double hwm_mib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return peak_rss_mib();
}
// Linux: writing 5 to clear_refs resets the peak-RSS mark to the current RSS.
void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
}

// `batch` sequences (the same prompt tokens), each rep measuring three things:
//  forward: the evaluation path: one packed forward and every position scored against the next
//           token (LM head, log-softmax and greedy check in the backend; only the scores return);
//  prefill: one packed forward from empty states, the last position's logits of each sequence;
//  decode:  `decode` steps of all sequences together from those states (greedy).
BenchRun run_once(Session& m, const std::vector<int32_t>& prompt, int decode, int repeats, int batch) {
  const auto& c = m.config();
  const int V = c.padded_vocab, P = int(prompt.size()), B = batch;
  BenchRun r;
  std::vector<int32_t> prompts;
  for (int b = 0; b < B; ++b) prompts.insert(prompts.end(), prompt.begin(), prompt.end());
  const std::vector<int> lens(size_t(B), P);
  std::vector<int> last(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) last[size_t(b)] = b * P + P - 1;
  std::vector<Session::RowRef> rows;
  std::vector<int32_t> targets;
  std::vector<RowScore> scores;
  std::vector<float> logits(size_t(B) * V);
  std::vector<int32_t> tok(static_cast<size_t>(B));
  auto greedy = [&] {
    for (int b = 0; b < B; ++b)
      tok[size_t(b)] = int32_t(std::max_element(logits.begin() + size_t(b) * V, logits.begin() + size_t(b + 1) * V) -
                               (logits.begin() + size_t(b) * V));
  };
  // a device backend's first run loads its kernels and sizes its buffers: one untimed run first
  for (int rep = m.host_memory() ? 0 : -1; rep < repeats; ++rep) {
    double t0 = now_s();
    double fwd = 0;
    if (P > 1) {
      const Hidden h = m.forward_hidden(prompts, lens, nullptr);
      rows.clear(), targets.clear();
      for (int b = 0; b < B; ++b)
        for (int i = 0; i + 1 < P; ++i) rows.push_back({&h, b * P + i}), targets.push_back(prompt[size_t(i + 1)]);
      m.score_rows(rows, targets, scores);
      fwd = now_s() - t0;
    }
    std::vector<SeqState> st;
    std::vector<SeqState*> sp;
    for (int b = 0; b < B; ++b) st.push_back(m.new_state());
    for (auto& s : st) sp.push_back(&s);
    t0 = now_s();
    {
      const Hidden h = m.forward_hidden(prompts, lens, sp.data());
      m.logits_rows(h, last, logits.data());
    }
    const double pre = now_s() - t0;
    greedy();
    t0 = now_s();
    for (int i = 0; i < decode; ++i) {
      m.decode(tok, sp.data(), logits.data());
      greedy();
    }
    if (rep >= 0) r.fwd.push_back(fwd), r.pre.push_back(pre), r.dec.push_back(now_s() - t0);
  }
  r.fwdt = median(r.fwd);
  r.ttft = median(r.pre);
  r.dect = median(r.dec);
  r.peak_mib = hwm_mib();
  return r;
}

Runner register_bench(CLI::App& app) {
  struct Opts {
    std::string model, synthetic, json, modes, quant;
    int prompt = 1024, decode = 128, repeats = 3, batch = 1;
    uint64_t seed = 1;
    bool no_bw = false;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("bench", "Measure forward (every position scored), prefill and decode speed, time to first token and peak memory");
  sub->add_option("MODEL", o->model, "Model folder (or use --synthetic)");
  add_synthetic(sub, o->synthetic, "Random weights with the shapes of a published model: ");
  sub->add_option("--mode,--modes", o->modes,
                  "Execution modes to measure side by side, e.g. fp32,int8 (default: the model's own). A synthetic "
                  "model is quantized (Quamba W8A8, calibrated on random tokens) for fake/int8");
  sub->add_option("--quant", o->quant,
                  "Synthetic model: variants measured side by side, each made from the same random weights: fp32, "
                  "quamba1 (W8A8), w8a8, w4a8, w4a16 (Quamba2 presets; weights by round-to-nearest: GPTQ changes no "
                  "speed), e.g. fp32,w8a8,w4a8,w4a16");
  sub->add_option("--prompt-len", o->prompt, "Prefill length")->capture_default_str()->check(at_least(1));
  sub->add_option("--decode", o->decode, "Tokens to decode")->capture_default_str()->check(at_least(1));
  sub->add_option("--repeats", o->repeats, "Runs; the median is reported")->capture_default_str()->check(at_least(1));
  sub->add_option("--batch", o->batch, "Sequences prefilled and decoded together (decode tok/s counts all of them)")
      ->capture_default_str()
      ->check(at_least(1));
  sub->add_option("--seed", o->seed, "Seed of synthetic weights and prompt")->capture_default_str();
  sub->add_flag("--no-bandwidth", o->no_bw, "Skip the memory bandwidth measurement");
  sub->add_option("--json", o->json, "Write the results as JSON to FILE ('-' = stdout)");
  auto force = add_force(sub);
  add_backend(sub, o->c);
  add_dtype(sub, o->c);
  add_common(sub, o->c);
  return [o, force] {
    apply_common(o->c);
    check_new_output_file(o->json, "--json", *force);
    if (o->model.empty() == o->synthetic.empty()) fail("bench: give either MODEL or --synthetic NAME");
    if (!o->quant.empty() && o->synthetic.empty()) fail("--quant needs --synthetic (a model folder is measured as it is)");
    if (!o->quant.empty() && !o->modes.empty()) fail("--quant and --mode: give one (each --quant variant runs its own kernels)");
    std::vector<std::string> variants = split_list(o->quant);
    for (const auto& v : variants)
      if (v != "fp32" && v != "quamba1" && v != "w8a8" && v != "w4a8" && v != "w4a16")
        fail("--quant: unknown variant '{}' (fp32, quamba1, w8a8, w4a8, w4a16)", v);
    const double t_load = now_s();
    std::unique_ptr<Model> m =
        o->synthetic.empty() ? Model::load(o->model) : Model::random(published_config(o->synthetic), o->seed);
    const double load_s = now_s() - t_load;
    const ModelConfig c = m->config();
    std::vector<ExecMode> modes;
    std::stringstream ss(o->modes);
    for (std::string t; std::getline(ss, t, ',');)
      if (!t.empty()) modes.push_back(parse_mode(t));
    if (!variants.empty()) {
      modes.clear();
      for (const auto& v : variants) modes.push_back(v == "fp32" ? ExecMode::FP32 : ExecMode::Int8);
    }
    if (modes.empty()) modes.push_back(m->is_quantized() ? ExecMode::Int8 : ExecMode::FP32);
    if (o->synthetic.empty())
      for (ExecMode mode : modes) check_session_options(*m, {.mode = mode});  // before measuring anything
    // FP modes first: the FP weights are freed before the quantized modes run, so each mode's
    // peak memory is its own (each --quant variant starts again from the seeded random weights).
    if (variants.empty())
      std::stable_sort(modes.begin(), modes.end(), [](ExecMode a, ExecMode b) { return (a == ExecMode::FP32) > (b == ExecMode::FP32); });
    std::mt19937 rng(uint32_t(o->seed));
    std::vector<int32_t> prompt(size_t(o->prompt));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(std::min(c.vocab_size, 50000)));
    const double bw = o->no_bw ? 0 : read_bandwidth_gbs();
    const std::string name = o->synthetic.empty() ? o->model : "synthetic:" + o->synthetic;
    fmt::print("{:<28} {:>7} {:>8} {:>12} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10}\n", "model", "mode", "threads",
               "forward_tok/s", "prefill_tok/s", "decode_tok/s", "ttft_ms", "weights_MiB", "decode_bound", "peak_MiB");
    nlohmann::json runs = nlohmann::json::array();
    double quantize_s = 0;
    std::string backend_desc, backend_name;
    for (size_t vi = 0; vi < modes.size(); ++vi) {
      const ExecMode mode = modes[vi];
      const std::string variant = variants.empty() ? mode_name(mode) : variants[vi];
      if (!variants.empty() && (vi > 0 && m->is_quantized())) {
        m.reset();  // the previous variant's weights go before the next are made
        m = Model::random(published_config(o->synthetic), o->seed);
      }
      if (mode != ExecMode::FP32 && !m->is_quantized()) {
        const double tq = now_s();
        CalibSamples cs;  // random tokens: the synthetic weights are random too
        std::mt19937 crng(uint32_t(o->seed) + 7);
        for (int s = 0; s < 4; ++s) {
          cs.samples.emplace_back(256);
          for (auto& t : cs.samples.back()) t = int32_t(crng() % uint32_t(std::min(c.vocab_size, 50000)));
        }
        QuantizeInputs qi;
        qi.calib = &cs;
        qi.calib_opts.progress = false;
        qi.progress = false;
        QuantMeta meta;
        if (variant != "quamba1" && variant != "int8" && variant != "fake") {
          apply_quamba2_preset(meta, variant, c);
          meta.gptq = false;  // the same formats and kernels; GPTQ only chooses other codes
        }
        auto q = quantize(*m, meta, qi).model;
        m = std::move(q);  // frees the FP projections
        quantize_s = now_s() - tq;
      }
      Session S(*m, {.backend = o->c.backend, .mode = mode, .dtype = dtype_flag(o->c)});
      backend_desc = S.backend_name() + " (" + S.backend_isa() + ")";
      backend_name = S.backend_name();
      malloc_trim(0);  // memory the quantization freed goes back to the system before the peak is reset
      reset_peak_rss();
      const BenchRun r = run_once(S, prompt, o->decode, o->repeats, o->batch);
      const double B = o->batch;
      const double bytes = double(S.weight_bytes());
      const double bound = bw > 0 ? bw * 1e9 / bytes : 0;
      const double fwd_tok_s = r.fwdt > 0 ? B * o->prompt / r.fwdt : 0;
      fmt::print("{:<28} {:>7} {:>8} {:>12.1f} {:>12.1f} {:>12.2f} {:>10.1f} {:>12.1f} {:>12.2f} {:>10.1f}\n", name,
                 variant, num_threads(), fwd_tok_s, B * o->prompt / r.ttft, B * o->decode / r.dect, 1e3 * r.ttft,
                 bytes / 1048576.0, bound, r.peak_mib);
      runs.push_back({{"mode", variant},
                      {"exec_mode", mode_name(mode)},
                      {"forward_tok_s", fwd_tok_s},
                      {"prefill_tok_s", B * o->prompt / r.ttft},
                      {"decode_tok_s", B * o->decode / r.dect},
                      {"ttft_ms", 1e3 * r.ttft},
                      {"forward_runs_s", r.fwd},
                      {"prefill_runs_s", r.pre},
                      {"decode_runs_s", r.dec},
                      {"weight_bytes_per_token", bytes},
                      {"decode_bound_tok_s", bound},
                      {"peak_rss_mib", r.peak_mib},
                      {"device_mib", S.host_memory() ? 0.0 : double(S.device_bytes()) / 1048576.0}});
      if (!S.host_memory()) fmt::print("  device memory held by the session: {:.1f} MiB\n", double(S.device_bytes()) / 1048576.0);
    }
    if (bw > 0) fmt::print("memory read bandwidth {:.1f} GB/s\n", bw);
    fmt::print("kernels: backend {}, float weights {}\n", backend_desc, float_type_name(dtype_flag(o->c)));
    if (runs.size() > 1)
      for (size_t i = 1; i < runs.size(); ++i)
        fmt::print("{} vs {}: prefill x{:.2f}, decode x{:.2f}, peak memory x{:.2f}\n", runs[i]["mode"].get<std::string>(),
                   runs[0]["mode"].get<std::string>(),
                   runs[i]["prefill_tok_s"].get<double>() / runs[0]["prefill_tok_s"].get<double>(),
                   runs[i]["decode_tok_s"].get<double>() / runs[0]["decode_tok_s"].get<double>(),
                   runs[i]["peak_rss_mib"].get<double>() / runs[0]["peak_rss_mib"].get<double>());
    if (!o->json.empty()) {
      nlohmann::json j = {{"model", name},         {"threads", num_threads()}, {"backend", backend_name}, {"dtype", float_type_name(dtype_flag(o->c))}, {"prompt_len", o->prompt}, {"batch", o->batch},
                          {"decode_tokens", o->decode}, {"repeats", o->repeats}, {"read_bandwidth_gbs", bw},
                          {"load_s", load_s},      {"quantize_s", quantize_s}, {"runs", runs}};
      for (auto& [k, v] : runs[0].items()) j[k] = v;  // the first mode also at top level (older scripts)
      write_json(o->json, j);
    }
    return 0;
  };
}

}  // namespace mambaq::cli
