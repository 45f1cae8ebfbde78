#include "mambaq/error.h"

namespace mambaq::detail {
void assert_fail(const char* cond, const char* file, int line) {
  throw Error(fmt::format("internal error: assertion '{}' failed at {}:{}", cond, file, line));
}
}  // namespace mambaq::detail
