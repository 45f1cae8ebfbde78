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
}  // namespace

QTensor quantize_weight(const float* W, int rows, int cols, Granularity g, int bits) {
  if (bits < 2 || bits > 8) fail("weight bits {} are not supported (2..8)", bits);
  if (g == Granularity::Group) fail("internal error: group-wise round-to-nearest is not implemented yet");
  QTensor w;
  w.format = WFormat::S8;
  w.shape = {rows, cols};
  w.bits = bits;
  w.granularity = g;
  auto codes = std::make_shared<std::vector<int8_t>>(size_t(rows) * cols);
  int8_t* q = codes->data();
  w.data = q;
  w.owner = codes;
  const int qmax = qmax_of(bits);
  auto row_max = [&](int r) {
    float m = 0;
    for (int c = 0; c < cols; ++c) m = std::max(m, std::fabs(W[size_t(r) * cols + c]));
    return m;
  };
  if (g == Granularity::Tensor) {
    float m = 0;
    for (int r = 0; r < rows; ++r) m = std::max(m, row_max(r));
    w.scales = {m > 0 ? m / float(qmax) : 1.f};
  } else {
    w.scales.resize(size_t(rows));
    for (int r = 0; r < rows; ++r) {
      const float m = row_max(r);
      w.scales[size_t(r)] = m > 0 ? m / float(qmax) : 1.f;
    }
  }
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const float inv = 1.0f / w.scale_of(r);
    for (int c = 0; c < cols; ++c) q[size_t(r) * cols + c] = code(W[size_t(r) * cols + c], inv, qmax);
  }
  return w;
}

std::vector<float> dequantize_weight(const QTensor& w) {
  MQ_ASSERT(w.format == WFormat::S8);
  std::vector<float> out(size_t(w.size()));
  const int8_t* q = w.s8();
  const int rows = w.rows(), cols = w.cols();
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out[size_t(r) * cols + c] = float(q[size_t(r) * cols + c]) * w.scale_of(r, c);
  return out;
}

void fake_quantize(float* x, size_t n, float scale, int bits) {
  if (!(scale > 0)) fail("internal error: fake_quantize with scale {}", scale);
  const int qmax = qmax_of(bits);
  const float inv = 1.0f / scale;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) x[i] = float(code(x[i], inv, qmax)) * scale;
}

}  // namespace mambaq
