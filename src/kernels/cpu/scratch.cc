#include "kernels/cpu/scratch.h"

#include <vector>

namespace mambaq {

float* scratch(int slot, size_t n) {
  thread_local std::vector<std::vector<float>> pool;
  if (size_t(slot) >= pool.size()) pool.resize(size_t(slot) + 1);
  auto& v = pool[size_t(slot)];
  if (v.size() < n) {
    v.clear();
    v.shrink_to_fit();
    v.resize(n);
  }
  return v.data();
}

}  // namespace mambaq
