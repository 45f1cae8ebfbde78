#include "io/npz.h"

#include <zip.h>

#include <cstring>
#include <filesystem>

#include "mambaq/error.h"

namespace mambaq {

std::string npy_bytes(const std::vector<float>& v) {
  // magic, version 1.0, uint16 header length, header dict padded with spaces and ended by '\n'
  // so that the data starts at a multiple of 64 bytes.
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(v.size()) + ",), }";
  const size_t pre = 10;
  size_t total = pre + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(char(dict.size() & 0xff));
  out.push_back(char(dict.size() >> 8));
  out += dict;
  const size_t off = out.size();
  out.resize(off + v.size() * 4);
  std::memcpy(out.data() + off, v.data(), v.size() * 4);  // x86-64 is little-endian
  return out;
}

void save_npz(const std::string& path, const std::map<std::string, std::vector<float>>& arrays) {
  std::filesystem::remove(path);
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (!z) fail("{}: cannot create .npz (libzip error {})", path, err);
  std::vector<std::string> bufs;  // libzip reads sources at zip_close
  bufs.reserve(arrays.size());
  for (const auto& [k, v] : arrays) {
    bufs.push_back(npy_bytes(v));
    zip_source_t* src = zip_source_buffer(z, bufs.back().data(), bufs.back().size(), 0);
    if (!src) fail("{}: cannot add '{}'", path, k);
    const zip_int64_t idx = zip_file_add(z, (k + ".npy").c_str(), src, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE);
    if (idx < 0) {
      zip_source_free(src);
      fail("{}: cannot add '{}': {}", path, k, zip_strerror(z));
    }
    zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_STORE, 0);
  }
  if (zip_close(z) != 0) {
    const std::string msg = zip_strerror(z);
    zip_discard(z);
    fail("{}: write failed: {}", path, msg);
  }
}

}  // namespace mambaq
