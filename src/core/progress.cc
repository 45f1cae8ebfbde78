#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fmt/format.h>

#include "mambaq/progress.h"

namespace mambaq {

static double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(2)), start_(now_s()) {}

Progress::~Progress() {
  if (!finished_) finish();
}

void Progress::add(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  const double t = now_s();
  if (tty_) {
    if (t - last_ > 0.1) {
      last_ = t;
      draw(false);
    }
  } else {
    const int dec = total_ > 0 ? int(10 * done_ / total_) : 0;
    if (dec != last_decile_ && dec < 10) {
      last_decile_ = dec;
      draw(false);
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

void Progress::draw(bool final) {
  const double el = now_s() - start_;
  const double frac = total_ > 0 ? double(done_) / double(total_) : 1.0;
  const int width = 30, fill = int(frac * width + 0.5);
  const double eta = frac > 0 ? el / frac - el : 0;
  std::string bar(size_t(fill), '#');
  bar.resize(size_t(width), '.');
  std::string line = fmt::format("{:<16} [{}] {:3.0f}% {}/{} {:.1f}s", label_, bar, 100 * frac, done_, total_, el);
  if (!final) line += fmt::format(" eta {:.0f}s", eta);
  if (tty_)
    fmt::print(stderr, "\r{}\033[K{}", line, final ? "\n" : "");
  else
    fmt::print(stderr, "{}\n", line);
  std::fflush(stderr);
}

}  // namespace mambaq
