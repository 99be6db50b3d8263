#!/bin/bash
# GPU sampling, vibrant-run against vibrant-bench, the depth option and the
# roofline report on the GPU machine, in one command. Logs go to $OUT (the
# device tool sets it; default /tmp/vibrant-out).
#
# Through the device tool, from the repository root:
#   here, once:  DEVDEPS_EXTRA="libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
#                libpcre2-posix3" ../shared/device/pack-deps.sh   (.devdeps/, git-ignored;
#                the same .devdeps as scripts/device/check-and-bench.sh)
#   optional:    .devshared (models/ and reference/ of ../shared) for gpu_conformance
#   run:         carry [".devdeps", ".devshared"], command: bash scripts/device/sampling.sh
# Environment: TESTS (1), BENCH (1), DEPTHS (0,4096,16384), REPS (3), BUILD (build-sampling).
# Expected wall time on an H100: build ~3 min, tests ~2 min, benchmarks ~4 min.
#
# What the run should show (predictions written before the first run):
# - cuda.sample.*: all pass. "GPU vs CPU draws" mismatches 0 (or a handful
#   per 1000 draws where u falls within 1e-5 of a cumulative boundary: expf
#   differs by an ulp); chi-squared values near their degrees of freedom,
#   below the printed critical value. Two runs give the same counts (a race
#   would move them).
# - cuda.executor.*, gpu_conformance.*: as before (cuda plans now end in the
#   sample op; its launches are counted like the others), --verify clean.
# - stories260K on the GPU: the same greedy text and the same seeded ids with
#   the sampler on the GPU (default plan) and on the host (--no-gpu-sampling).
# - Qwen2.5-3B Q4_K_M, plan compiled with --ctx-size 4352:
#   * sample kernels per decode step (profile): greedy ~5 us (gather 38 blocks
#     + pick), llama.cpp's defaults ~10-20 us.
#   * vibrant-bench tg128 returning the token >= --tg-logits (the 600 KB logits
#     copy, ~25 us of a ~2.5 ms step: +0.5..1.5 %).
#   * vibrant-run -n 128 (greedy and the default chain) within 5 % of
#     vibrant-bench tg128 of the same plan (before: 337 vs 369, -9 %, from the
#     logits copy and the host's sort of 152k logits); the --no-gpu-sampling
#     plan at the default chain ~8-10 % below, as before.
# - vibrant-bench -d 0,4096,16384 --roofline: per kernel of a decode step the
#   bytes, us, GB/s, % of the copy bandwidth (~3000 GB/s on an H100). Mat-vecs
#   q4_K/q6_K ~45-80 %; attention's share grows with depth (its KV rows);
#   the step at the tg rate ~25-30 % of the copy bandwidth at depth 0.
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
TESTS=${TESTS:-1}
BENCH=${BENCH:-1}
DEPTHS=${DEPTHS:-0,4096,16384}
REPS=${REPS:-3}
B=${BUILD:-build-sampling}
mkdir -p "$OUT"
source scripts/device/deps.sh
[ -d .devshared ] && export VIBRANT_SHARED_DIR=$PWD/.devshared
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git log --oneline -1 2>/dev/null | tee "$OUT/commit.txt"

t0=$(date +%s)
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
targets="vibrantc vibrant-run vibrant-bench"
[ "$TESTS" = 1 ] && targets="$targets cuda_sample_test cuda_executor_test gpu_conformance_test sample_host_test \
  launch_traffic_test gpu_cli_test"
