#!/bin/bash
# One device call (the `device` tool): build, the CUDA/GPU tests, and the
# Qwen2.5-3B Q4_K_M pp512/tg128 of this tree beside a baseline tree built in
# the same call (no-regression check), logs under $OUT.
#   carry: .devdeps (../shared/device/pack-deps.sh), .devshared (models/ and
#   reference/ of ../shared), optionally .base (the baseline's sources, e.g.
#   `git archive <commit> | tar -x -C .base`).
# Env: TESTS (1), BENCH (1), BASE (.base), REPS (3), LONG (1: decode with a
# 20480-token plan at a short position and after ~4k tokens of prompt).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
export VIBRANT_SHARED_DIR=$PWD/.devshared
TESTS=${TESTS:-1}
BENCH=${BENCH:-1}
BASE=${BASE:-.base}
REPS=${REPS:-3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
targets="vibrantc vibrant-run vibrant-bench"
[ "$TESTS" = 1 ] && targets="$targets cuda_executor_test gpu_conformance_test nvrtc_test kernel_source_test cublaslt_test attention_gpu_test cuda_plan_probe cuda_sample_test sample_host_test launch_traffic_test gpu_cli_test"
ninja -C build -j16 $targets > "$OUT/build.log" 2>&1 || { grep -E "error" -A6 "$OUT/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "$BENCH" = 1 ] && [ -d "$BASE" ]; then
  ( cd "$BASE" && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF > "$OUT/base-cmake.log" 2>&1 &&
    ninja -C build -j16 vibrantc vibrant-bench > "$OUT/base-build.log" 2>&1 ) &
  base_pid=$!
fi
rc=0
if [ "$TESTS" = 1 ]; then
  t0=$(date +%s)
  ctest --test-dir build -R 'cuda|gpu' -j8 --timeout 400 --output-on-failure > "$OUT/ctest.log" 2>&1
  rc=$?
  echo "ctest rc=$rc: $(( $(date +%s) - t0 )) s; $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
  grep -E "^\s*[0-9]+/[0-9]+ Test.*(Failed|Timeout|Exception)" "$OUT/ctest.log" | head -30
  cp build/Testing/Temporary/LastTest.log "$OUT/LastTest.log" 2>/dev/null
  grep -hE "\[ (MEASURED|INFO) \]" build/Testing/Temporary/LastTest.log | sed 's/\[ MEASURED \] //' | sort -u > "$OUT/measured.txt"
  vc=build/tools/vibrantc/vibrantc; run=build/tools/vibrant-run/vibrant-run
  $vc compile tests/data/stories260K.gguf --device cuda -o /tmp/s.plan > /dev/null && \
    $run /tmp/s.plan -p "Once upon a time" -n 40 --temp 0 > "$OUT/stories.txt" 2>&1
  $run /tmp/s.plan -p "Once upon a time" -n 4 --temp 0 --verify=1e-4 2>&1 | tail -4 > "$OUT/verify.txt"
  head -c 400 "$OUT/stories.txt"; echo; cat "$OUT/verify.txt"
fi
if [ "$BENCH" = 1 ]; then
  vc=build/tools/vibrantc/vibrantc
  m=/tmp/qwen2.5-3b-q4_k_m.gguf
  $vc synth --preset qwen2.5-3b --type q4_k_m -o $m > /dev/null 2>&1 || echo "synth failed"
  [ -n "${base_pid:-}" ] && wait $base_pid && echo "baseline built"
  for round in 1 2; do
    for tree in base new; do
      b=build/tools/vibrant-bench/vibrant-bench
      [ $tree = base ] && b=$BASE/build/tools/vibrant-bench/vibrant-bench
      [ -x $b ] || continue
      echo "== $tree (round $round)"
      $b -m $m --device cuda -p 512 -n 128 -r $REPS 2>&1 | grep -E "^\|" | tee -a "$OUT/bench-$tree.txt"
    done
  done
  VIBRANT_CUDA_PROFILE=1 build/tools/vibrant-bench/vibrant-bench -m $m --device cuda -p 0 -n 32 -r 1 2>&1 | grep -E "profile|T=1" | head -30 > "$OUT/profile.txt"
  if [ "${LONG:-1}" = 1 ]; then
    # A plan for 20480 tokens of context: decode at short positions, then
    # after a prompt of ~4k tokens (vibrant-run's timing line).
    yes "the quick brown fox jumps over the lazy dog and then" | head -c 17000 | tr '\n' ' ' > /tmp/long.txt
    for tree in base new; do
      b=build/tools/vibrant-bench/vibrant-bench; vc=build/tools/vibrantc/vibrantc; run=build/tools/vibrant-run/vibrant-run
      if [ $tree = base ]; then b=$BASE/build/tools/vibrant-bench/vibrant-bench; vc=$BASE/build/tools/vibrantc/vibrantc; run=$BASE/build/tools/vibrant-run/vibrant-run; fi
      [ -x $b ] || continue
      echo "== $tree: tg128 of a plan for 20480 tokens"
      $b -m $m --device cuda -p 0 -n 128 -r 3 --ctx-size 20480 2>&1 | grep -E "tg128" | tee -a "$OUT/bench-$tree.txt"
      if [ -x $run ] && $vc compile $m --device cuda -c 20480 -o /tmp/$tree-20k.plan > /dev/null 2>&1; then
        echo "== $tree: vibrant-run after a long prompt (plan for 20480)"
        $run /tmp/$tree-20k.plan -f /tmp/long.txt -n 128 --temp 0 2>&1 >/dev/null | grep -E "prompt:|tok/s" | tail -2 | tee -a "$OUT/bench-$tree.txt"
      fi
    done
  fi
fi
( cd "$OUT" && tar czf logs.tgz --exclude=logs.tgz . )
exit $rc
