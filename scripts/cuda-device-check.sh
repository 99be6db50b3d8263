#!/bin/bash
# Builds Vibrant on a GPU machine (the `device` tool), runs the CUDA tests and
# a few GPU generations, and writes logs to $OUT (default /tmp/vibrant-out).
# Needs .devdeps (../shared/device/pack-deps.sh) and, for the conformance
# tests, a copy of ../shared's models/ and reference/ in $VIBRANT_SHARED_DIR
# (default .devshared). Usage: scripts/cuda-device-check.sh [bench]
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source .devdeps/setup.sh
export VIBRANT_SHARED_DIR=${VIBRANT_SHARED_DIR:-$PWD/.devshared}
B=build
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

t0=$(date +%s)
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
ninja -C $B -j16 vibrantc vibrant-run cuda_executor_test gpu_conformance_test nvrtc_test \
  kernel_source_test plan_test matvec_q8_host_test cuda_kernels_benchmark > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A6 "$OUT/build.log" | head -80; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
ctest --test-dir $B -R 'cuda|gpu' -j6 --timeout 300 --output-on-failure > "$OUT/ctest.log" 2>&1
rc=$?
echo "ctest rc=$rc: $(( $(date +%s) - t0 )) s; $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
grep -E "^\s*[0-9]+/[0-9]+ Test.*(Failed|Timeout|Exception)" "$OUT/ctest.log" | head -30
# Measured errors, printed by the tests (ctest keeps every test's output).
cp $B/Testing/Temporary/LastTest.log "$OUT/LastTest.log" 2>/dev/null
grep -hE "\[ (MEASURED|INFO) \]" $B/Testing/Temporary/LastTest.log | sed 's/\[ MEASURED \] //' | sort -u > "$OUT/measured.txt"
cat "$OUT/measured.txt" | head -90

run=$B/tools/vibrant-run/vibrant-run
vc=$B/tools/vibrantc/vibrantc
echo "== stories260K on the GPU (greedy)"
$vc compile tests/data/stories260K.gguf --device cuda -o /tmp/s.plan && \
  $run /tmp/s.plan -p "Once upon a time" -n 40 --temp 0 2>&1 | tee "$OUT/stories.txt"
echo; echo "== --verify"
$run /tmp/s.plan -p "Once upon a time" -n 4 --temp 0 --verify=1e-4 2>&1 | tail -6 | tee "$OUT/verify.txt"

echo "== decode speed, tiny models (n_ctx 2048)"
for m in tiny-llama-q4_k_m tiny-qwen2-q4_k_m tiny-qwen2-f16; do
  $vc compile $VIBRANT_SHARED_DIR/models/$m.gguf --device cuda -o /tmp/$m.plan > /dev/null && \
    $run /tmp/$m.plan -p "Once upon a time" -n 256 --temp 0 2>&1 >/dev/null | grep -E "tok/s|error" | sed "s/^/$m: /"
done

if [ "$1" = "bench" ]; then
  # Synthetic weights with the real shapes and quantization mix (vibrantc synth).
  for p in qwen2.5-0.5b qwen2.5-3b; do
    echo "== $p q4_k_m, decode (n_ctx 4096)"
    t0=$(date +%s)
    $vc synth --preset $p --type q4_k_m -o /tmp/$p.gguf > /dev/null 2>&1 && \
    $vc compile /tmp/$p.gguf --device cuda -c 4096 -o /tmp/$p.plan | grep -E "memory|pipeline" && \
      $run /tmp/$p.plan -p "Once upon a time" -n 128 --temp 0 2>&1 >/dev/null | grep -E "cuda:|tok/s|error"
    echo "($(( $(date +%s) - t0 )) s)"
  done
  echo "== kernel time per decode step, qwen2.5-0.5b (VIBRANT_CUDA_PROFILE=1, 32 tokens)"
  VIBRANT_CUDA_PROFILE=1 $run /tmp/qwen2.5-0.5b.plan -p "Once upon a time" -n 32 --temp 0 2>&1 >/dev/null \
    | grep -E "profile|T=1" | head -24 | tee "$OUT/profile.txt"
fi
exit $rc
