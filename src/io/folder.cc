#include "io/folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <random>

#include "io/json_file.h"
#include "mambaq/error.h"

namespace mambaq {

std::string new_save_id() {
  std::random_device rd;  // the system's random source: two saves never share an id
  std::string id;
  for (int i = 0; i < 4; ++i) id += fmt::format("{:08x}", uint32_t(rd()));
  return id;
}

bool is_folder_bookkeeping(const std::string& filename) { return filename.rfind(".mambaq", 0) == 0; }

void check_no_pending_edit(const std::string& dir) {
  const std::string p = (std::filesystem::path(dir) / kPendingEditFile).string();
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) return;
  std::string what;
  try {
    const auto j = read_json_file(p);
    what = fmt::format(" ({}, started {})", j.value("rule", "?"), j.value("time", "?"));
  } catch (const Error&) {
  }
  fail("{}: an in-place scale edit of this folder was interrupted{}; `mambaq scales set {} --recover` puts it "
       "back in order", dir, what, dir);
}

FolderLock::FolderLock(const std::string& dir) {
  const std::string p = (std::filesystem::path(dir) / kLockFile).string();
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) fail("{}: cannot open the folder's lock file: {}", p, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  if (errno != EWOULDBLOCK) fail("{}: cannot lock: {}", p, std::strerror(errno));
  fmt::print(stderr, "waiting: another mambaq is writing {}\n", dir);
  while (::flock(fd_, LOCK_EX) != 0)
    if (errno != EINTR) fail("{}: cannot lock: {}", p, std::strerror(errno));
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

}  // namespace mambaq
