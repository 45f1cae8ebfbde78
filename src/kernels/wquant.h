// Round-to-nearest weight quantization into a QTensor and back: symmetric, scale = max|W| / qmax
// over the tensor, the row, a split of rows or a group of columns of a row,
// q = clamp(round_half_even(W / s), -qmax, qmax), qmax = 2^(b-1) - 1 (the reference's per-tensor
// default; Quamba). 4-bit weights are stored packed (S4, include/mambaq/tensor.h), wider ones as
// int8 codes (S8). A kernel like ggml's quantize_row_*: the recipes (quant/) decide what to
// quantize, this is the arithmetic.
//
// 4 bits: the reference (Quamba2's Marlin path and its GPTQ) uses scale = max / 7.5 with codes
// in [-8, 7], which clips each group's positive maximum to 7/7.5 of its value and treats signs
// unequally; mambaq keeps the symmetric rule of every other width (scale = max / 7, codes in
// [-7, 7]; code -8 is never produced). docs/quamba2.md lists this with the other departures.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mambaq/tensor.h"

namespace mambaq {

inline int qmax_of(int bits) { return (1 << (bits - 1)) - 1; }

// W {rows, cols} -> codes (2..8 bits; 4 bits with Granularity::Group are packed S4, the rest S8)
// and scales. Group: `group` columns per scale (a multiple of 32 for S4; cols % 32 == 0).
QTensor quantize_weight(const float* W, int rows, int cols, Granularity g, int bits = 8, int group = 128);
// Rows [splits[i], splits[i+1]) share one scale (Quamba2's in_proj: z | x | B | C | dt); stored as
// per-channel scales. splits = {0, ..., rows}.
QTensor quantize_weight_splits(const float* W, int rows, int cols, std::span<const int> splits, int bits = 8);
// A QTensor from codes {rows, cols} already computed (GPTQ) and their scales.
QTensor make_qtensor(const std::vector<int8_t>& codes, int rows, int cols, int bits, Granularity g, int group,
                     std::vector<float> scales);
// Whether a {rows, cols} weight can be stored as S4 with this group size.
bool s4_supported(int cols, int group);
// codes * scales -> {rows, cols}
std::vector<float> dequantize_weight(const QTensor& w);
// One row {cols} of a quantized weight (a quantized embedding's lookup).
void dequantize_row(const QTensor& w, int row, float* out);

// In place quantize-dequantize of activations with one static scale (fake quantization).
void fake_quantize(float* x, size_t n, float scale, int bits = 8);

}  // namespace mambaq
