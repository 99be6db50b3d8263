#!/bin/bash
# compute-sanitizer over the GPU tests, on the GPU machine (the `device`
# tool): memcheck (out-of-bounds and misaligned device accesses, leaks of
# device memory, CUDA API errors) and racecheck (shared-memory hazards), then
# initcheck (reads of uninitialized device memory) on the executor tests.
# Writes logs to $OUT (default /tmp/vibrant-out); exits non-zero when a tool
# reports an error or a test fails under it.
#
#   here, once:  ../shared/device/pack-deps.sh     (.devdeps/, git-ignored)
#   run:         carry [".devdeps"], command: bash scripts/cuda-sanitize.sh
#
# Environment: TOOLS (memcheck racecheck initcheck), FILTER (a gtest filter for
# cuda_executor_test, default all), ATTENTION (the attention_gpu_test filter,
# default all: the tensor-core kernels' shared memory under racecheck),
# CONFORMANCE (the gpu_conformance_test filter, default the bundled
# stories260K plus the q4_k_m phi3 (weight views), qwen3moe (matmul_id) and
# gemma3 (sliding window) models when ../shared/next is there: every shared
# model under memcheck takes long), BUILD (build-sanitize).
#
# Kernels are 10-100x slower under the tools; the CUDA graph and programmatic
# dependent launch paths are exercised as they are (VIBRANT_CUDA_PDL=0
# VIBRANT_CUDA_SYNC=1 make a failing run easier to attribute).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
[ -f .devdeps/setup.sh ] && source .devdeps/setup.sh
B=${BUILD:-build-sanitize}
TOOLS=${TOOLS:-memcheck racecheck initcheck}
FILTER=${FILTER:-*}
ATTENTION=${ATTENTION:-*}
CONFORMANCE=${CONFORMANCE:-*stories260K*:*phi3_q4_k_m*:*qwen3moe_q4_k_m*:*gemma3_q4_k_m*}
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ ! -x "$CS" ]; then
  echo "cuda-sanitize: compute-sanitizer not found (it ships with the CUDA toolkit)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$CS" --version | tail -1

t0=$(date +%s)
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVIBRANT_BUILD_BENCH=OFF \
  > "$OUT/sanitize-cmake.log" 2>&1 || { tail -40 "$OUT/sanitize-cmake.log"; exit 1; }
ninja -C $B -j16 vibrantc vibrant-run cuda_executor_test gpu_conformance_test cublaslt_test attention_gpu_test \
  > "$OUT/sanitize-build.log" 2>&1 || { grep -E "error" -A6 "$OUT/sanitize-build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

rc=0
run() {  # run NAME TOOL CMD...: one command under one tool, its log in $OUT
  local name=$1 tool=$2
  shift 2
  local log="$OUT/sanitize-$tool-$name.log"
  local extra=()
  case $tool in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report hazard) ;;
  esac
  local t=$(date +%s)
  "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 99 --print-limit 20 "$@" > "$log" 2>&1
  local r=$?
  local summary
  summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|tests passed|FAILED" "$log" | tail -3 | tr '\n' ' ')
  echo "$tool $name: exit $r, $(( $(date +%s) - t )) s; $summary"
  if [ $r -ne 0 ]; then
    rc=1
    grep -E "=========|\[  FAILED" "$log" | head -30
  fi
}

export VIBRANT_SHARED_DIR=${VIBRANT_SHARED_DIR:-$PWD/.devshared}
$B/tools/vibrantc/vibrantc compile tests/data/stories260K.gguf --device cuda -o /tmp/sanitize-s.plan > /dev/null || rc=1
for tool in $TOOLS; do
  run executor "$tool" $B/runtime/cuda/cuda_executor_test --gtest_filter="$FILTER"
  [ "$tool" = initcheck ] && continue
  run cublaslt "$tool" $B/runtime/cuda/cublaslt_test
  run attention "$tool" $B/codegen/attention_gpu_test --gtest_filter="$ATTENTION"
  run conformance "$tool" $B/tests/gpu_conformance_test --gtest_filter="$CONFORMANCE"
  run stories "$tool" $B/tools/vibrant-run/vibrant-run /tmp/sanitize-s.plan -p "Once upon a time" \
    -n 16 --temp 0
done
echo "cuda-sanitize: $([ $rc -eq 0 ] && echo clean || echo 'errors reported (logs in '"$OUT"')')"
exit $rc
