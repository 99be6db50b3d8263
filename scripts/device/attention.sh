#!/bin/bash
# The attention kernels on the GPU machine, in one command: builds the
# attention tests and micro-benchmark (Release), runs the host-side checks,
# the standalone GPU test several times (each case inside also runs 3 times
# and must repeat bit for bit), then bench/attention_benchmark. Logs and JSON
# go to $OUT (the device tool sets it; default /tmp/vibrant-out).
#
# Through the device tool, from the repository root:
#   here, once:  DEVDEPS_EXTRA="libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
#                libpcre2-posix3" ../shared/device/pack-deps.sh   (.devdeps/, git-ignored;
#                the same .devdeps as scripts/device/check-and-bench.sh)
#   run:         carry [".devdeps"], command: bash scripts/device/attention.sh
# Environment: RUNS (GPU test repetitions, default 2), BENCH (1; 0 skips the
# benchmark), QUICK (0; 1 = fewer benchmark cases), BUILD (build-attention).
# Expected wall time on an H100: build ~2-3 min, GPU test ~1-2 min per run
# (the CPU reference dominates), benchmark ~1 min.
#
# What the run should show (predictions written before the first run, H100
# SXM, Qwen2.5-3B attention: 16 heads, 2 KV heads, head_dim 128):
# - d2d copy ~3000 GB/s (3012 measured before); mma.sync f16 peak ~600-700
#   TFLOP/s (the dense datasheet figure, 989, needs wgmma).
# - decode, f16, per layer (attention + combine, in a CUDA graph):
#     ctx 16 on the 32k cache: new ~4 us (old ~25 us: its grid and combine
#       cover all 512 chunks of the capacity);
#     ctx 1k: new ~4 us (old 21 us); 4k: new ~5 us, >= 1000 GB/s (old 42 us,
#     99 GB/s); 16k: new ~11 us, ~1500-2000 GB/s = 50-65 % of d2d (old 122
#     us, 138 GB/s); 32k: new ~20 us.
#   q8_0 reads 53 % of f16's bytes but with 2-byte loads: expect 0.6-0.9x the
#   f16 time at 16k/32k, about the same below.
# - prompt attention, one layer, f16: 4096 tokens causal in one launch ~69
#   GFLOP useful: new ~150-250 TFLOP/s (0.3-0.45 ms); in chunks of 512 a bit
#   lower (the first chunks are small grids); old kernels ~5-20 TFLOP/s.
#   16384 tokens (1.1 TFLOP): new ~200-300 TFLOP/s in one launch.
# A figure far below these (e.g. decode 16k slower than 30 us, prompt below
# 80 TFLOP/s) points at register-limited occupancy (ptxas: decode f16 hd128
# 168 registers -> 3 blocks/SM, prompt 224 -> 2 blocks/SM) or the load
# pattern; the GPU test must pass first.
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
RUNS=${RUNS:-2}
BENCH=${BENCH:-1}
QUICK=${QUICK:-0}
B=${BUILD:-build-attention}
mkdir -p "$OUT"
source scripts/device/deps.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
git log --oneline -1 2>/dev/null | tee "$OUT/commit.txt"

t0=$(date +%s)
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
ninja -C $B -j16 attention_gpu_test attention_host_test attention_mma_test attention_nvrtc_test \
  kernels_test attention_benchmark > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A6 "$OUT/build.log" | head -80; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

rc=0
echo "== host-side checks (emulated kernels, launch rules, NVRTC resources, CPU reference)"
for t in attention_mma_test attention_host_test attention_nvrtc_test; do
  $B/codegen/$t > "$OUT/$t.log" 2>&1 || { echo "$t FAILED"; rc=1; }
  tail -1 "$OUT/$t.log"
done
$B/runtime/cpu/kernels_test --gtest_filter='*KvStore*:*Attention*' > "$OUT/cpu_kernels_test.log" 2>&1 || { echo "cpu kernels_test FAILED"; rc=1; }
tail -1 "$OUT/cpu_kernels_test.log"

echo "== GPU test, $RUNS runs"
for i in $(seq 1 "$RUNS"); do
  t0=$(date +%s)
  $B/codegen/attention_gpu_test > "$OUT/attention_gpu_test.$i.log" 2>&1
  r=$?
  echo "run $i: rc=$r, $(( $(date +%s) - t0 )) s: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/attention_gpu_test.$i.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \]|Failure|race" "$OUT/attention_gpu_test.$i.log" | head -20
  [ $r -eq 0 ] || rc=1
done
grep -h "MEASURED\|INFO" "$OUT/attention_gpu_test.1.log" > "$OUT/measured.txt"
# The largest errors per kernel family, and whether the runs agree.
echo "largest measured errors (run 1):"
for k in "gpu decode" "gpu prefill"; do
  grep "$k" "$OUT/measured.txt" | sed 's/.*= //' | sort -g | tail -1 | sed "s/^/  $k: /"
done
if [ "$RUNS" -gt 1 ]; then
  for i in $(seq 2 "$RUNS"); do
    grep -h "MEASURED" "$OUT/attention_gpu_test.$i.log" | diff -q - <(grep MEASURED "$OUT/measured.txt") > /dev/null \
      && echo "run $i: same errors as run 1" || echo "run $i: errors DIFFER from run 1 (a race?)"
  done
fi

if [ "$BENCH" = "1" ]; then
  echo "== attention_benchmark"
  args=(--json "$OUT/attention_benchmark.json")
  [ "$QUICK" = "1" ] && args+=(--quick)
  $B/bench/attention_benchmark "${args[@]}" 2>&1 | tee "$OUT/attention_benchmark.txt" || rc=1
fi
exit $rc
