#!/usr/bin/env bash
# Fuzz every input parser with libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET ...]
#   bash scripts/fuzz.sh --build-only        # the build alone (scripts/hardening.sh runs its tests)
# Builds build-fuzz/ with clang (the unit tests too: the sanitizer run of hardening.sh uses them), writes the seed corpus (fuzz/seeds.cc), and runs each target
# for the given time on its growing corpus build-fuzz/corpus/<target>. A crash, sanitizer report,
# leak, hang (>10 s) or memory blow-up (>2 GB) stops the run and leaves the input in
# tests/fuzz/<target>/: fix the defect and keep the input, CTest replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
B=build-fuzz
if [ -f $B/CMakeCache.txt ] && grep -q '^MAMBAQ_BUILD_TESTS:BOOL=OFF' $B/CMakeCache.txt; then
  rm -rf $B  # an older build-fuzz without the unit tests
fi
if [ ! -f $B/CMakeCache.txt ]; then
  CC=clang CXX=clang++ cmake -S . -B $B -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAMBAQ_FUZZ=ON -DMAMBAQ_SANITIZE=ON -DMAMBAQ_CUDA=OFF \
    -DMAMBAQ_BUILD_TESTS=ON -DMAMBAQ_BUILD_BENCH=OFF \
    -DOpenMP_CXX_FLAGS=-fopenmp=libgomp -DOpenMP_CXX_LIB_NAMES=gomp \
    -DOpenMP_gomp_LIBRARY="$(g++ -print-file-name=libgomp.so)" >/dev/null
fi
cmake --build $B -j"$(nproc)" >/dev/null
[ "$secs" = "--build-only" ] && exit 0
targets=("$@"); [ ${#targets[@]} -gt 0 ] || mapfile -t targets < <($B/fuzz/mambaq_fuzz list | cut -f1)
$B/fuzz/mambaq_fuzz seeds $B/seeds
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1
summary=(); rc=0
for t in "${targets[@]}"; do
  mkdir -p $B/corpus/$t tests/fuzz/$t
  log=$B/fuzz-$t.log
  echo "== fuzz $t for ${secs}s"
  if $B/fuzz/fuzz_$t $B/corpus/$t $B/seeds/$t tests/fuzz/$t -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
       -malloc_limit_mb=2048 -max_len=65536 -artifact_prefix=tests/fuzz/$t/ -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED; rc=1; tail -n 40 "$log"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  summary+=("$(printf '%-16s %-7s %10s execs  corpus %5s files' "$t" "$status" "$execs" "$(ls $B/corpus/$t | wc -l)")")
done
printf '%s\n' "${summary[@]}"
exit $rc
