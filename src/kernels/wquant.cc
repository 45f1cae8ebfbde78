#include "kernels/wquant.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "mambaq/error.h"

namespace mambaq {

namespace {
inline int8_t code(float x, float inv, int qmax) {
  const float r = std::nearbyint(x * inv);  // round half to even, as torch.round
  if (r != r) return 0;  // NaN (from an upstream overflow): no undefined float-to-int conversion
  return int8_t(std::clamp(r, float(-qmax), float(qmax)));
}
inline float scale_for(float m, int qmax) { return m > 0 ? m / float(qmax) : 1.f; }
float absmax(const float* x, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}
}  // namespace

bool s4_supported(int cols, int group) { return cols % 32 == 0 && group > 0 && group % 32 == 0; }

QTensor make_qtensor(const std::vector<int8_t>& codes, int rows, int cols, int bits, Granularity g, int group,
                     std::vector<float> scales) {
  MQ_ASSERT(codes.size() == size_t(rows) * cols);
  QTensor w;
  w.shape = {rows, cols};
  w.bits = bits;
  w.granularity = g;
  w.group = g == Granularity::Group ? group : 0;
  w.scales = std::move(scales);
  if (bits == 4 && g == Granularity::Group) {
    if (!s4_supported(cols, group)) fail("internal error: {} columns in groups of {} cannot be packed as s4", cols, group);
    w.format = WFormat::S4;
    auto buf = std::make_shared<std::vector<uint8_t>>(size_t(rows) * cols / 2);
    for (int r = 0; r < rows; ++r) {
      const int8_t* q = codes.data() + size_t(r) * cols;
      uint8_t* o = buf->data() + size_t(r) * cols / 2;
      for (int b = 0; b < cols / 32; ++b)
        for (int j = 0; j < 16; ++j) {
          const int lo = q[b * 32 + j] + 8, hi = q[b * 32 + j + 16] + 8;
          MQ_ASSERT(lo >= 0 && lo < 16 && hi >= 0 && hi < 16);
          o[b * 16 + j] = uint8_t(lo | (hi << 4));
        }
    }
    w.data = buf->data();
    w.owner = buf;
  } else {
    w.format = WFormat::S8;
    auto buf = std::make_shared<std::vector<int8_t>>(codes);
    w.data = buf->data();
    w.owner = buf;
  }
  return w;
}

QTensor quantize_weight(const float* W, int rows, int cols, Granularity g, int bits, int group) {
  if (bits < 2 || bits > 8) fail("weight bits {} are not supported (2..8)", bits);
  const int qmax = qmax_of(bits);
  const int ng = g == Granularity::Group ? (cols + group - 1) / group : 1;
  std::vector<float> scales;
  if (g == Granularity::Tensor) {
    float m = 0;
    for (int r = 0; r < rows; ++r) m = std::max(m, absmax(W + size_t(r) * cols, cols));
    scales = {scale_for(m, qmax)};
  } else {
    scales.resize(size_t(rows) * ng);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < ng; ++k) {
        const int c0 = k * (g == Granularity::Group ? group : cols), c1 = std::min(cols, c0 + (g == Granularity::Group ? group : cols));
        scales[size_t(r) * ng + k] = scale_for(absmax(W + size_t(r) * cols + c0, c1 - c0), qmax);
      }
  }
  std::vector<int8_t> q(size_t(rows) * cols);
  const int gs = g == Granularity::Group ? group : cols;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const float s = g == Granularity::Tensor ? scales[0] : scales[size_t(r) * ng + size_t(c / gs)];
      q[size_t(r) * cols + c] = code(W[size_t(r) * cols + c], 1.0f / s, qmax);
    }
  return make_qtensor(q, rows, cols, bits, g, group, std::move(scales));
}

QTensor quantize_weight_splits(const float* W, int rows, int cols, std::span<const int> splits, int bits) {
  MQ_ASSERT(splits.size() >= 2 && splits.front() == 0 && splits.back() == rows);
  const int qmax = qmax_of(bits);
  std::vector<float> scales(static_cast<size_t>(rows));
  std::vector<int8_t> q(size_t(rows) * cols);
  for (size_t i = 0; i + 1 < splits.size(); ++i) {
    const int r0 = splits[i], r1 = splits[i + 1];
    MQ_ASSERT(r0 <= r1);
    const float s = scale_for(absmax(W + size_t(r0) * cols, (r1 - r0) * cols), qmax), inv = 1.0f / s;
    for (int r = r0; r < r1; ++r) {
      scales[size_t(r)] = s;
      for (int c = 0; c < cols; ++c) q[size_t(r) * cols + c] = code(W[size_t(r) * cols + c], inv, qmax);
    }
  }
  return make_qtensor(q, rows, cols, bits, Granularity::Channel, 0, std::move(scales));
}

std::vector<float> dequantize_weight(const QTensor& w) {
  MQ_ASSERT(w.format == WFormat::S8 || w.format == WFormat::S4);
  std::vector<float> out(size_t(w.size()));
  const int rows = w.rows(), cols = w.cols();
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out[size_t(r) * cols + c] = float(w.code(r, c)) * w.scale_of(r, c);
  return out;
}

void dequantize_row(const QTensor& w, int row, float* out) {
  const int cols = w.cols();
  for (int c = 0; c < cols; ++c) out[c] = float(w.code(row, c)) * w.scale_of(row, c);
}

void fake_quantize(float* x, size_t n, float scale, int bits) {
  if (!(scale > 0)) fail("internal error: fake_quantize with scale {}", scale);
  const int qmax = qmax_of(bits);
  const float inv = 1.0f / scale;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) x[i] = float(code(x[i], inv, qmax)) * scale;
}

}  // namespace mambaq
