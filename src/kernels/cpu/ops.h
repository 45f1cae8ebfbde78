// CPU kernels: the fast versions (vectorised, threaded, packed sequences) of the op contracts
// stated in kernels/ref/ops.h. The same sources are compiled once per instruction-set level
// (CMakeLists.txt: x86-64-v4 = AVX-512, v3 = AVX2 + FMA, v2 = SSE4.2), each into its own
// namespace; kernels/backend.cc picks one at run time from the CPU's feature bits. Reached
// through the backend table (kernels/backend.h); the tests compare each with the reference.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/scratch.h"

namespace mambaq {

namespace cpu_v4 {
#include "kernels/packed_ops.inc"
}
namespace cpu_v3 {
#include "kernels/packed_ops.inc"
}
namespace cpu_v2 {
#include "kernels/packed_ops.inc"
}

}  // namespace mambaq
