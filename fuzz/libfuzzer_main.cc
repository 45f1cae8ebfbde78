// libFuzzer entry point of one target (the build defines MAMBAQ_FUZZ_TARGET, e.g. "pickle").
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mambaq::fuzz::Target* t = mambaq::fuzz::find_target(MAMBAQ_FUZZ_TARGET);
  mambaq::fuzz::run_one(*t, data, size);
  return 0;
}
