#pragma once
// A model folder that mambaq writes, kept whole (docs/robustness.md): a save id binding config.json
// to the weights, a journal for in-place edits, and an advisory lock for writers.
#include <string>

namespace mambaq {

// The safetensors metadata key holding the save id (config.json: quantization.save_id).
inline constexpr const char* kSaveIdKey = "mambaq_save_id";
// Written before an in-place edit patches the weights, removed once config.json records it.
inline constexpr const char* kPendingEditFile = ".mambaq-edit-pending.json";
inline constexpr const char* kLockFile = ".mambaq.lock";

// 32 hex characters from the system's random source (fixed length: an in-place edit replaces one id
// by another in the safetensors header without moving a byte of the data).
std::string new_save_id();

// mambaq's own bookkeeping files of a folder (".mambaq*"): never copied with the model.
bool is_folder_bookkeeping(const std::string& filename);

// Refuses a folder whose in-place edit was interrupted, naming the command that recovers it.
void check_no_pending_edit(const std::string& dir);

// An exclusive advisory lock (flock) on DIR/.mambaq.lock for the life of the object: a second
// writer of the same folder says it waits on stderr, then waits; it never interleaves.
class FolderLock {
 public:
  explicit FolderLock(const std::string& dir);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace mambaq
