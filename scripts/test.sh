#!/usr/bin/env bash
# Build (if needed) and run the whole test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/mambaq ] && [ -x build/tests/mambaq_tests ] || scripts/build.sh
scripts/build.sh
cd build && ctest --output-on-failure -j1 "$@"
