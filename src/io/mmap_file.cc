#include "io/mmap_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>
#include <sstream>

#include "mambaq/error.h"

namespace mambaq {

void check_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  // A FIFO or a device would block or never end; a folder cannot be read as a file.
  if (!S_ISREG(st.st_mode))
    fail("{}: not a regular file ({})", path, S_ISDIR(st.st_mode) ? "a folder" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  check_regular_file(path);
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  auto f = std::shared_ptr<MappedFile>(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail("{}: mmap failed: {}", path, std::strerror(errno));
    }
    f->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail("{}: cannot write: {}", path, std::strerror(errno));
  f.write(text.data(), std::streamsize(text.size()));
  if (!f.flush()) fail("{}: write failed", path);
}

std::string read_text_file(const std::string& path) {
  if (!file_exists(path)) fail("{}: file not found", path);
  check_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  if (size < 0) fail("{}: cannot read", path);
  if (uint64_t(size) > kMaxTextFile) fail("{}: {} bytes is larger than any text input mambaq reads ({} bytes at most)", path, uint64_t(size), kMaxTextFile);
  in.seekg(0);
  std::string s(size_t(size), '\0');
  in.read(s.data(), size);
  if (in.gcount() != size) fail("{}: read failed (file changed while reading?)", path);
  return s;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace mambaq

namespace mambaq {

namespace {
std::string parent_of(const std::string& path) {
  const std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}
}  // namespace

void check_output_file(const std::string& path, const std::string& flag) {
  if (path.empty() || path == "-") return;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail("{}: '{}' is a folder, not a file", flag, path);
    if (::access(path.c_str(), W_OK) != 0) fail("{}: cannot write '{}': {}", flag, path, std::strerror(errno));
    return;
  }
  const std::string dir = parent_of(path);
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    fail("{}: cannot write '{}': folder '{}' does not exist", flag, path, dir);
  if (::access(dir.c_str(), W_OK | X_OK) != 0) fail("{}: cannot write '{}' in '{}': {}", flag, path, dir, std::strerror(errno));
}

void check_output_dir(const std::string& path, const std::string& flag) {
  if (path.empty()) fail("{}: empty folder name", flag);
  std::string p = path;
  struct stat st {};
  if (::stat(p.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) fail("{}: '{}' exists and is not a folder", flag, path);
    if (::access(p.c_str(), W_OK | X_OK) != 0) fail("{}: cannot write into '{}': {}", flag, path, std::strerror(errno));
    return;
  }
  // The nearest existing ancestor must be a writable folder (the rest is created).
  while (true) {
    p = parent_of(p);
    if (::stat(p.c_str(), &st) == 0) break;
    if (p == "." || p == "/") fail("{}: cannot create '{}'", flag, path);
  }
  if (!S_ISDIR(st.st_mode)) fail("{}: cannot create '{}': '{}' is not a folder", flag, path, p);
  if (::access(p.c_str(), W_OK | X_OK) != 0) fail("{}: cannot create '{}' under '{}': {}", flag, path, p, std::strerror(errno));
}

// SHA-256 through OpenSSL's libcrypto (Debian-packaged, and already a dependency).
namespace {
// OpenSSL's SHA-256 over chunks handed by `feed` (which calls the updater until it returns).
template <class Feed>
std::string sha256_hex(Feed&& feed) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  feed([&](const char* p, size_t n) { EVP_DigestUpdate(ctx, p, n); });
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}
}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  return sha256_hex([&](auto&& update) {
    std::vector<char> buf(1 << 20);
    while (in) {
      in.read(buf.data(), std::streamsize(buf.size()));
      update(buf.data(), size_t(in.gcount()));
    }
  });
}

std::string sha256_string(const std::string& bytes) {
  return sha256_hex([&](auto&& update) { update(bytes.data(), bytes.size()); });
}

}  // namespace mambaq
