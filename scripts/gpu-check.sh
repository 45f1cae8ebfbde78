#!/usr/bin/env bash
# On a GPU machine: the cuda backend's tests, the agreement checks on the bundled fixtures that are
# present, a short benchmark and a per-op GPU time profile; one table last.
# Uses build/ (or BIN_DIR, e.g. a carried .gpu/ with mambaq, mambaq_tests and lib.tgz / lib.txz of
# the Debian libraries they link, where the machine has no Debian packages to build with).
#   bash scripts/gpu-check.sh [OUT_DIR]
# GPU_CHECK_FP32 / _SHAPES / _BIG (bf16) / _BATCH / _PDL / _PROFILE / _LAMBADA choose the shapes (set empty: none);
# GPU_CHECK_NCU_DECODE (default none) the shapes whose decode kernels ncu times one by one.
set -uo pipefail
cd "$(dirname "$0")/.."
final=${1:-${OUT:-/tmp/gpu-check}}; out=$final/d; mkdir -p "$out"  # every file in d/, packed at the end
bin=${BIN_DIR:-build}; tests=$bin/mambaq_tests; [ -x "$tests" ] || tests=$bin/tests/mambaq_tests
for a in "$bin/lib.tgz" "$bin/lib.txz"; do
  if [ -f "$a" ]; then mkdir -p /tmp/gpu-libs && tar xf "$a" -C /tmp/gpu-libs; export LD_LIBRARY_PATH=/tmp/gpu-libs/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}; fi
done
nvidia-smi -L | tee "$out/gpu.txt"
t0=$(date +%s)
"$tests" --gtest_filter='Backends/*:Shapes/*:Groups/*:Backends.*:CheckedBackend.*:StateKernels.*' > "$out/tests.txt" 2>&1
trc=$?
passed=$(grep -c '^\[       OK \]' "$out/tests.txt"); skipped=$(grep -c '^\[  SKIPPED \] .*ms)' "$out/tests.txt"); failed=$(grep -c '^\[  FAILED  \] .*ms)' "$out/tests.txt")
echo "gpu tests: $passed passed, $skipped skipped, $failed failed (exit $trc, $(( $(date +%s) - t0 )) s)" | tee "$out/summary.txt"
# the same tests with programmatic dependent launch (off by default)
MAMBAQ_CUDA_PDL=1 "$tests" --gtest_filter='Backends/*:Shapes/*:Groups/*:Backends.*:CheckedBackend.*:StateKernels.*' > "$out/tests-pdl.txt" 2>&1
echo "gpu tests, MAMBAQ_CUDA_PDL=1: $(grep -c '^\[       OK \]' "$out/tests-pdl.txt") passed, $(grep -c '^\[  FAILED  \] .*ms)' "$out/tests-pdl.txt") failed" | tee -a "$out/summary.txt"

# Agreement on the fixtures that travelled: lambada / held-out / lastword equal reference.json on
# cuda fp32 (the suite's own test, its default backend set to cuda); logits vs cpu; bf16 held-out
# perplexity vs fp32.
agree=""
for m in models/mamba-tiny models/mamba2-tiny-hf; do
  [ -f "$m/config.json" ] || continue
  compgen -G "$m/*.bin" > /dev/null || compgen -G "$m/*.safetensors" > /dev/null || continue
  n=$(basename "$m")
  idx=0; [ "$n" = mamba2-tiny-hf ] && idx=1  # the test's instance of this fixture
  MAMBAQ_BACKEND=cuda "$tests" --gtest_filter="Fixtures/BundledReference.*/$idx" > "$out/reference-$n.txt" 2>&1
  agree+="| $n | reference.json on cuda fp32 | $(grep -q '^\[  PASSED  \] 1 test' "$out/reference-$n.txt" && echo pass || echo FAIL) |"$'\n'
  p="The president said that the nation"
  "$bin/mambaq" logits "$m" --prompt "$p" --top 10 --backend cpu --json "$out/logits-$n-cpu.json" --force > /dev/null 2>&1
  "$bin/mambaq" logits "$m" --prompt "$p" --top 10 --backend cuda --json "$out/logits-$n-cuda.json" --force > /dev/null 2>&1
  agree+="| $n | logits cuda fp32 vs cpu | $(python3 -c "
