#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "mambaq/session.h"

namespace mambaq {

struct SampleOptions {
  float temperature = 0.f;  // 0 = greedy
  int top_k = 0;            // 0 = off
  float top_p = 1.f;        // 1 = off
  uint64_t seed = 0;
  int32_t stop_id = -1;     // stop after emitting this token (e.g. <|endoftext|>), -1 = never
};

struct GenStats {
  double prefill_s = 0;  // time to first token
  double decode_s = 0;   // the remaining tokens
  int prompt_tokens = 0, new_tokens = 0;
};

// Pick the next token from logits {vocab}.
int32_t sample_token(std::vector<float>& logits, const SampleOptions& opt, uint64_t& rng_state);

// Prefill the prompt, then decode `n` tokens one at a time carrying the recurrent state.
// `on_token` is called for every new token as soon as it is chosen; returning false stops.
std::vector<int32_t> generate(Session& m, const std::vector<int32_t>& prompt, int n, const SampleOptions& opt,
                              const std::function<bool(int32_t)>& on_token = {}, GenStats* stats = nullptr);

}  // namespace mambaq
