#pragma once
namespace mambaq {
const char* version();        // e.g. "0.1.0"
const char* git_describe();   // `git describe --always --dirty --tags` at configure time
}  // namespace mambaq
