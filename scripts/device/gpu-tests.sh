#!/bin/bash
# One short device call: builds only the GPU test binaries and the tools they
# run (Release), then ctest over them with ../shared's models, reference and
# next/ (.devshared-all.tar.xz). Logs under $OUT. carry: .devdeps,
# .devshared-all.tar.xz. Env: CTEST_TIMEOUT (300), REGEX (the GPU-running tests).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
# ../shared first: the parameterized tests list its models when they are
# discovered, right after each test binary links.
[ -f .devshared-all.tar.xz ] && mkdir -p .devshared && tar xJf .devshared-all.tar.xz -C .devshared
[ -d .devshared ] && export VIBRANT_SHARED_DIR=$PWD/.devshared
# A build kept from an earlier call discovered its cases without them: relink.
touch tests/tp_gpu_test.cc tests/layer_split_test.cc tests/gpu_conformance_test.cc
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git log --oneline -1 | tee -a "$OUT/gpu.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_BENCH=OFF > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build -j16 vibrantc vibrant-run vibrant-bench tp_gpu_test layer_split_test gpu_conformance_test gpu_cli_test \
  cuda_executor_test cuda_sample_test cuda_mmq_gpu_test attention_gpu_test nccl_test cublaslt_test vibrant_tp_probe \
  > "$OUT/build.log" 2>&1 || { grep -E "error" -A6 "$OUT/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
# Only the binaries built above (others are absent from this build).
timeout ${CTEST_TIMEOUT:-300} ctest --test-dir build -R "${REGEX:-cuda[.](executor|sample|mmq|attention|nccl|cublaslt)|gpu_conformance|gpu_cli|tp_gpu|layer_split}" -j8 --timeout 200 --output-on-failure \
  > "$OUT/ctest.log" 2>&1
echo "ctest rc=$?: $(( $(date +%s) - t0 )) s; $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
grep -E "^\s*[0-9]+/[0-9]+ Test.*(Failed|Timeout|Exception|Not Run)" "$OUT/ctest.log" | head -40
grep -hE "\[ (MEASURED|INFO) \]" build/Testing/Temporary/LastTest.log | sed 's/\[ MEASURED \] //' | sort -u > "$OUT/measured.txt"
grep -E "tp_gpu|layer_split" "$OUT/measured.txt" | head -80
