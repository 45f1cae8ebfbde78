#!/usr/bin/env bash
# Build everything with AddressSanitizer + UndefinedBehaviorSanitizer (g++) into build-asan/ and
# run the test suite there; any sanitizer report fails the test that triggered it.
#   bash scripts/sanitize.sh                 # the whole suite (slow: ~3x the normal run)
#   bash scripts/sanitize.sh -E 'Reference'  # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
B=build-asan
cmake -S . -B $B -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAMBAQ_SANITIZE=ON -DMAMBAQ_BUILD_BENCH=OFF -DMAMBAQ_CUDA=OFF >/dev/null
cmake --build $B -j"$(nproc)"
# detect_leaks: every test binary must free what it allocates; abort_on_error gives a core-free
# non-zero exit that CTest reports as a failure.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd $B && ctest --output-on-failure -j"$(nproc)" "$@"
