// Per-thread scratch buffers reused across calls (no page faults or zeroing in the hot path).
// The contents are undefined; each slot is owned by one caller (the list below), so two live
// buffers never share a slot. Device-neutral: the forward pass and the kernels both use it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mambaq {

float* scratch(int slot, size_t n);
inline int8_t* scratch_i8(int slot, size_t n) { return reinterpret_cast<int8_t*>(scratch(slot, (n + 3) / 4)); }

enum ScratchSlot {
  kSlotResidual, kSlotNormed, kSlotMixerOut,                                 // model/model.cc
  kSlotInProj, kSlotConvOut, kSlotXProj, kSlotDelta, kSlotScanOut, kSlotUssm,  // model/mamba{1,2}.cc
  kSlotQIn, kSlotQInProj, kSlotQConv, kSlotQXProj, kSlotQDelta, kSlotQOut,     // model/exec.cc: int8 codes
  kSlotQState, kSlotTapView, kSlotGateZ, kSlotQHead,                                       // model/exec.cc
  kSlotQDeq0, kSlotQDeq1, kSlotQDeq2, kSlotQDeq3, kSlotQDeq4, kSlotQAcc, kSlotQGemmA, kSlotQGemmW,  // kernels
};

}  // namespace mambaq
