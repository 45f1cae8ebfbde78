#include <algorithm>
#include <fmt/format.h>

#include "core/half.h"
#include "mambaq/error.h"
#include "mambaq/tensor.h"

namespace mambaq {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t numel(const std::vector<int64_t>& shape) {
  // Shapes come from files: refuse what cannot be a tensor instead of overflowing.
  int64_t n = 1;
  for (int64_t s : shape)
    if (s < 0 || __builtin_mul_overflow(n, s, &n) || n > (int64_t(1) << 48))
      fail("shape {} is not a valid tensor shape (negative or over 2^48 elements)", shape_str(shape));
  return n;
}

int64_t first_non_finite(const float* x, int64_t n) {
  // Exponent bits all ones = Inf or NaN; branch-free so that it vectorises (one pass over the
  // weights at load costs a fraction of reading them).
  const uint32_t* u = reinterpret_cast<const uint32_t*>(x);
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    uint32_t bad = 0;
    for (int64_t i = b; i < e; ++i) bad |= uint32_t((u[i] & 0x7f800000u) == 0x7f800000u);
    if (bad)
      for (int64_t i = b; i < e; ++i)
        if ((u[i] & 0x7f800000u) == 0x7f800000u) return i;
  }
  return -1;
}

static Weight checked(Weight w, const std::string& name) {
  const int64_t i = first_non_finite(w.data, w.size());
  if (i >= 0)
    fail("tensor '{}' holds a non-finite value ({}) at element {}: corrupt or diverged weights", name, w.data[i], i);
  return w;
}

Weight to_f32(const RawTensor& t, const std::string& name) {
  Weight w;
  w.shape = t.shape;
  const int64_t n = numel(t.shape);
  if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0) {
    w.data = reinterpret_cast<const float*>(t.data);
    w.owner = t.owner;
    return checked(std::move(w), name);
  }
  auto buf = std::make_shared<std::vector<float>>(size_t(n));
  float* out = buf->data();
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, p, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = float(d);
      }
      break;
    default:
      fail("tensor '{}': dtype {} is not a floating-point type this model can use (F32, F16, BF16, F64)",
           name, dtype_name(t.dtype));
  }
  w.data = out;
  w.owner = buf;
  return checked(std::move(w), name);
}

}  // namespace mambaq

namespace mambaq {

const char* wformat_name(WFormat f) {
  switch (f) {
    case WFormat::F32: return "f32";
    case WFormat::S8: return "s8";
    case WFormat::S4: return "s4";
    case WFormat::F16: return "f16";
    case WFormat::BF16: return "bf16";
  }
  return "?";
}

size_t QTensor::bytes() const {
  if (!data) return 0;
  const size_t n = size_t(size());
  const size_t v = format == WFormat::F32                               ? n * 4
                   : format == WFormat::F16 || format == WFormat::BF16 ? n * 2
                   : format == WFormat::S8                             ? n
                                                                       : (n + 1) / 2;
  return v + scales.size() * sizeof(float);
}

int QTensor::code(int row, int col) const {
  const size_t r = size_t(row);
  if (format == WFormat::S8) return s8()[r * size_t(cols()) + size_t(col)];
  if (format == WFormat::S4) {
    const uint8_t b = s4()[r * size_t(cols() / 2) + size_t(col / 32) * 16 + size_t(col % 16)];
    return int((col % 32) < 16 ? (b & 15) : (b >> 4)) - 8;
  }
  return 0;
}

std::string QTensor::describe() const {
  if (format == WFormat::F32) return "f32";
  std::string s = wformat_name(format);
  if (bits != 8 && format == WFormat::S8) s += fmt::format("({}b)", bits);  // (not "(" + string: a GCC 12 -Wrestrict false positive)
  switch (granularity) {
    case Granularity::Tensor: return s + " per tensor";
    case Granularity::Channel: return s + " per channel";
    case Granularity::Group: return s + (group >= cols() ? " per row" : " g" + std::to_string(group));
  }
  return s;
}

QTensor QTensor::from_weight(const Weight& w) {
  QTensor t;
  t.shape = w.shape;
  t.data = w.data;
  t.owner = w.owner;
  return t;
}

Weight QTensor::as_weight() const {
  Weight w;
  if (format != WFormat::F32) return w;
  w.shape = shape;
  w.data = f32();
  w.owner = owner;
  return w;
}

}  // namespace mambaq
