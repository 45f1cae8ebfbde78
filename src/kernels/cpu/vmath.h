// Branch-free float math that GCC vectorises inside `#pragma omp simd` loops.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// Each instruction-set variant of the kernels has its own copy (one namespace per variant), so
// the inline functions of differently compiled files never merge at link time.
#ifndef MAMBAQ_CPU_NS
#define MAMBAQ_CPU_NS cpu_native  // outside the kernel variants (tests)
#endif
namespace mambaq::MAMBAQ_CPU_NS {

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
  // A NaN input stays NaN (the comparisons above let it through) without converting NaN to an
  // integer, which is undefined behaviour.
  const bool nan = x != x;
  const int32_t bits = ((nan ? 0 : int32_t(n)) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return nan ? x : p * scale;
}

inline float fast_silu(float x) { return x / (1.0f + fast_exp(-x)); }

// log(x) for normal positive x, relative error < 3e-7 (Cephes logf polynomial).
inline float fast_log(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, 4);
  int32_t e = ((bits >> 23) & 0xff) - 126;  // x = m * 2^e, m in [0.5, 1)
  bits = (bits & 0x007fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &bits, 4);
  // move m to [sqrt(0.5), sqrt(2))
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = float(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// log1p(y) for y >= 0, accurate for tiny y: log(u) * y / (u - 1) with u = 1 + y.
inline float fast_log1p(float y) {
  const float u = 1.0f + y;
  const float d = u - 1.0f;
  return d == 0.0f ? y : fast_log(u) * (y / d);
}

// softplus as torch computes it (threshold 20): log1p(exp(x)), stable form max(x,0) + log1p(exp(-|x|))
inline float softplus(float x) {
  const float ax = x < 0 ? -x : x;
  const float r = (x > 0 ? x : 0.0f) + fast_log1p(fast_exp(-ax));
  return x > 20.0f ? x : r;
}

}  // namespace mambaq::MAMBAQ_CPU_NS
