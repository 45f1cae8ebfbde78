// The backbone shared by both architectures: embedding -> n_layer x (RMSNorm -> mixer -> residual add)
// -> final RMSNorm. Sequences are packed back to back ({T, d_model} with T = sum of lengths) so the
// projections run as large matrix products; conv and scan respect the sequence boundaries.
#include <cstring>
#include <numeric>

#include "kernels/cpu/ops.h"
#include "mambaq/error.h"
#include "mambaq/model.h"

namespace mambaq {

void Model::forward(std::span<const int32_t> tokens, std::span<const int> lens, SeqState* const* states,
                    float* hidden, Tap* tap) const {
  const int dm = cfg_.d_model;
  std::vector<int> offs(lens.size() + 1, 0);
  for (size_t s = 0; s < lens.size(); ++s) {
    MQ_ASSERT(lens[s] >= 0);
    offs[s + 1] = offs[s] + lens[s];
  }
  const int T = offs.back();
  MQ_ASSERT(size_t(T) == tokens.size());
  if (T == 0) return;
  // r: the residual stream {T, d_model}
  float* r = scratch(kSlotResidual, size_t(T) * dm);
  float* x = scratch(kSlotNormed, size_t(T) * dm);
  float* mix = scratch(kSlotMixerOut, size_t(T) * dm);
  for (int t = 0; t < T; ++t) {
    const int32_t id = tokens[size_t(t)];
    if (id < 0 || id >= cfg_.padded_vocab)
      fail("token id {} is outside the model's vocabulary [0, {})", id, cfg_.padded_vocab);
    std::memcpy(r + size_t(t) * dm, w_.embedding.data + size_t(id) * dm, sizeof(float) * size_t(dm));
  }
  const size_t nseq = lens.size();
  std::vector<float*> conv_st(nseq, nullptr), ssm_st(nseq, nullptr);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    if (states)
      for (size_t s = 0; s < nseq; ++s)
        if (states[s]) {
          conv_st[s] = states[s]->conv[size_t(l)].data();
          ssm_st[s] = states[s]->ssm[size_t(l)].data();
        }
    cpu::rmsnorm(r, L.norm.data, x, T, dm, cfg_.norm_eps);
    if (cfg_.arch == Arch::Mamba1)
      mixer_mamba1(l, x, mix, T, offs, conv_st.data(), ssm_st.data(), tap);
    else
      mixer_mamba2(l, x, mix, T, offs, conv_st.data(), ssm_st.data(), tap);
    if (tap) tap->on(l, "mixer_out", mix, T, dm, offs);
#pragma omp parallel for schedule(static) if (T > 8)
    for (int t = 0; t < T; ++t)
#pragma omp simd
      for (int i = 0; i < dm; ++i) r[size_t(t) * dm + i] += mix[size_t(t) * dm + i];
    if (tap) tap->on(l, "block_out", r, T, dm, offs);
  }
  cpu::rmsnorm(r, w_.norm_f.data, hidden, T, dm, cfg_.norm_eps);
  if (tap) tap->on(-1, "lm_head:input", hidden, T, dm, offs);
  if (states)
    for (size_t s = 0; s < lens.size(); ++s)
      if (states[s]) states[s]->pos += lens[s];
}

void Model::lm_head(const float* hidden, int rows, float* logits) const {
  cpu::gemm(rows, cfg_.padded_vocab, cfg_.d_model, hidden, cfg_.d_model, w_.lm_head.data, nullptr, logits,
            cfg_.padded_vocab);
}

std::vector<float> Model::last_logits(std::span<const int32_t> tokens) const {
  if (tokens.empty()) fail("cannot compute logits of an empty prompt");
  const int T = int(tokens.size());
  std::vector<float> hidden(size_t(T) * cfg_.d_model);
  const int lens[1] = {T};
  forward(tokens, lens, nullptr, hidden.data());
  std::vector<float> logits(size_t(cfg_.padded_vocab));
  lm_head(hidden.data() + size_t(T - 1) * cfg_.d_model, 1, logits.data());
  return logits;
}

}  // namespace mambaq