import json;a=json.load(open('$out/logits-$n-cpu.json'));b=json.load(open('$out/logits-$n-cuda.json'))
r=max(abs(x-y) for x,y in zip(a['top_logits'],b['top_logits']))/max(abs(x) for x in a['top_logits'])
print(('pass' if a['top_ids']==b['top_ids'] and r<1e-3 else 'FAIL')+f' (top-10 ids equal: {a[\"top_ids\"]==b[\"top_ids\"]}, max rel diff {r:.2e})')" 2>&1) |"$'\n'
  for dt in fp32 fp16 bf16; do
    "$bin/mambaq" eval "$m" --tasks ppl:corpus/heldout.txt,lambada_openai --backend cuda --dtype $dt -q --no-log --json "$out/eval-$n-$dt.json" --force > "$out/eval-$n-$dt.txt" 2>&1
  done
  for dt in bf16 fp16; do
    agree+="| $n | held-out ppl $dt vs fp32 (cuda) | $(python3 -c "
import json;a=json.load(open('$out/eval-$n-fp32.json'))['results'];b=json.load(open('$out/eval-$n-$dt.json'))['results']
pa=a['heldout']['perplexity,none'];pb=b['heldout']['perplexity,none']
d=abs(pb/pa-1);print(('pass' if d<5e-3 else 'FAIL')+f' ({pa:.3f} vs {pb:.3f}: {100*d:.3f} %)')" 2>&1) |"$'\n'
  done
  # zero-shot accuracies, fp32: cuda equals cpu (the first 300 documents of each task)
  zs=arc_easy,arc_challenge,piqa,winogrande
  for be in cpu cuda; do
    "$bin/mambaq" eval "$m" --tasks $zs --limit 300 --backend $be -q --no-log --json "$out/zeroshot-$n-$be.json" --force > "$out/zeroshot-$n-$be.txt" 2>&1
  done
  agree+="| $n | zero-shot acc/acc_norm cuda fp32 vs cpu | $(python3 -c "
import json;a=json.load(open('$out/zeroshot-$n-cpu.json'))['results'];b=json.load(open('$out/zeroshot-$n-cuda.json'))['results']
d=[(t,k,a[t][k],b[t][k]) for t in a for k in ('acc,none','acc_norm,none') if k in a[t] and a[t][k]!=b[t].get(k)]
print(('pass' if not d and len(a)==4 else 'FAIL')+' ('+(', '.join(f'{t} {k}: {x:.4f} vs {y:.4f}' for t,k,x,y in d) or ', '.join(f'{t} {a[t][\"acc,none\"]:.4f}' for t in a))+')')" 2>&1) |"$'\n'
done

# Full lambada_openai (5,153 documents) on random weights of the big shapes: the time it takes.
lam=""
for m in ${GPU_CHECK_LAMBADA-mamba-2.8b mamba2-2.7b}; do
  f="$out/lambada-$m"
  t1=$(date +%s.%N)
  timeout 200 "$bin/mambaq" eval --synthetic $m --tasks lambada_openai --backend cuda --dtype bf16 -q --no-log --json "$f.json" > "$f.txt" 2>&1
  wall=$(python3 -c "print(f'{$(date +%s.%N) - $t1:.1f}')")
  lam+="| $m | $(python3 -c "
import re;t=open('$f.txt').read();m=re.search(r'lambada_openai +acc +\S+ .*? (\d+) +([0-9.]+)\s*$',t,re.M)
print(f'{m.group(1)} | {m.group(2)} | $wall' if m else 'failed: '+t.strip().splitlines()[-1][:200])" 2>&1) |"$'\n'
done

# Speed: synthetic published shapes, batch 1, prompt 1024, decode 128, median of 3.
rows=""
bench() {  # shape dtype batch prompt decode
  local f="$out/bench-$1-$2-b$3${PDL_TAG:-}"
  timeout 120 "$bin/mambaq" bench --synthetic $1 --backend cuda --dtype $2 --batch $3 --prompt-len $4 --decode $5 --repeats 3 --no-bandwidth --json "$f.json" > "$f.txt" 2>&1
  rows+=$(python3 -c "import json;j=json.load(open('$f.json'));print(f\"| $1 | $2${PDL_TAG:-} | $3 | {j['forward_tok_s']:.0f} | {j['prefill_tok_s']:.0f} | {j['decode_tok_s']:.1f} | {j['weight_bytes_per_token']/2**20:.0f} | {j.get('device_mib',0):.0f} |\")" 2>/dev/null || echo "| $1 | $2 | $3 | failed: $(tail -1 "$f.txt") | | | | |")$'\n'
}
for m in ${GPU_CHECK_FP32-mamba-130m mamba-1.4b}; do bench $m fp32 1 1024 128; done
for m in ${GPU_CHECK_SHAPES-mamba-130m mamba2-130m mamba-1.4b mamba2-1.3b}; do bench $m bf16 1 1024 128; done
for m in ${GPU_CHECK_BIG-mamba-2.8b mamba2-2.7b}; do bench $m bf16 1 1024 128; done
for b in ${GPU_CHECK_BATCH-16 64}; do bench mamba-1.4b bf16 $b 128 64; bench mamba2-1.3b bf16 $b 128 64; done
export MAMBAQ_CUDA_PDL=1 PDL_TAG="-pdl"
for m in ${GPU_CHECK_PDL-mamba-1.4b}; do bench $m bf16 1 1024 128; done
unset MAMBAQ_CUDA_PDL PDL_TAG

