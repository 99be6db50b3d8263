#!/bin/bash
# One device call for a session's end: build, every CUDA/GPU test (with
# ../shared's models, reference and next/ from .devshared-all.tar.xz), then
# Qwen2.5-3B Q4_K_M prefill with the dequant + cuBLASLt GEMMs against the
# quantized tensor-core GEMM (--mmq-max-rows), and decode op by op against
# the persistent kernel. carry: .devdeps, .devshared-all.tar.xz.
# BENCH=0: the tests only; CTEST_TIMEOUT: their limit (default 300 s).
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
TESTS=1 MODELS=none BPS="" bash scripts/device/persistent.sh 2>&1 | grep -v "synth none failed"
[ "${BENCH:-1}" = 0 ] && exit 0  # tests only
b=build/tools/vibrant-bench/vibrant-bench; vc=build/tools/vibrantc/vibrantc
m=/tmp/q3.gguf
$vc synth --preset qwen2.5-3b --type q4_k_m -o $m > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
for args in ${BENCH_ARGS:-"-p 512,4096 -n 0" "-p 512,4096 -n 0 --mmq-max-rows 65536"}; do
  echo "== vibrant-bench $args"
  timeout 150 $b -m $m --device cuda -r 2 $args 2>&1 | grep -E "^\| qwen|rror" | tee -a "$OUT/bench.txt"
done
# Decode: op by op (0) against the persistent kernel (1, 2 blocks per SM), at
# the start of the context and after 4,096 tokens.
for bps in ${DECODE_BPS:-0 1 2}; do
  echo "== vibrant-bench -p 0 -n 128 -d 0,4096 --decode-blocks-per-sm $bps"
  timeout 150 $b -m $m --device cuda -r 2 -p 0 -n 128 -d 0,4096 --decode-blocks-per-sm $bps 2>&1 | grep -E "^\| qwen|rror" | tee -a "$OUT/bench.txt"
done
