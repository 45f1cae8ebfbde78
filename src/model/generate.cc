#include "mambaq/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "mambaq/error.h"

namespace mambaq {

namespace {
// splitmix64: a small, seedable, platform-independent generator
uint64_t next_u64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double uniform(uint64_t& s) { return double(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }
}  // namespace

int32_t sample_token(std::vector<float>& logits, const SampleOptions& opt, uint64_t& rng) {
  const int V = int(logits.size());
  if (opt.temperature <= 0.f) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  int k = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  });
  idx.resize(size_t(k));
  const double mx = logits[size_t(idx[0])];
  std::vector<double> p(idx.size());
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) sum += p[i] = std::exp((logits[size_t(idx[i])] - mx) / opt.temperature);
  for (auto& x : p) x /= sum;
  if (opt.top_p < 1.f) {  // nucleus: smallest prefix with mass >= top_p
    double c = 0;
    size_t keep = 0;
    while (keep < p.size()) {
      c += p[keep++];
      if (c >= opt.top_p) break;
    }
    p.resize(keep);
    idx.resize(keep);
    double s2 = std::accumulate(p.begin(), p.end(), 0.0);
    for (auto& x : p) x /= s2;
  }
  double u = uniform(rng), c = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    c += p[i];
    if (u < c) return idx[i];
  }
  return idx.back();
}

std::vector<int32_t> generate(Session& m, const std::vector<int32_t>& prompt, int n, const SampleOptions& opt,
                              const std::function<bool(int32_t)>& on_token, GenStats* stats) {
  if (prompt.empty()) fail("generate: the prompt encodes to no tokens");
  using clk = std::chrono::steady_clock;
  const int dm = m.config().d_model;
  SeqState st = m.new_state();
  SeqState* sp[1] = {&st};
  uint64_t rng = opt.seed;
  auto t0 = clk::now();
  std::vector<float> hidden(prompt.size() * size_t(dm)), logits(static_cast<size_t>(m.config().padded_vocab));
  const int lens0[1] = {int(prompt.size())};
  m.forward(prompt, lens0, sp, hidden.data());
  m.lm_head(hidden.data() + (prompt.size() - 1) * size_t(dm), 1, logits.data());
  std::vector<int32_t> out;
  int32_t tok = sample_token(logits, opt, rng);
  auto t1 = clk::now();
  for (int i = 0; i < n; ++i) {
    out.push_back(tok);
    if (on_token && !on_token(tok)) break;
    if (tok == opt.stop_id || i + 1 == n) break;
    m.decode(std::span<const int32_t>(&tok, 1), sp, logits.data());
    tok = sample_token(logits, opt, rng);
  }
  auto t2 = clk::now();
  if (stats) {
    stats->prefill_s = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_s = std::chrono::duration<double>(t2 - t1).count();
    stats->prompt_tokens = int(prompt.size());
    stats->new_tokens = int(out.size());
  }
  return out;
}

}  // namespace mambaq
