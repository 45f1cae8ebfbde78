#include "io/torch_zip.h"

#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>

#include "io/mmap_file.h"
#include "io/pickle.h"
#include "mambaq/error.h"

namespace mambaq {
namespace {

struct Zip {
  zip_t* z = nullptr;
  ~Zip() {
    if (z) zip_discard(z);
  }
};

// data.pkl only describes the tensors (names, shapes, storage keys: ~100 bytes each), so a few MB
// hold any real state_dict; 64 MiB is ~600,000 tensors. A larger declared size is refused before
// anything is allocated (the deflate ratio alone would let a 3 MB file ask for 3 GiB).
constexpr uint64_t kMaxPickleBytes = 64ull << 20;

std::shared_ptr<std::vector<uint8_t>> read_entry(zip_t* z, const std::string& name, const std::string& path,
                                                 uint64_t max_size = UINT64_MAX, const char* what = nullptr) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat(z, name.c_str(), 0, &st) != 0) fail("{}: missing archive entry '{}'", path, name);
  const zip_uint64_t need = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD | ZIP_STAT_CRC;
  if ((st.valid & need) != need) fail("{}: archive entry '{}' lacks its size or checksum", path, name);
  // The declared size is allocated before reading: bound it by what the archive can hold, so a
  // corrupt or hostile header (a "zip bomb") cannot ask for more memory than its content needs.
  // torch.save stores members uncompressed; deflate cannot expand more than 1032:1.
  if (st.comp_method == ZIP_CM_STORE ? st.size != st.comp_size : st.size / 1032 > st.comp_size)
    fail("{}: archive entry '{}' declares {} bytes from {} compressed: corrupt archive or a zip bomb", path, name,
         st.size, st.comp_size);
  if (st.size > max_size)
    fail("{}: archive entry '{}' declares {} bytes; {} holds at most {} MiB", path, name, st.size, what, max_size >> 20);
  auto buf = std::make_shared<std::vector<uint8_t>>(size_t(st.size));
  zip_file_t* f = zip_fopen(z, name.c_str(), 0);
  if (!f) fail("{}: cannot open archive entry '{}': {}", path, name, zip_strerror(z));
  const zip_int64_t got = buf->empty() ? 0 : zip_fread(f, buf->data(), st.size);
  zip_fclose(f);
  if (got < 0 || zip_uint64_t(got) != st.size)
    fail("{}: archive entry '{}' is truncated or corrupt (read {} of {} bytes)", path, name, got, st.size);
  // libzip checks the CRC only on some paths; check it here so that flipped bits in a weights
  // file are an error, not silently different weights.
  const uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), buf->data(), buf->size());
  if (uint32_t(crc) != st.crc)
    fail("{}: archive entry '{}' fails its CRC-32 check (stored {:08x}, computed {:08x}): the file is corrupt", path,
         name, st.crc, uint32_t(crc));
  return buf;
}

DType storage_dtype(const std::string& cls, const std::string& path, const std::string& tensor) {
  static const std::map<std::string, DType> m = {
      {"FloatStorage", DType::F32}, {"HalfStorage", DType::F16},  {"BFloat16Storage", DType::BF16},
      {"DoubleStorage", DType::F64}, {"LongStorage", DType::I64}, {"IntStorage", DType::I32},
      {"ShortStorage", DType::I16},  {"CharStorage", DType::I8},  {"ByteStorage", DType::U8},
      {"BoolStorage", DType::BOOL}};
  auto it = m.find(cls);
  if (it == m.end()) fail("{}: tensor '{}' uses unsupported storage type '{}'", path, tensor, cls);
  return it->second;
}

}  // namespace

void load_torch_zip(const std::string& path, TensorStore& store) {
  if (!file_exists(path)) fail("{}: file not found", path);
  check_regular_file(path);
  {
    std::ifstream in(path, std::ios::binary);
    char magic[4] = {0, 0, 0, 0};
    in.read(magic, 4);
    if (in.gcount() >= 2 && uint8_t(magic[0]) == 0x80)
      fail("{}: legacy (pre-1.6, non-zip) PyTorch checkpoint format is not supported; re-save it with "
           "torch.save(torch.load(f), g) or convert it to safetensors",
           path);
    if (in.gcount() < 4 || std::memcmp(magic, "PK\x03\x04", 4) != 0)
      fail("{}: not a PyTorch zip checkpoint (bad magic bytes; truncated or not a .bin file?)", path);
  }
  int err = 0;
  Zip zip;
  zip.z = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (!zip.z) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string msg = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    fail("{}: corrupt or truncated zip archive: {}", path, msg);
  }
  // Find <root>/data.pkl.
  std::string root;
  const zip_int64_t n = zip_get_num_entries(zip.z, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    std::string name = zip_get_name(zip.z, zip_uint64_t(i), 0);
    const std::string suffix = "data.pkl";
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        std::count(name.begin(), name.end(), '/') <= 1) {
      root = name.substr(0, name.size() - suffix.size());
      break;
    }
  }
  if (root.empty() && zip_name_locate(zip.z, "data.pkl", 0) < 0)
    fail("{}: zip archive has no data.pkl (not a torch.save checkpoint)", path);
  auto pkl = read_entry(zip.z, root + "data.pkl", path, kMaxPickleBytes, "a state_dict's description (data.pkl)");
  torch_state_dict(pkl->data(), pkl->size(), path, path + ":" + root + "data.pkl",
                   [&](const std::string& key) { return read_entry(zip.z, root + "data/" + key, path); }, store);
}

