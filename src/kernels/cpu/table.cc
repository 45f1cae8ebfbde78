// The cpu backends: one table per instruction-set variant of the cpu kernels (the same sources
// compiled for x86-64-v4 / v3 / v2: kernels/cpu/ops.h), and `cpu`, the widest this CPU runs.
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/half.h"
#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "kernels/host_memory.h"
#include "kernels/ref/ops.h"
#include "kernels/registry.h"
#include "mambaq/error.h"

namespace mambaq {

namespace cpu_v4 {
#include "kernels/host_table.inc"
}
namespace cpu_v3 {
#include "kernels/host_table.inc"
}
namespace cpu_v2 {
#include "kernels/host_table.inc"
}

namespace {

// Feature by feature (clang 14 does not know the level names GCC 12 accepts); every CPU with
// these also has the level's remaining features (F16C, LZCNT, MOVBE come with AVX2 + BMI2).
int cpu_level() {
  __builtin_cpu_init();
  const bool v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("sse4.1") &&
                  __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("popcnt");
  const bool v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  return v4 ? 4 : v3 ? 3 : v2 ? 2 : 0;
}

struct Variant {
  const char* name;
  const char* isa;
  int level;
  Backend (*table)(const char*, const char*);
};
const Variant kVariants[] = {
    {"cpu-v4", "x86-64-v4 (AVX-512)", 4, cpu_v4::host_table},
    {"cpu-v3", "x86-64-v3 (AVX2, FMA)", 3, cpu_v3::host_table},
    {"cpu-v2", "x86-64-v2 (SSE4.2)", 2, cpu_v2::host_table},
};

// One shared instance per variant (host backends have no per-instance state).
BackendRef variant_instance(const Variant& v) {
  static BackendRef inst[3];
  static std::once_flag once[3];
  const size_t i = size_t(&v - kVariants);
  std::call_once(once[i], [&] { inst[i] = std::make_shared<BackendHandle>(v.table(v.name, v.isa), nullptr); });
  return inst[i];
}

const Variant& best() {
  for (const Variant& v : kVariants)
    if (cpu_level() >= v.level) return v;
  return kVariants[2];
}

}  // namespace

void register_cpu_backends() {
  register_backend({.name = "cpu",
                    .description = "the widest cpu variant this CPU runs",
                    .available = [] { return std::string(); },
                    .open = [](const std::string&) { return variant_instance(best()); },
                    .rank = 10});
  register_backend(
      {.name = "cpu-v4",
       .description = "cpu kernels for x86-64-v4 (AVX-512)",
       .available = [] { return cpu_level() >= 4 ? std::string() : std::string("this CPU lacks AVX-512 (x86-64-v4)"); },
       .open = [](const std::string&) { return variant_instance(kVariants[0]); },
       .rank = 4});
  register_backend(
      {.name = "cpu-v3",
       .description = "cpu kernels for x86-64-v3 (AVX2, FMA)",
       .available =
           [] { return cpu_level() >= 3 ? std::string() : std::string("this CPU lacks AVX2/FMA (x86-64-v3)"); },
       .open = [](const std::string&) { return variant_instance(kVariants[1]); },
       .rank = 3});
  register_backend(
      {.name = "cpu-v2",
       .description = "cpu kernels for x86-64-v2 (SSE4.2)",
       .available = [] { return cpu_level() >= 2 ? std::string() : std::string("this CPU lacks SSE4.2 (x86-64-v2)"); },
       .open = [](const std::string&) { return variant_instance(kVariants[2]); },
       .rank = 2});
}

}  // namespace mambaq
