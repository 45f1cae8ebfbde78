// A progress bar on stderr for long work (core/progress.cc).
#pragma once
#include <cstdint>
#include <string>

namespace mambaq {

// A progress bar on stderr: redrawn in place on a terminal, a few plain lines otherwise.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  ~Progress();
  void add(int64_t n);
  void finish();

 private:
  std::string label_;
  int64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  double start_, last_ = 0;
  int last_decile_ = -1;
  void draw(bool final);
};

}  // namespace mambaq
