// Tensors as checkpoints hold them (any dtype, any owner) and as the model uses them (fp32).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mambaq {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);
size_t dtype_size(DType d);
std::string shape_str(const std::vector<int64_t>& shape);
int64_t numel(const std::vector<int64_t>& shape);

// A tensor read from a checkpoint: raw little-endian bytes, contiguous row-major.
struct RawTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // nbytes() bytes, owned by `owner`
  std::shared_ptr<const void> owner;
  size_t nbytes() const { return size_t(numel(shape)) * dtype_size(dtype); }
};

// All tensors of one checkpoint, by name; `source` names the file(s) for errors.
struct TensorStore {
  std::string source;
  std::string format;  // "safetensors", "safetensors-sharded", "torch-zip"
  std::map<std::string, RawTensor> tensors;
  std::map<std::string, std::string> metadata;  // safetensors "__metadata__" (string values)
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// An fp32 tensor the model computes with. Zero-copy over an fp32 mmap when possible.
struct Weight {
  std::vector<int64_t> shape;
  const float* data = nullptr;
  std::shared_ptr<const void> owner;
  int64_t size() const { return numel(shape); }
  int64_t dim(int i) const { return shape.at(size_t(i)); }
  // A weight owning its values.
  static Weight from_vector(std::vector<float> v, std::vector<int64_t> shape) {
    auto buf = std::make_shared<std::vector<float>>(std::move(v));
    Weight w;
    w.shape = std::move(shape);
    w.data = buf->data();
    w.owner = buf;
    return w;
  }
};

// Index of the first NaN or Inf in x[0..n), or -1.
int64_t first_non_finite(const float* x, int64_t n);

// Convert any float dtype to fp32 (a NaN or Inf is an error naming the tensor) (fp16/bf16/f64 are converted, f32 is shared).
Weight to_f32(const RawTensor& t, const std::string& name_for_errors);

}  // namespace mambaq
