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
// Writes (replaces) a whole text file; errors name the file.
void write_text_file(const std::string& path, const std::string& text);
bool file_exists(const std::string& path);

// Output paths are checked before long work starts, so a typo does not cost an hour of
// calibration: `flag` names the option in errors. A file ("-" is stdout) must be creatable or
// writable and not a folder; a folder must exist and be writable, or be creatable under a
// writable existing ancestor.
void check_output_file(const std::string& path, const std::string& flag);
void check_output_dir(const std::string& path, const std::string& flag);

// Hex SHA-256 of a file's bytes (errors name the file).
std::string sha256_file(const std::string& path);
// Hex SHA-256 of a byte string.
std::string sha256_string(const std::string& bytes);

}  // namespace mambaq