ninja -C $B -j16 $targets > "$OUT/build.log" 2>&1 || { grep -E "error" -A6 "$OUT/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
vc=$B/tools/vibrantc/vibrantc
run=$B/tools/vibrant-run/vibrant-run
bench=$B/tools/vibrant-bench/vibrant-bench
rc=0

if [ "$TESTS" = 1 ]; then
  echo "== GPU sampling tests (2 runs)"
  for i in 1 2; do
    $B/runtime/cuda/cuda_sample_test > "$OUT/cuda_sample_test.$i.log" 2>&1 || { echo "run $i FAILED"; rc=1; }
    grep -E "^\[  (PASSED|FAILED) |Failure" "$OUT/cuda_sample_test.$i.log" | head -10
    grep -h "MEASURED" "$OUT/cuda_sample_test.$i.log" > "$OUT/sample_measured.$i.txt"
  done
  cat "$OUT/sample_measured.1.txt"
  diff -q "$OUT/sample_measured.1.txt" "$OUT/sample_measured.2.txt" > /dev/null \
    && echo "run 2: same counts as run 1" || echo "run 2: counts DIFFER from run 1 (a race?)"
  echo "== other CUDA/GPU tests"
  ctest --test-dir $B -R 'cuda|gpu' -j8 --timeout 600 --output-on-failure > "$OUT/ctest.log" 2>&1 || rc=1
  grep -E "tests passed|tests failed" "$OUT/ctest.log"
  grep -E "^\s*[0-9]+/[0-9]+ Test.*(Failed|Timeout|Exception)" "$OUT/ctest.log" | head -30

  echo "== stories260K: sampler on the GPU vs on the host"
  $vc compile tests/data/stories260K.gguf --device cuda -o /tmp/s-gpu.plan > /dev/null &&
    $vc compile tests/data/stories260K.gguf --device cuda --no-gpu-sampling -o /tmp/s-host.plan > /dev/null || rc=1
  for args in "--temp 0" "--seed 1" "--temp 1.2 --top-k 0 --top-p 0.9 --min-p 0 --seed 7"; do
    $run /tmp/s-gpu.plan -p "Once upon a time" -n 64 $args --json 2> /dev/null | grep '"id"' > /tmp/a.ids
    $run /tmp/s-host.plan -p "Once upon a time" -n 64 $args --json 2> /dev/null | grep '"id"' > /tmp/b.ids
    if cmp -s /tmp/a.ids /tmp/b.ids; then echo "[$args] same $(wc -l < /tmp/a.ids) tokens"; else
      echo "[$args] DIFFER: first at line $(cmp /tmp/a.ids /tmp/b.ids | sed 's/.*line //')"; fi
  done
  $run /tmp/s-gpu.plan -p "Once upon a time" -n 4 --seed 3 --verify=1e-4 2>&1 | tail -3 | tee "$OUT/verify.txt"
fi

if [ "$BENCH" = 1 ]; then
  m=/tmp/qwen2.5-3b-q4_k_m.gguf
  [ -f $m ] || $vc synth --preset qwen2.5-3b --type q4_k_m -o $m > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
  $vc compile $m --device cuda --ctx-size 4352 -o /tmp/q-gpu.plan > /dev/null || exit 1
  $vc compile $m --device cuda --ctx-size 4352 --no-gpu-sampling -o /tmp/q-host.plan > /dev/null || exit 1
  echo "== Qwen2.5-3B Q4_K_M, ctx 4352: vibrant-bench tg128 (token / logits) and vibrant-run -n 128"
  tg() { $bench -m /tmp/q-gpu.plan -p 0 -n 128 -r $REPS "$@" --json |
         python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["runs"][0]["tests"][0]["avg_ts"])'; }
  gen() { $run "$@" -p "Once upon a time" -n 128 --json 2> /dev/null | tail -1 |
          python3 -c 'import json,sys; s=json.load(sys.stdin)["summary"]; print("%.1f %d" % (s["gen_tok_s"], s["generated_tokens"]))'; }
  for round in 1 2; do
    tg_token=$(tg)
    tg_logits=$(tg --tg-logits)
    read -r g_greedy n1 <<< "$(gen /tmp/q-gpu.plan --temp 0)"
    read -r g_chain n2 <<< "$(gen /tmp/q-gpu.plan --seed 1)"
    read -r h_greedy n3 <<< "$(gen /tmp/q-host.plan --temp 0)"
    read -r h_chain n4 <<< "$(gen /tmp/q-host.plan --seed 1)"
    echo "round $round: bench tg128 token $tg_token, logits $tg_logits | run, GPU sampler: greedy $g_greedy ($n1 tokens)," \
         "default chain $g_chain ($n2) | run, host sampler: greedy $h_greedy ($n3), default chain $h_chain ($n4)" |
      tee -a "$OUT/run-vs-bench.txt"
    python3 -c "print('  run / bench tg128: GPU sampler greedy %.3f, chain %.3f; host sampler greedy %.3f, chain %.3f' % tuple(float(x) / $tg_token for x in ('$g_greedy', '$g_chain', '$h_greedy', '$h_chain')))" |
      tee -a "$OUT/run-vs-bench.txt"
  done
  echo "== profile of a decode step (sample kernels)"
  VIBRANT_CUDA_PROFILE=1 $run /tmp/q-gpu.plan -p "Once upon a time" -n 32 --seed 1 2>&1 > /dev/null |
    grep -E "profile|vb_sample" | tee "$OUT/profile-sample.txt"
  echo "== vibrant-bench -d $DEPTHS --roofline"
  $bench -m $m --device cuda -p 512 -n 128 -d $DEPTHS -r $REPS --roofline --json-out "$OUT/roofline.json" 2>&1 |
    tee "$OUT/roofline.txt" | grep -v "^vibrant-bench:"
fi
exit $rc
