// Branch-free float math that GCC vectorises inside `#pragma omp simd` loops.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace mambaq {

// exp(x), relative error < 2e-7 on [-87, 88]; underflows to ~0 below -87.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693145751953125f;  // Cody-Waite: ln2 split in two parts
  r = r - n * 1.428606765330187045e-06f;
  // e^r on [-ln2/2, ln2/2], degree-6 Taylor/minimax polynomial
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

inline float fast_silu(float x) { return x / (1.0f + fast_exp(-x)); }

// softplus as torch computes it (threshold 20)
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace mambaq
