#!/usr/bin/env bash
# The robustness checks, from one clang build with AddressSanitizer + UndefinedBehaviorSanitizer and
# libFuzzer's coverage (build-fuzz/): the unit tests under both sanitizers, then every fuzz target
# for SECONDS each (scripts/fuzz.sh, on the same build).
#   bash scripts/hardening.sh [SECONDS_PER_FUZZ_TARGET (default 600)] [--all] [ctest arguments]
# By default the sanitizer run leaves out the model-heavy tests of tests/sanitizer-skip.txt (minutes
# each under the sanitizers); --all runs every test. CI runs it with a few seconds per target.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}; shift || true
all=0
if [ "${1:-}" = "--all" ]; then all=1; shift; fi
B=build-fuzz
bash scripts/fuzz.sh --build-only
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
skip=()
if [ $all = 0 ]; then
  skip=(-E "$(grep -v -e '^#' -e '^$' tests/sanitizer-skip.txt | sed 's/\./\\./' | paste -sd'|')")
fi
(cd $B && ctest --output-on-failure -j"$(nproc)" "${skip[@]}" "$@")
bash scripts/fuzz.sh "$secs"
