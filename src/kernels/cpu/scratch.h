// The cpu kernels' private scratch: per-thread host buffers reused across calls (no page faults
// or zeroing in the hot path). The contents are undefined; each slot is owned by one kernel (the
// list below). The forward's own buffers are the session's Workspace (model/exec.h), in the
// backend's memory.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mambaq {

float* scratch(int slot, size_t n);
inline int8_t* scratch_i8(int slot, size_t n) { return reinterpret_cast<int8_t*>(scratch(slot, (n + 3) / 4)); }

enum ScratchSlot {
  kSlotQDeq0, kSlotQDeq1, kSlotQDeq2, kSlotQDeq3, kSlotQDeq4, kSlotQAcc, kSlotQGemmA, kSlotQGemmW,
  kSlotGemmPackW, kSlotGemmPackA,  // the fp32 GEMM's aligned copies of misaligned W blocks / A tiles
};

}  // namespace mambaq