void torch_state_dict(const uint8_t* pkl_data, size_t pkl_size, const std::string& path, const std::string& pkl_name,
                      const std::function<std::shared_ptr<std::vector<uint8_t>>(const std::string&)>& read_storage,
                      TensorStore& store) {
  const pickle::Pickle pk = pickle::load(pkl_data, pkl_size, pkl_name);
  pickle::Value obj = pk.root;
  // Some trainers wrap the state_dict: {"model": sd} or {"state_dict": sd}.
  if (obj->kind == pickle::Kind::Dict) {
    bool has_tensor = false;
    for (auto& kv : obj->dict) has_tensor |= kv.second->kind == pickle::Kind::Tensor;
    if (!has_tensor)
      for (auto& kv : obj->dict)
        if ((kv.first->s == "model" || kv.first->s == "state_dict") && kv.second->kind == pickle::Kind::Dict) {
          obj = kv.second;
          break;
        }
  }
  if (obj->kind != pickle::Kind::Dict) fail("{}: data.pkl does not hold a dict of tensors (a state_dict)", path);

  std::map<std::string, std::shared_ptr<std::vector<uint8_t>>> storages;
  for (auto& [k, v] : obj->dict) {
    if (k->kind != pickle::Kind::Str || v->kind != pickle::Kind::Tensor) continue;
    const std::string& name = k->s;
    const pickle::Value& st = v->items[0];
    RawTensor t;
    t.dtype = storage_dtype(st->s, path, name);
    t.shape = v->shape;
    const size_t es = dtype_size(t.dtype);
    auto& buf = storages[st->key];
    if (!buf) buf = read_storage(st->key);
    const int64_t storage_numel = int64_t(buf->size() / es);
    if (v->stride.size() != v->shape.size()) fail("{}: tensor '{}' has mismatched size and stride", path, name);
    // Extent of the view inside its storage, in overflow-checked arithmetic: sizes, strides and
    // the offset come from the file and may be anything.
    if (v->offset < 0) fail("{}: tensor '{}' has a negative storage offset {}", path, name, v->offset);
    int64_t count = 1, last = v->offset;
    bool contiguous = true;
    int64_t expect = 1;
    for (int i = int(v->shape.size()) - 1; i >= 0; --i) {
      const int64_t d = v->shape[size_t(i)], str = v->stride[size_t(i)];
      if (d < 0 || str < 0) fail("{}: tensor '{}' has a negative size or stride ({} / {})", path, name, d, str);
      int64_t span = 0;
      if (__builtin_mul_overflow(count, d, &count) || (d > 0 && (__builtin_mul_overflow(d - 1, str, &span) ||
                                                                 __builtin_add_overflow(last, span, &last))))
        fail("{}: tensor '{}' size {} / stride {} overflow 64-bit arithmetic", path, name, shape_str(v->shape),
             shape_str(v->stride));
      if (d != 1 && str != expect) contiguous = false;
      if (d > 0 && __builtin_mul_overflow(expect, d, &expect)) expect = INT64_MAX;
    }
    if (count > 0 && last >= storage_numel)
      fail("{}: tensor '{}' {} reaches element {} of its storage '{}', which holds only {} (truncated?)", path, name,
           shape_str(t.shape), last, st->key, storage_numel);
    // A view with more elements than its storage repeats elements (stride 0 or overlapping
    // strides): never in a state_dict, and materialising it could take unbounded memory.
    if (count > storage_numel)
      fail("{}: tensor '{}' {} has more elements than its storage '{}' ({}): overlapping strides", path, name,
           shape_str(t.shape), st->key, storage_numel);
    if (contiguous) {
      t.data = buf->data() + (count ? size_t(v->offset) * es : 0);
      t.owner = buf;
    } else {  // materialise a strided view
      auto out = std::make_shared<std::vector<uint8_t>>(t.nbytes());
      const int64_t total = numel(t.shape);
      std::vector<int64_t> idx(t.shape.size(), 0);
      for (int64_t e = 0; e < total; ++e) {
        int64_t src = v->offset;
        for (size_t d = 0; d < idx.size(); ++d) src += idx[d] * v->stride[d];
        std::memcpy(out->data() + size_t(e) * es, buf->data() + size_t(src) * es, es);
        for (int d = int(idx.size()) - 1; d >= 0; --d) {
          if (++idx[size_t(d)] < t.shape[size_t(d)]) break;
          idx[size_t(d)] = 0;
        }
      }
      t.data = out->data();
      t.owner = out;
    }
    if (!store.tensors.emplace(name, std::move(t)).second) fail("{}: tensor '{}' appears twice", path, name);
  }
}

}  // namespace mambaq
