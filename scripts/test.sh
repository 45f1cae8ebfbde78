#!/usr/bin/env bash
# Build (incrementally) and run the whole test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd build && ctest --output-on-failure -j1 "$@"
