#!/bin/bash
# One device call: the persistent decode kernel (schedule-decode) against the
# op-by-op schedule. Builds the tools (Release), then for stories260K and a
# synthesized Qwen2.5-0.5B: greedy text of both schedules (must be equal);
# then tg128 of Qwen2.5-3B Q4_K_M for --decode-blocks-per-sm 0 (op by op),
# 1, 2, 3, 4. Logs under $OUT. carry: .devdeps.
# Env: MODELS (qwen2.5-3b), BPS ("0 1 2 3 4"), REPS (3), TESTS (0; 1: also
# ctest -R 'cuda|gpu' afterwards, with VIBRANT_SHARED_DIR=.devshared when
# carried).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
source scripts/device/deps.sh
# ../shared's models, reference and next/ as one archive (they do not fit the
# carry limit unpacked): tar cJf .devshared-all.tar.xz -C ../shared models reference next
if [ -f .devshared-all.tar.xz ]; then mkdir -p .devshared && tar xJf .devshared-all.tar.xz -C .devshared; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build -j16 vibrantc vibrant-run vibrant-bench ${EXTRA_TARGETS:-} > "$OUT/build.log" 2>&1 || { grep -E "error" -A6 "$OUT/build.log" | head -60; exit 1; }
if [ "${TESTS:-0}" = 1 ]; then ( ninja -C build -j8 > "$OUT/build-tests.log" 2>&1 ) & tests_pid=$!; fi
echo "build: $(( $(date +%s) - t0 )) s"
vc=build/tools/vibrantc/vibrantc; run=build/tools/vibrant-run/vibrant-run; b=build/tools/vibrant-bench/vibrant-bench
check() {  # name model [compile flags]
  local name=$1 m=$2; shift 2
  for s in ops persistent; do
    timeout 300 $vc compile $m --device cuda --decode-schedule $s "$@" -o /tmp/$name-$s.plan > "$OUT/$name-$s.compile.txt" 2>&1 || { echo "$name $s: compile failed"; tail -5 "$OUT/$name-$s.compile.txt"; }
    timeout 60 $run /tmp/$name-$s.plan -p "Once upon a time" -n 48 --temp 0 > /tmp/$name-$s.txt 2> /tmp/$name-$s.err
    echo "$name $s: rc=$? $(tail -c 300 /tmp/$name-$s.err | tr '\n' ' ' | tail -c 200)"
  done
  if cmp -s /tmp/$name-ops.txt /tmp/$name-persistent.txt; then echo "$name: SAME text"; else echo "$name: DIFFERENT text"; head -c 300 /tmp/$name-ops.txt; echo; head -c 300 /tmp/$name-persistent.txt; echo; fi
}
check stories tests/data/stories260K.gguf
$vc synth --preset qwen2.5-0.5b --type q4_k_m -o /tmp/q05.gguf > /dev/null 2>&1 || echo "synth 0.5b failed"
check q05 /tmp/q05.gguf
grep -E "persistent|decode_step|ptxas|registers" "$OUT"/*persistent.compile.txt | head -5
for preset in ${MODELS:-qwen2.5-3b}; do
  m=/tmp/$preset.gguf
  $vc synth --preset $preset --type q4_k_m -o $m > /dev/null 2>&1 || { echo "synth $preset failed"; continue; }
  check $preset $m
  for bps in ${BPS:-0 1 2 3 4}; do
    echo "== $preset --decode-blocks-per-sm $bps"
    timeout 120 $b -m $m --device cuda -p 0 -n 128 -r ${REPS:-3} --decode-blocks-per-sm $bps 2>&1 | grep -E "^\||rror" | tail -2 | tee -a "$OUT/bench.txt"
  done
done
if [ "${TESTS:-0}" = 1 ]; then
  wait $tests_pid || { grep -E "error" -A6 "$OUT/build-tests.log" | head -40; exit 1; }
  [ -d .devshared ] && export VIBRANT_SHARED_DIR=$PWD/.devshared
  t0=$(date +%s)
  timeout ${CTEST_TIMEOUT:-300} ctest --test-dir build -R 'cuda|gpu' -j8 --timeout 200 --output-on-failure > "$OUT/ctest.log" 2>&1
  echo "ctest rc=$?: $(( $(date +%s) - t0 )) s; $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
  grep -E "^\s*[0-9]+/[0-9]+ Test.*(Failed|Timeout|Exception)" "$OUT/ctest.log" | head -30
  grep -hE "\[ (MEASURED|INFO) \]" build/Testing/Temporary/LastTest.log | sed 's/\[ MEASURED \] //' | sort -u > "$OUT/measured.txt"
fi
