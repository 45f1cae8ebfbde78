#!/usr/bin/env bash
# int8 vs fp32 end to end (BENCHMARKS.md): synthetic mamba-130m and mamba-1.4b shapes, both modes
# in one run each (fp32 first; the FP weights are freed before int8 runs, and each mode's peak
# RSS is its own), then the time `mambaq quantize` takes on mamba-tiny (3 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/mambaq
OUT=${1:-/tmp/mambaq-bench-int8}
mkdir -p "$OUT"
for M in mamba-130m mamba-1.4b; do
  $BIN bench --synthetic "$M" --modes fp32,int8 --prompt-len 1024 --decode 128 --repeats 3 --json "$OUT/$M.json"
done
for i in 1 2 3; do
  /usr/bin/time -f "quantize mamba-tiny: %e s, peak %M KiB" \
    $BIN quantize models/mamba-tiny -o "$OUT/q-tiny" --force --no-log -q
done
