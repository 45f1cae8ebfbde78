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

// How a weight is stored. F32: the values (fp16/bf16 checkpoints are converted once at load);
// S8: int8 codes {rows, cols}; S4: 4-bit codes packed two per byte {rows, cols / 2}: each row in
// blocks of 32 columns, byte j (0..15) of a block holding column j in its low nibble and column
// j + 16 in its high nibble, each stored as code + 8 (codes in [-8, 7]; cols % 32 == 0). The
// block layout lets a SIMD kernel unpack 32 columns in order with one mask and one shift.
// F16 / BF16: IEEE half / bfloat16 values {rows, cols} (uint16 each): the float weights of a session
// run with --dtype fp16|bf16 (SessionOptions::dtype), converted when the session is prepared.
enum class WFormat : uint8_t { F32, S8, S4, F16, BF16 };
const char* wformat_name(WFormat f);

// Granularity of a quantized weight's scales: one for the tensor, one per output row (channel),
// or one per group of `group` input columns of each row.
enum class Granularity : uint8_t { Tensor, Channel, Group };

// A weight in its stored format: the precision is a property of the tensor, not a global mode.
// Codes are symmetric: value ~ code * scale.
struct QTensor {
  WFormat format = WFormat::F32;
  std::vector<int64_t> shape;         // {rows, cols}; a conv1d weight {channels, d_conv}
  const void* data = nullptr;         // F32: floats; S8: codes {rows, cols}; S4: packed {rows, cols/2}; owned by `owner`
  std::shared_ptr<const void> owner;
  int bits = 32;                      // 32 for F32; the code width otherwise
  Granularity granularity = Granularity::Tensor;
  int group = 0;                      // Group: input columns per scale
  std::vector<float> scales;          // Tensor {1}; Channel {rows}; Group {rows, ceil(cols / group)}

  bool empty() const { return data == nullptr; }
  int rows() const { return shape.empty() ? 0 : int(shape[0]); }
  int cols() const { return shape.size() < 2 ? 0 : int(shape.back()); }
  int64_t size() const { return numel(shape); }
  const float* f32() const { return format == WFormat::F32 ? static_cast<const float*>(data) : nullptr; }
  const int8_t* s8() const { return format == WFormat::S8 ? static_cast<const int8_t*>(data) : nullptr; }
  const uint8_t* s4() const { return format == WFormat::S4 ? static_cast<const uint8_t*>(data) : nullptr; }
  int ngroups() const { return granularity == Granularity::Group ? (cols() + group - 1) / group : 1; }
  float scale_of(int row, int col = 0) const {
    switch (granularity) {
      case Granularity::Tensor: return scales[0];
      case Granularity::Channel: return scales[size_t(row)];
      case Granularity::Group: return scales[size_t(row) * size_t(ngroups()) + size_t(col / group)];
    }
    return 0;
  }
  // The code of element (row, col), any integer format.
  int code(int row, int col) const;
  // What the weight is, for tables and errors: "f32", "s8 per tensor", "s4 g128", ...
  std::string describe() const;
  size_t bytes() const;  // codes or values plus scales
  // An F32 tensor sharing the weight's buffer.
  static QTensor from_weight(const Weight& w);
  Weight as_weight() const;  // F32 only: a view sharing the buffer
};

// Index of the first NaN or Inf in x[0..n), or -1.
int64_t first_non_finite(const float* x, int64_t n);

// Convert any float dtype to fp32 (a NaN or Inf is an error naming the tensor) (fp16/bf16/f64 are converted, f32 is shared).
Weight to_f32(const RawTensor& t, const std::string& name_for_errors);

}  // namespace mambaq
