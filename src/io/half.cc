#include <fmt/format.h>

#include "io/half.h"
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
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Weight to_f32(const RawTensor& t, const std::string& name) {
  Weight w;
  w.shape = t.shape;
  const int64_t n = numel(t.shape);
  if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0) {
    w.data = reinterpret_cast<const float*>(t.data);
    w.owner = t.owner;
    return w;
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
  return w;
}

}  // namespace mambaq
