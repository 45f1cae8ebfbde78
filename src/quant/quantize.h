// Symmetric integer quantization (Quamba): q = clamp(round(x / s), -qmax, qmax), qmax = 2^(b-1) - 1,
// x ~ q * s. Weights per tensor (one scale, the reference's default) or per output channel.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace mambaq {

enum class Granularity { Tensor, Channel };

struct QuantizedWeight {
  int rows = 0, cols = 0, bits = 8;
  Granularity granularity = Granularity::Tensor;
  std::vector<int8_t> q;       // {rows, cols}, unless the codes live in `ext` (e.g. a mapped file)
  std::vector<float> scales;   // {1} per tensor, {rows} per channel
  const int8_t* ext = nullptr;
  std::shared_ptr<const void> owner;  // keeps `ext` alive
  const int8_t* codes() const { return ext ? ext : q.data(); }
  size_t size() const { return size_t(rows) * size_t(cols); }
  float scale_of(int row) const { return granularity == Granularity::Tensor ? scales[0] : scales[size_t(row)]; }
};

inline int qmax_of(int bits) { return (1 << (bits - 1)) - 1; }

// W {rows, cols} -> int8 codes and scales (scale = max|W| / qmax over the tensor or the row).
QuantizedWeight quantize_weight(const float* W, int rows, int cols, Granularity g, int bits = 8);
// codes * scales -> {rows, cols}
std::vector<float> dequantize_weight(const QuantizedWeight& w);

// In place quantize-dequantize of activations with one static scale (fake quantization).
void fake_quantize(float* x, size_t n, float scale, int bits = 8);

}  // namespace mambaq
