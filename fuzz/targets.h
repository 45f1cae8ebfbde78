// Fuzz targets: one per input parser mambaq reads. Each takes arbitrary bytes and must either
// succeed or throw mambaq::Error (the one-line, file-naming error users see). Anything else —
// another exception type (a bare library message), a crash, a sanitizer report, a hang, a
// non-finite result presented as valid — is a defect the fuzzers report.
//
// The same functions serve libFuzzer (clang, fuzz/libfuzzer_main.cc, one binary per target)
// and the replay tool (any compiler, fuzz/replay.cc) that CTest runs over the seed corpus and
// the kept regression inputs in tests/fuzz/.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mambaq::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);

struct Target {
  const char* name;
  TargetFn fn;
  const char* what;
};

const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

// Runs one input: returns true when the target succeeded, false when it threw mambaq::Error
// (the message goes to `error` when given); aborts (after printing the exception) on any other
// exception, so both drivers report it.
bool run_one(const Target& t, const uint8_t* data, size_t size, std::string* error);
inline void run_one(const Target& t, const uint8_t* data, size_t size) { run_one(t, data, size, nullptr); }

// Writes the seed corpus of every target under dir/<target>/ (small files built from the
// bundled tokenizer, configs and data, and tiny models saved in each format).
void write_seeds(const std::string& dir, const std::string& source_dir);

}  // namespace mambaq::fuzz
