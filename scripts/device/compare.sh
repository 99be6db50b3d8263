#!/bin/bash
# One device call: Vibrant beside llama.cpp (../shared/peers, carried as
# .devpeers) on the same card and the same synthesized Qwen2.5-3B Q4_K_M:
# prefill pp512/pp4096 with the dequant + cuBLASLt GEMMs and with the
# quantized tensor-core GEMM (--mmq-max-rows), decode tg128 at depth 0 and
# 4096 op by op and as the persistent kernel, and llama-bench's pp512,
# pp4096, tg128 and tg128 @ d4096; with SPLIT=N (default 18 of the 36
# layers; 0: skip) both engines with -ngl N, half the model on the CPU's 16
# cores (issue #18's GPU + CPU split). carry: .devdeps, .devpeers.
# Env: REPS (3), MMQ (1), PERSISTENT (1), SPLIT (18).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
log=$OUT/compare.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $log
git log --oneline -1 | tee -a $log
t0=$(date +%s)
build_tools $log vibrantc vibrant-bench
m=/tmp/qwen2.5-3b-q4_k_m.gguf
build/tools/vibrantc/vibrantc synth --preset qwen2.5-3b --type q4_k_m -o $m > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
b=build/tools/vibrant-bench/vibrant-bench
R=${REPS:-3}
run() {  # label, then vibrant-bench arguments
  local label=$1; shift
  echo "== vibrant $label: $*" | tee -a $log
  timeout 150 $b -m $m --device cuda -r $R "$@" 2>&1 | grep -E "^\| qwen|rror" | tee -a $log
}
run "prefill, cuBLASLt" -p 512,4096 -n 0
[ "${MMQ:-1}" = 1 ] && run "prefill, quantized GEMM" -p 512,4096 -n 0 --mmq-max-rows 65536
run "decode, op by op" -p 0 -n 128 -d 0,4096
[ "${PERSISTENT:-1}" = 1 ] && run "decode, persistent kernel" -p 0 -n 128 -d 0,4096 --decode-blocks-per-sm 2
S=${SPLIT:-18}
[ "$S" != 0 ] && run "split -ngl $S" -p 512 -n 32 -r 2 -ngl $S
if [ -x $L/llama-bench ]; then
  echo "== llama.cpp" | tee -a $log
  timeout 150 $L/llama-bench -m $m -p 512,4096 -n 128 -r $R -ngl 99 -fa 1 2>&1 | grep -E "^\| [a-z]" | tee -a $log
  timeout 100 $L/llama-bench -m $m -p 0 -n 128 -d 4096 -r $R -ngl 99 -fa 1 2>&1 | grep -E "^\| [a-z]" | tee -a $log
  [ "$S" != 0 ] && timeout 120 $L/llama-bench -m $m -p 512 -n 32 -r 2 -ngl $S -fa 1 2>&1 | grep -E "^\| [a-z]" | tee -a $log
fi
echo "total: $(( $(date +%s) - t0 )) s" | tee -a $log
