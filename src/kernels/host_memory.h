// Memory of the host backends (ref, cpu): 64-byte aligned host allocations, memcpy for every
// transfer, nothing to synchronize. `supports`: float (F32) and int8 (I8 codes, S8/S4 weights),
// and F16/BF16 weights beside F32 activations (the GEMM widens them: correct, not fast; the
// 16-bit weights are for devices). F16/BF16 activations are not computed by the host kernels.
#pragma once
#include <cstddef>

#include "kernels/backend.h"

namespace mambaq::host_memory {

void* alloc(void* ctx, size_t bytes);
void release(void* ctx, void* p);
void copy(void* ctx, void* dst, const void* src, size_t bytes);
void copy2d(void* ctx, void* dst, size_t ldd, const void* src, size_t lds, size_t row_bytes, size_t rows);
void fill(void* ctx, void* dst, int byte, size_t bytes);
void synchronize(void* ctx);
bool supports(void* ctx, Op op, OpFormats f);

}  // namespace mambaq::host_memory
