#!/usr/bin/env bash
# Record what a mambaq binary computes on the bundled fixtures, for comparing two builds
# (scripts/compare_outputs.py): `logits` top-10 and held-out perplexity / last-word counts in
# every execution mode, on FP models and on quantized folders made by the same binary or given.
# usage: scripts/outputs.sh BIN OUTDIR [QDIR]   (QDIR: quantized folders to reuse, one per fixture)
set -euo pipefail
BIN=$(realpath "$1"); OUT=$2; QDIR=${3:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PROMPT="The quick brown fox jumps over the lazy dog. The history of the city begins"
for m in mamba-tiny mamba2-tiny-hf; do
  q=${QDIR:+$QDIR/$m}
  if [ -z "$q" ]; then
    q=$OUT/q-$m
    "$BIN" quantize models/$m -o "$q" --calib-num 64 --no-log -q --force >/dev/null
  fi
  "$BIN" logits models/$m --prompt "$PROMPT" --top 10 --json "$OUT/$m.fp.logits.json" >/dev/null
  "$BIN" eval models/$m --tasks ppl:data/corpus/heldout.txt,lastword:data/corpus/lastword.jsonl --no-log -q \
    --json "$OUT/$m.fp.eval.json" >/dev/null
  for mode in fp32 fake int8; do
    "$BIN" logits "$q" --mode $mode --prompt "$PROMPT" --top 10 --json "$OUT/$m.q.$mode.logits.json" >/dev/null
    "$BIN" eval "$q" --mode $mode --tasks ppl:data/corpus/heldout.txt,lastword:data/corpus/lastword.jsonl --no-log -q \
      --json "$OUT/$m.q.$mode.eval.json" >/dev/null
  done
done
echo "outputs in $OUT"
