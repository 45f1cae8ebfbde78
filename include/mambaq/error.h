// mambaq — error type shared by every layer.
// Every failure a user can cause (bad file, bad flag, bad shape) is reported as one
// mambaq::Error whose message names the file, tensor, field or flag involved.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace mambaq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// An error about one option of a library call; the message starts with the option's name (e.g.
// "w_bits 4: ..."), which front ends may replace with their own spelling (the CLI's --w-bits).
class OptionError : public Error {
 public:
  OptionError(std::string option, const std::string& msg) : Error(msg), option_(std::move(option)) {}
  const std::string& option() const { return option_; }

 private:
  std::string option_;
};

template <typename... Args>
[[noreturn]] void fail_option(const std::string& option, fmt::format_string<Args...> f, Args&&... args) {
  throw OptionError(option, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace mambaq

// Internal invariant (a bug in mambaq, not user input): shapes, indices.
#define MQ_ASSERT(cond)                                                              \
  do {                                                                               \
    if (!(cond)) ::mambaq::detail::assert_fail(#cond, __FILE__, __LINE__);           \
  } while (0)

namespace mambaq::detail {
[[noreturn]] void assert_fail(const char* cond, const char* file, int line);
}
