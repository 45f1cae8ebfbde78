#include "io/npz.h"

#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambaq/error.h"

namespace mambaq {

std::string npy_bytes(const std::vector<float>& v, std::vector<size_t> shape) {
  if (shape.empty()) shape = {v.size()};
  size_t count = 1;
  std::string sh;
  for (size_t d : shape) {
    count *= d;
    sh += std::to_string(d) + ",";
  }
  if (count != v.size()) fail("internal error: .npy shape does not match {} values", v.size());
  if (shape.size() > 1) sh.pop_back();  // (n,) for 1-D, (a,b) otherwise
  // magic, version 1.0, uint16 header length, header dict padded with spaces and ended by '\n'
  // so that the data starts at a multiple of 64 bytes.
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + sh + "), }";
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

void save_npy(const std::string& path, const std::vector<float>& v, std::vector<size_t> shape) {
  const std::string b = npy_bytes(v, std::move(shape));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("{}: cannot create file", path);
  out.write(b.data(), std::streamsize(b.size()));
  if (!out) fail("{}: write failed", path);
}

std::vector<float> load_npy(const std::string& path, std::vector<size_t>* shape) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  char pre[10];
  if (!in.read(pre, 10) || std::string(pre, 6) != std::string("\x93NUMPY", 6) || pre[6] != 1)
    fail("{}: not a version 1.0 .npy file", path);
  const size_t hlen = size_t(uint8_t(pre[8])) | (size_t(uint8_t(pre[9])) << 8);
  std::string h(hlen, '\0');
  if (!in.read(h.data(), std::streamsize(hlen))) fail("{}: truncated .npy header", path);
  if (h.find("'descr': '<f4'") == std::string::npos || h.find("'fortran_order': False") == std::string::npos)
    fail("{}: only little-endian float32 C-order .npy files are read", path);
  const size_t a = h.find("'shape': ("), b = h.find(')', a);
  if (a == std::string::npos || b == std::string::npos) fail("{}: .npy header has no shape", path);
  std::vector<size_t> dims;
  size_t count = 1;
  std::stringstream ss(h.substr(a + 10, b - a - 10));
  for (std::string t; std::getline(ss, t, ',');)
    if (t.find_first_not_of(' ') != std::string::npos) {
      dims.push_back(std::stoul(t));
      count *= dims.back();
    }
  std::vector<float> v(count);
  if (!in.read(reinterpret_cast<char*>(v.data()), std::streamsize(count * 4))) fail("{}: truncated .npy data", path);
  if (shape) *shape = dims;
  return v;
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
