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

std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);

}  // namespace mambaq
