#include "io/npz.h"

#include <zip.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/mmap_file.h"
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
  write_file_atomic(path, npy_bytes(v, std::move(shape)));
}

// Parses .npy bytes (version 1.0, '<f4', C order); `source` names the file or member in errors.
static std::vector<float> parse_npy(const std::string& b, const std::string& source, std::vector<size_t>* shape) {
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0 || b[6] != 1)
    fail("{}: not a version 1.0 .npy array", source);
  const size_t hlen = size_t(uint8_t(b[8])) | (size_t(uint8_t(b[9])) << 8);
  if (b.size() < 10 + hlen) fail("{}: truncated .npy header", source);
  const std::string h = b.substr(10, hlen);
  if (h.find("'descr': '<f4'") == std::string::npos || h.find("'fortran_order': False") == std::string::npos)
    fail("{}: only little-endian float32 C-order .npy arrays are read", source);
  const size_t a = h.find("'shape': ("), e = h.find(')', a);
  if (a == std::string::npos || e == std::string::npos) fail("{}: .npy header has no shape", source);
  std::vector<size_t> dims;
  size_t count = 1;
  std::stringstream ss(h.substr(a + 10, e - a - 10));
  for (std::string t; std::getline(ss, t, ',');) {
    const size_t f = t.find_first_not_of(' '), l = t.find_last_not_of(' ');
    if (f == std::string::npos) continue;
    const std::string num = t.substr(f, l - f + 1);
    if (num.empty() || num.size() > 15 || num.find_first_not_of("0123456789") != std::string::npos)
      fail("{}: .npy shape entry '{}' is not a dimension", source, num);
    dims.push_back(std::stoul(num));
    if (__builtin_mul_overflow(count, dims.back(), &count) || count > (size_t(1) << 40))
      fail("{}: .npy shape is too large", source);
  }
  if ((b.size() - 10 - hlen) / 4 < count) fail("{}: truncated .npy data", source);
  std::vector<float> v(count);
  if (count) std::memcpy(v.data(), b.data() + 10 + hlen, count * 4);
  if (shape) *shape = dims;
  return v;
}

std::vector<float> load_npy(const std::string& path, std::vector<size_t>* shape) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_npy(ss.str(), path, shape);
}

std::map<std::string, std::vector<float>> load_npz(const std::string& path) {
  if (!file_exists(path)) fail("{}: file not found", path);
  check_regular_file(path);
  const uint64_t file_size = std::filesystem::file_size(path);
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (!z) fail("{}: cannot open as .npz (zip error {})", path, err);
  std::map<std::string, std::vector<float>> out;
  try {
    for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0); ++i) {
      zip_stat_t st;
      if (zip_stat_index(z, zip_uint64_t(i), 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE))
        fail("{}: corrupt .npz (member {} unreadable)", path, i);
      // The declared size is allocated before reading: bound it (deflate expands at most 1032:1).
      if (st.size / 1032 > file_size) fail("{}: member '{}' declares {} bytes: corrupt archive or a zip bomb", path, st.name, st.size);
      std::string name = st.name, buf(st.size, '\0');
      zip_file_t* f = zip_fopen_index(z, zip_uint64_t(i), 0);
      const bool ok = f && zip_fread(f, buf.data(), st.size) == zip_int64_t(st.size);
      if (f) zip_fclose(f);
      if (!ok) fail("{}: cannot read member '{}'", path, name);
      std::vector<float> v = parse_npy(buf, path + ": member '" + name + "'", nullptr);
      if (name.ends_with(".npy")) name.resize(name.size() - 4);
      out[name] = std::move(v);
    }
  } catch (...) {
    zip_close(z);
    throw;
  }
  zip_close(z);
  return out;
}

void save_npz(const std::string& path, const std::map<std::string, std::vector<float>>& arrays) {
  // libzip writes the archive under a new name in the same folder, renamed over `path` only when
  // complete (as AtomicWriter does: a link at `path` is replaced, not written through)
  if (std::filesystem::is_directory(path)) fail("{}: is a folder, not a file", path);
  const std::filesystem::path p(path);
  const std::string tmp = (p.has_parent_path() ? p.parent_path().string() : std::string(".")) + "/." +
                          p.filename().string() + ".mambaq-tmp-" + std::to_string(::getpid());
  struct Unlink {
    const std::string& f;
    bool keep = false;
    ~Unlink() {
      if (!keep) ::unlink(f.c_str());
    }
  } cleanup{tmp};
  int err = 0;
  zip_t* z = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
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
    // deflated, as numpy.savez_compressed writes (numpy.load reads both)
    zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_DEFLATE, 6);
  }
  if (zip_close(z) != 0) {
    const std::string msg = zip_strerror(z);
    zip_discard(z);
    fail("{}: write failed: {}", path, msg);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("{}: cannot replace: {}", path, std::strerror(errno));
  cleanup.keep = true;
  atomic_commit_hook();
}

}  // namespace mambaq
