// Round-to-nearest weight quantization into a QTensor and back: symmetric, scale = max|W| / qmax
// over the tensor, the row or the group, q = clamp(round_half_even(W / s), -qmax, qmax),
// qmax = 2^(b-1) - 1 (the reference's per-tensor default; Quamba). A kernel like ggml's
// quantize_row_*: the recipes (quant/) decide what to quantize, this is the arithmetic.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mambaq/tensor.h"

namespace mambaq {

inline int qmax_of(int bits) { return (1 << (bits - 1)) - 1; }

// W {rows, cols} -> S8 codes (2..8 bits) and scales.
QTensor quantize_weight(const float* W, int rows, int cols, Granularity g, int bits = 8);
// codes * scales -> {rows, cols}
std::vector<float> dequantize_weight(const QTensor& w);

// In place quantize-dequantize of activations with one static scale (fake quantization).
void fake_quantize(float* x, size_t n, float scale, int bits = 8);

}  // namespace mambaq
