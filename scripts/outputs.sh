#!/usr/bin/env bash
# Record what a mambaq binary computes on the bundled fixtures, for comparing two builds
# (scripts/compare_outputs.py): `logits` top-10 and held-out perplexity / last-word counts in
# every execution mode, on FP models and on quantized folders made by the same binary or given.
# usage: scripts/outputs.sh BIN OUTDIR [QDIR]   (QDIR: quantized folders to reuse: QDIR/FIXTURE for
# quamba1, QDIR/FIXTURE.w8a8 / .w4a8 / .w4a16 for the Quamba2 presets, e.g. an earlier OUTDIR's q-*)
set -euo pipefail
BIN=$(realpath "$1"); OUT=$2; QDIR=${3:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PROMPT="The quick brown fox jumps over the lazy dog. The history of the city begins"
# quantized folders: quamba1 (the default recipe) and the Quamba2 presets w8a8, w4a8, w4a16
RECIPES=${RECIPES:-q1 w8a8 w4a8 w4a16}
for m in ${FIXTURES:-mamba-tiny mamba2-tiny-hf}; do
  "$BIN" logits models/$m --prompt "$PROMPT" --top 10 --json "$OUT/$m.fp.logits.json" >/dev/null
  "$BIN" eval models/$m --tasks ppl:data/corpus/heldout.txt,lastword:data/corpus/lastword.jsonl --no-log -q \
    --json "$OUT/$m.fp.eval.json" >/dev/null
  for r in $RECIPES; do
    suffix=""; [ "$r" = q1 ] || suffix=".$r"
    q=${QDIR:+$QDIR/$m$suffix}
    if [ -z "$q" ]; then
      q=$OUT/q-$m$suffix
      args=(--calib-num 64); [ "$r" = q1 ] || args+=(--preset "$r")
      "$BIN" quantize models/$m -o "$q" "${args[@]}" --no-log -q --force >/dev/null
    fi
    # tag "q" for quamba1 (the files earlier runs wrote), "q.PRESET" for the others
    tag=q$suffix
    for mode in fp32 fake int8; do
      "$BIN" logits "$q" --mode $mode --prompt "$PROMPT" --top 10 --json "$OUT/$m.$tag.$mode.logits.json" >/dev/null
      "$BIN" eval "$q" --mode $mode --tasks ppl:data/corpus/heldout.txt,lastword:data/corpus/lastword.jsonl --no-log -q \
        --json "$OUT/$m.$tag.$mode.eval.json" >/dev/null
    done
  done
done
echo "outputs in $OUT"
