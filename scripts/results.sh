#!/usr/bin/env bash
# Reproduces docs/results.md: FP32 vs Quamba W8A8 (int8 execution) on both bundled fixtures,
# for percentile alpha 0.9995 and 1.0, percentile mode ema and exact, weights per tensor and per
# channel; held-out perplexity (seqlen 1024), held-out last-word accuracy, lambada_openai.
# Usage: bash scripts/results.sh [--limit N]   (about 25 minutes on 2 cores without --limit)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/mambaq
[ -x "$BIN" ] || bash scripts/build.sh
EXTRA=("$@")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/results.jsonl"
TASKS=ppl:corpus/heldout.txt,lastword:corpus/lastword.jsonl,lambada_openai
for MODEL in models/mamba-tiny models/mamba2-tiny-hf; do
  $BIN eval "$MODEL" --tasks "$TASKS" --ppl-seqlen 1024 --log "$LOG" -q "${EXTRA[@]}"
  for ALPHA in 0.9995 1.0; do
    for PMODE in ema exact; do
      for GRAN in tensor channel; do
        OUT="$WORK/$(basename "$MODEL")-a$ALPHA-$PMODE-$GRAN"
        $BIN quantize "$MODEL" -o "$OUT" --percentile-alpha "$ALPHA" --percentile-mode "$PMODE" \
          --weight-granularity "$GRAN" --log "$LOG" -q
        $BIN eval "$OUT" --mode int8 --tasks "$TASKS" --ppl-seqlen 1024 --log "$LOG" -q "${EXTRA[@]}"
      done
    done
  done
done
{
  echo "# Results: FP32 vs Quamba W8A8"
  echo
  echo "Made by \`bash scripts/results.sh\` ($(git describe --always --dirty), $(date -u +%Y-%m-%d), $(nproc) threads)."
  echo "W8A8 rows run \`--mode int8\` (integer kernels). Calibration: the defaults (bundled \`corpus/calib.jsonl\`,"
  echo "512-token windows, all $(grep -o '"available":[0-9]*' "$LOG" | head -1 | cut -d: -f2) available samples)."
  echo "heldout = \`ppl:corpus/heldout.txt\` at seqlen 1024; lastword = \`lastword:corpus/lastword.jsonl\`."
  echo "Time: wall seconds of the eval (all three tasks) and of \`mambaq quantize\` (calibration included)."
  echo
  $BIN logs "$LOG" --last 1000 --markdown
} > docs/results.md
cat docs/results.md
