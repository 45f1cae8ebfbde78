#include "io/mmap_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>
#include <sstream>

#include "mambaq/error.h"

namespace mambaq {

namespace {
std::string parent_of(const std::string& path) {
  const std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}
}  // namespace

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

void write_text_file(const std::string& path, const std::string& text) { write_file_atomic(path, text); }

AtomicWriter::AtomicWriter(std::string path) : path_(std::move(path)) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) fail("{}: is a folder, not a file", path_);
  const std::filesystem::path p(path_);
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  tmp_ = dir + "/." + p.filename().string() + ".mambaq-tmp-XXXXXX";
  std::vector<char> name(tmp_.begin(), tmp_.end());
  name.push_back('\0');
  fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd_ < 0) fail("{}: cannot create a file in '{}': {}", path_, dir, std::strerror(errno));
  tmp_ = name.data();
  ::fchmod(fd_, 0644);
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!done_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicWriter::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("{}: write failed: {}", path_, std::strerror(w < 0 ? errno : ENOSPC));
    p += w, n -= size_t(w);
  }
}

void AtomicWriter::copy_from(const std::string& src) {
  const int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) fail("{}: cannot open for reading: {}", src, std::strerror(errno));
  struct stat st {};
  if (::fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(in);
    fail("{}: not a regular file", src);
  }
  // in the kernel (no copy through user space; a reflink where the filesystem has them)
  off_t left = st.st_size;
  while (left > 0) {
    const ssize_t k = ::copy_file_range(in, nullptr, fd_, nullptr, size_t(left), 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;  // not supported here (or a short file): the rest by read and write
    left -= k;
  }
  std::vector<char> buf(left > 0 ? size_t(1) << 20 : 0);
  while (left > 0) {
    const ssize_t r = ::read(in, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(in);
      fail("{}: read failed while copying to {}: {}", src, path_, r < 0 ? std::strerror(errno) : "the file shrank");
    }
    write(buf.data(), size_t(r));
    left -= r;
  }
  ::close(in);
}

void AtomicWriter::commit() {
  if (::fsync(fd_) != 0) fail("{}: write failed (fsync): {}", path_, std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("{}: write failed (close): {}", path_, std::strerror(errno));
  }
  fd_ = -1;
  // rename() replaces a link at path_ itself; it never opens what the link points to
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("{}: cannot replace: {}", path_, std::strerror(errno));
  done_ = true;
  sync_to_disk(parent_of(path_));  // the rename itself on disk
  atomic_commit_hook();
}

void sync_to_disk(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicWriter w(path);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

void remove_file_durably(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("{}: cannot remove: {}", path, std::strerror(errno));
  sync_to_disk(parent_of(path));
  atomic_commit_hook();
}

void atomic_commit_hook() {
  static const long kill_after = [] {
    const char* e = std::getenv("MAMBAQ_TEST_KILL_AFTER_COMMITS");
    return e ? std::strtol(e, nullptr, 10) : 0L;
  }();
  static long commits = 0;
  if (kill_after > 0 && ++commits == kill_after) ::_exit(99);
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

void check_append_file(const std::string& path, const std::string& flag) {
  check_output_file(path, flag);
  if (path.empty() || path == "-") return;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;  // made when first appended to
  if (S_ISLNK(st.st_mode)) fail("{}: '{}' is a link; mambaq appends only to a regular file, not through a link", flag, path);
  if (!S_ISREG(st.st_mode))
    fail("{}: '{}' is not a regular file ({}); mambaq appends only to a regular file", flag, path,
         S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
}

void check_new_output_file(const std::string& path, const std::string& flag, bool force) {
  check_output_file(path, flag);
  if (path.empty() || path == "-" || force) return;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0)
    fail("{}: '{}' already exists (add --force to replace it)", flag, path);
}

void check_new_output_dir(const std::string& path, const std::string& flag, bool force) {
  check_output_dir(path, flag);
  if (force || !std::filesystem::is_directory(path)) return;
  if (!std::filesystem::is_empty(path))
    fail("{}: folder '{}' is not empty (its results would be replaced: add --force, or give a new folder)", flag, path);
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
