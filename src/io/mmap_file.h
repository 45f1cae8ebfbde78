#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace mambaq {

// A read-only memory map of a whole file; errors name the file.
class MappedFile {
 public:
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Refuses what is not a regular file (a FIFO would hang the reader, a device never end).
void check_regular_file(const std::string& path);
// A whole text file (regular, at most kMaxTextFile bytes); errors name the file.
constexpr uint64_t kMaxTextFile = uint64_t(4) << 30;
std::string read_text_file(const std::string& path);
// Writes (replaces) a whole text file atomically (write_file_atomic); errors name the file.
void write_text_file(const std::string& path, const std::string& text);

// How every file mambaq writes for a user is written (docs/robustness.md): into a new temporary
// file in the same folder (created exclusively), flushed to disk, then rename()d over `path`. So a
// reader sees the old file or the new one, never half of one; a kill leaves at most a
// `.NAME.mambaq-tmp-*` beside it; and a symbolic or hard link at `path` is replaced by the new
// file instead of being written through (the file it pointed to, and any other name of it, keep
// their bytes). Errors name the file; on any failure the temporary is removed and `path` is as it
// was.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path);
  ~AtomicWriter();  // not committed (an error on the way): the temporary is removed
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  void write(const void* data, size_t n);
  void copy_from(const std::string& src);  // append the bytes of file `src` (copied in the kernel)
  void commit();  // fsync, rename over `path`, fsync the folder
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool done_ = false;
};
void write_file_atomic(const std::string& path, const std::string& bytes);

// Test hook (docs/robustness.md): when $MAMBAQ_TEST_KILL_AFTER_COMMITS is N > 0, the process
// _exit(99)s right after its N-th committed file, as a kill between two files of one save would.
void atomic_commit_hook();

// fsync a file or a folder by name (best effort: a path that cannot be opened is skipped).
void sync_to_disk(const std::string& path);

// Remove a file and make the removal durable (the folder synced); one commit of the hook above.
void remove_file_durably(const std::string& path);
bool file_exists(const std::string& path);

// Output paths are checked before long work starts, so a typo does not cost an hour of
// calibration: `flag` names the option in errors. A file ("-" is stdout) must be creatable or
// writable and not a folder; a folder must exist and be writable, or be creatable under a
// writable existing ancestor.
void check_output_file(const std::string& path, const std::string& flag);
void check_output_dir(const std::string& path, const std::string& flag);
// A file appended to (the experiment log): check_output_file, and an existing link or a file that
// is not regular (a FIFO would block the append after the work is done) is refused.
void check_append_file(const std::string& path, const std::string& flag);
// The one overwrite rule, for results a user keeps (--json, --output-path, --save-activations,
// report -o, ...): check_output_file, and an existing file (or link) is refused unless `force`,
// with one message naming the flag and --force. "-" (stdout) and "" pass.
void check_new_output_file(const std::string& path, const std::string& flag, bool force);
// The same for a folder that results are written into: an existing non-empty folder is refused
// unless `force`.
void check_new_output_dir(const std::string& path, const std::string& flag, bool force);

// Hex SHA-256 of a file's bytes (errors name the file).
std::string sha256_file(const std::string& path);
// Hex SHA-256 of a byte string.
std::string sha256_string(const std::string& bytes);

}  // namespace mambaq