# Where the GPU time goes: every op between two CUDA events (no graphs then), by op.
# (the sums include the untimed warm-up run, and each op's launch gap: a guide, not a timing)
for m in ${GPU_CHECK_PROFILE-mamba-1.4b mamba2-1.3b}; do
  MAMBAQ_CUDA_PROFILE=1 timeout 120 "$bin/mambaq" bench --synthetic $m --backend cuda --dtype bf16 --prompt-len 1024 --decode 1 --repeats 2 --no-bandwidth > "$out/profile-prefill-$m.txt" 2>&1
  MAMBAQ_CUDA_PROFILE=1 timeout 120 "$bin/mambaq" bench --synthetic $m --backend cuda --dtype bf16 --prompt-len 1 --decode 64 --repeats 1 --no-bandwidth > "$out/profile-decode-$m.txt" 2>&1
done

# Decode's kernels as the graph replays them: each kernel's own GPU time (ncu, node-level graph
# profiling, clocks left alone), for the last decode step of a short run; summed by kernel name.
for m in ${GPU_CHECK_NCU_DECODE-}; do
  command -v ncu > /dev/null || break
  timeout 300 ncu --clock-control none --graph-profiling node --metrics gpu__time_duration.sum --csv \
    "$bin/mambaq" bench --synthetic $m --backend cuda --dtype bf16 --prompt-len 8 --decode 4 --repeats 1 --no-bandwidth \
    > "$out/ncu-decode-$m.csv" 2> "$out/ncu-decode-$m.err"
  python3 - "$out/ncu-decode-$m.csv" > "$out/profile-ncu-decode-$m.txt" 2>&1 <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; rows = [dict(zip(head, r)) for r in rows[1:] if r[0] != 'ID']
# kernels of the last decode step: the tail of the launch list, one layer pattern repeating
ks = [(r['Kernel Name'].split('(')[0].split('<')[0], float(r['Metric Value'].replace(',', ''))) for r in rows
      if r.get('Metric Name') == 'gpu__time_duration.sum']
print('cuda profile (ncu, decode kernels, last step)')
n = len(ks) // 6  # prefill + 4 steps + LM heads: the last sixth is about one step
tot = collections.Counter(); cnt = collections.Counter()
for name, ns in ks[-n:]: tot[name] += ns; cnt[name] += 1
for name, ns in tot.most_common(): print(f'{name:<28} {cnt[name]:>5} launches {ns/1e3:>10.1f} us')
print(f'{"total":<28} {sum(cnt.values()):>5} launches {sum(tot.values())/1e3:>10.1f} us')
PY
done

echo
cat "$out/summary.txt"
if [ -n "$agree" ]; then echo "| fixture | check | result |"; echo "|---|---|---|"; printf "%s" "$agree"; echo; fi
echo "| shape (cuda) | weights | batch | forward, all positions scored (t/s) | prefill (t/s) | decode (t/s) | weights read per token (MiB) | device MiB |"
echo "|---|---|---|---|---|---|---|---|"
printf "%s" "$rows"
if [ -n "$lam" ]; then echo; echo "| shape (cuda bf16, random weights) | lambada_openai documents | task time (s) | wall incl. load |"; echo "|---|---|---|---|"; printf "%s" "$lam"; fi
for f in "$out"/profile-*.txt; do echo; echo "== $(basename "$f")"; sed -n '/cuda profile/,$p' "$f" | head -14; done
tar czf "$final/gpu-check.tgz" -C "$out" . && rm -rf "$out"
exit $trc
