#!/bin/bash
# One device call: decode/prefill figures of this tree, a baseline tree (.base)
# and llama.cpp (../shared/peers, carried as .devpeers) on the same card and
# the same synthetic files. carry: .devdeps, .base, .devpeers.
# Env: PRESETS (qwen2.5-3b), REPS (3), BASE (.base), PEER (1).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
PRESETS=${PRESETS:-qwen2.5-3b}
REPS=${REPS:-3}
BASE=${BASE:-.base}
log=$OUT/decode-bench.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $log
git log --oneline -1 | tee -a $log
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build -j16 vibrantc vibrant-bench vibrant-run > "$OUT/build.log" 2>&1 || { grep error -A5 "$OUT/build.log" | head -40; exit 1; }
if [ -d "$BASE" ]; then
  ( cd "$BASE" && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF > /dev/null 2>&1 &&
    ninja -C build -j16 vibrant-bench > /dev/null 2>&1 ) || echo "baseline build failed"
fi
echo "build: $(( $(date +%s) - t0 )) s" | tee -a $log
L=/tmp/llama.cpp-cuda-sm90
[ "${PEER:-1}" = 1 ] && [ -f .devpeers/llama.cpp-cuda-sm90.tar.xz ] && tar -xJf .devpeers/llama.cpp-cuda-sm90.tar.xz -C /tmp
for p in $PRESETS; do
  m=/tmp/$p-q4_k_m.gguf
  build/tools/vibrantc/vibrantc synth --preset $p --type q4_k_m -o $m > /dev/null 2>&1 || { echo "synth $p failed"; continue; }
  for tree in base new; do
    b=build/tools/vibrant-bench/vibrant-bench
    [ $tree = base ] && b=$BASE/build/tools/vibrant-bench/vibrant-bench
    [ -x $b ] || continue
    echo "== $p $tree" | tee -a $log
    $b -m $m --device cuda -p 512 -n 128 -r $REPS 2>&1 | grep -E "^\| [a-z]" | tee -a $log
    [ $p = qwen2.5-3b ] && $b -m $m --device cuda -p 0 -n 128 -r $REPS --ctx-size 20480 2>&1 | grep -E "tg128" | sed 's/$/ (ctx 20480)/' | tee -a $log
  done
  if [ -x $L/llama-bench ]; then
    echo "== $p llama.cpp" | tee -a $log
    $L/llama-bench -m $m -p 512 -n 128 -r $REPS -ngl 99 -fa 1 2>&1 | grep -E "^\| [a-z]" | tee -a $log
    [ $p = qwen2.5-3b ] && $L/llama-bench -m $m -p 0 -n 128 -d 4096 -r $REPS -ngl 99 -fa 1 2>&1 | grep -E "^\| [a-z]" | tee -a $log
  fi
done
m=/tmp/qwen2.5-3b-q4_k_m.gguf
if [ -f $m ]; then
  VIBRANT_CUDA_PROFILE=1 build/tools/vibrant-bench/vibrant-bench -m $m --device cuda -p 0 -n 32 -r 1 2>&1 | grep -E "profile|T=1" | head -16 > "$OUT/profile.txt"
  yes "the quick brown fox jumps over the lazy dog and then" | head -c 17000 | tr '\n' ' ' > /tmp/long.txt
  build/tools/vibrantc/vibrantc compile $m --device cuda -c 20480 -o /tmp/20k.plan > /dev/null 2>&1 && \
    build/tools/vibrant-run/vibrant-run /tmp/20k.plan -f /tmp/long.txt -n 128 --temp 0 2>&1 >/dev/null | grep -E "tok/s" | tail -1 | sed 's/^/vibrant-run, plan for 20480: /' | tee -a $log
fi
