#!/usr/bin/env bash
# On a GPU machine: the cuda backend's tests and a short benchmark, one table last.
# Uses build/ (or BIN_DIR, e.g. a carried .gpu/ with mambaq, mambaq_tests and lib.tgz of the
# Debian libraries they link, where the machine has no Debian packages to build with).
#   bash scripts/gpu-check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu-check}}; mkdir -p "$out"
bin=${BIN_DIR:-build}; tests=$bin/mambaq_tests; [ -x "$tests" ] || tests=$bin/tests/mambaq_tests
if [ -f "$bin/lib.tgz" ]; then mkdir -p /tmp/gpu-libs && tar xzf "$bin/lib.tgz" -C /tmp/gpu-libs; export LD_LIBRARY_PATH=/tmp/gpu-libs/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}; fi
nvidia-smi -L | tee "$out/gpu.txt"
"$tests" --gtest_filter='Backends/*:Shapes/*:Groups/*:Backends.*:CheckedBackend.*:StateKernels.*' > "$out/tests.txt" 2>&1
trc=$?
passed=$(grep -c '^\[       OK \]' "$out/tests.txt"); skipped=$(grep -c '^\[  SKIPPED \] .*ms)' "$out/tests.txt"); failed=$(grep -c '^\[  FAILED  \] .*ms)' "$out/tests.txt")
rows=""
for dt in fp32 bf16; do
  for m in mamba-130m mamba2-130m mamba-1.4b mamba2-1.3b; do
    "$bin/mambaq" bench --synthetic $m --backend cuda --dtype $dt --prompt-len 1024 --decode 128 --repeats 3 --no-bandwidth --json "$out/bench-$m-$dt.json" > "$out/bench-$m-$dt.txt" 2>&1
    rows+=$(python3 -c "import json;j=json.load(open('$out/bench-$m-$dt.json'));print(f\"| $m | $dt | {j['prefill_tok_s']:.0f} | {j['decode_tok_s']:.1f} | {j['weight_bytes_per_token']/2**20:.0f} |\")" 2>/dev/null || echo "| $m | $dt | failed | | |")$'\n'
  done
done
echo
echo "gpu tests: $passed passed, $skipped skipped (declined by supports), $failed failed (exit $trc)"
echo "| shape (batch 1, cuda) | weights | prefill 1024 (t/s) | decode (t/s) | weights read per token (MiB) |"
echo "|---|---|---|---|---|"
printf "%s" "$rows"
exit $trc
