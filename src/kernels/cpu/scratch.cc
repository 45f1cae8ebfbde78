#include "kernels/cpu/scratch.h"

#include <cstdint>
#include <vector>

namespace mambaq {

float* scratch(int slot, size_t n) {
  // 64-byte aligned (a zmm load that straddles two cache lines costs two: measured 1.4x on the
  // fp32 GEMM over dequantized weights, BENCHMARKS.md session 14)
  thread_local std::vector<std::vector<float>> pool;
  if (size_t(slot) >= pool.size()) pool.resize(size_t(slot) + 1);
  auto& v = pool[size_t(slot)];
  if (v.size() < n + 16) {
    v.clear();
    v.shrink_to_fit();
    v.resize(n + 16);
  }
  const auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

}  // namespace mambaq
