#!/usr/bin/env bash
# The main job on the bundled default model: info, a short generation, a quick evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
M=models/mamba-tiny
./build/mambaq info "$M"
echo
./build/mambaq generate "$M" --prompt "The president said that the nation" -n 24 --stats
echo
./build/mambaq eval "$M" --tasks lambada_openai,ppl:corpus/heldout.txt,arc_easy,piqa,winogrande --limit 200
