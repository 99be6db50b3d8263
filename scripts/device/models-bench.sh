#!/bin/bash
# One device call for issue #15's figures: the Qwen3-8B, Gemma-3-4B and
# Qwen3-30B-A3B presets (Q4_K_M, random weights, real shapes: vibrantc
# synth) with Vibrant's pp512 and tg128 (and the tg roofline: MoE decode
# should read only the chosen experts' bytes) beside llama-bench on the same
# files in the same call. Logs under $OUT. carry: .devdeps, .devpeers.
# Env: PRESETS ("qwen3-8b gemma3-4b qwen3-30b-a3b"), REPS (2).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
log=$OUT/models.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $log
git log --oneline -1 | tee -a $log
t0=$(date +%s)
build_tools $log vibrantc vibrant-bench
vc=build/tools/vibrantc/vibrantc; b=build/tools/vibrant-bench/vibrant-bench
R=${REPS:-2}
for preset in ${PRESETS:-qwen3-8b gemma3-4b qwen3-30b-a3b}; do
  m=/tmp/$preset-q4_k_m.gguf
  ts=$(date +%s)
  $vc synth --preset $preset --type q4_k_m -o $m > "$OUT/synth-$preset.txt" 2>&1 || { echo "synth $preset failed" | tee -a $log; continue; }
  echo "== $preset ($(du -h $m | cut -f1), synth $(( $(date +%s) - ts )) s)" | tee -a $log
  timeout 150 $b -m $m --device cuda -p 512 -n 128 -r $R --roofline 2> "$OUT/bench-$preset.err" | tee "$OUT/bench-$preset.txt" |
    grep -E "^\| |step|weights|experts" | head -30 | tee -a $log
  grep -E "rror" "$OUT/bench-$preset.err" | head -3 | tee -a $log
  if [ -x $L/llama-bench ]; then
    timeout 120 $L/llama-bench -m $m -p 512 -n 128 -r $R -ngl 99 -fa 1 2>&1 | grep -E "^\| [a-z]" | tee -a $log
  fi
  rm -f $m
done
echo "total: $(( $(date +%s) - t0 )) s" | tee -a $log
