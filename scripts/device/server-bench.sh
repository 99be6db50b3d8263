#!/bin/bash
# One device call for issue #14's throughput table: Qwen2.5-3B Q4_K_M (vibrantc
# synth), 128 prompt + 128 generated tokens per sequence, aggregate tok/s at
# 1, 8, 32 and 64 sequences: vibrant-batched-bench (the server's paged step
# graph) beside llama-batched-bench on the same file in the same call.
# Logs under $OUT. carry: .devdeps, .devpeers. Env: NPL (1,8,32,64).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
log=$OUT/server-bench.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $log
git log --oneline -1 | tee -a $log
t0=$(date +%s)
build_tools $log vibrantc vibrant-batched-bench
m=/tmp/qwen2.5-3b-q4_k_m.gguf
build/tools/vibrantc/vibrantc synth --preset qwen2.5-3b --type q4_k_m -o $m > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
NPL=${NPL:-1,8,32,64}
echo "== vibrant-batched-bench" | tee -a $log
timeout 300 build/tools/vibrant-batched-bench/vibrant-batched-bench -m $m --device cuda -b 2048 -npp 128 -ntg 128 \
  -npl $NPL 2>&1 | tee -a $log
if [ -x $L/llama-batched-bench ]; then
  echo "== llama-batched-bench" | tee -a $log
  timeout 200 $L/llama-batched-bench -m $m -c 33000 -b 2048 -ub 512 -npp 128 -ntg 128 -npl $NPL -ngl 99 -fa 1 2>&1 |
    grep -E "^\|" | tee -a $log
fi
echo "total: $(( $(date +%s) - t0 )) s" | tee -a $log
