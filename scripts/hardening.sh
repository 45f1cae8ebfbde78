#!/usr/bin/env bash
# The robustness checks: the unit tests under AddressSanitizer + UBSan, then every fuzz target
# for SECONDS each (libFuzzer, clang, also under both sanitizers).
#   bash scripts/hardening.sh [SECONDS_PER_FUZZ_TARGET (default 600)] [ctest arguments for the sanitizer run]
# CI runs it with a few seconds per target and the quicker tests; by hand, give it 600 or more.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}; shift || true
bash scripts/sanitize.sh "$@"
bash scripts/fuzz.sh "$secs"
