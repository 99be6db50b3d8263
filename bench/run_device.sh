#!/usr/bin/env bash
# The benchmark on the GPU machine, in one command: builds Vibrant (Release),
# synthesizes Qwen2.5-3B Q4_K_M there (nothing large travels), compiles it,
# and prints vibrant-bench's pp/tg table for the CPU backend (short tests) and
# the CUDA backend (pp512 / tg128, when this build has it; variants: default,
# mmq = --mmq-max-rows 65536, no-fusion, no-graphs), then a per-kernel
# profile of one CUDA run and the card's device-to-device copy bandwidth, then
# the kernel micro-benchmarks (bench/cuda_kernels_benchmark: mat-vec per type,
# prefill matmul, fused elementwise, decode attention; JSON in $RESULTS).
#
# Through the device tool, from the repository root:
#   here, once:  ../shared/device/pack-deps.sh          (writes .devdeps/, git-ignored)
#   optional:    mkdir -p .devdata && cp ../shared/tokenizer/ggml-vocab-qwen2.gguf .devdata/
#                echo /.devdata/ >> .git/info/exclude    (the real Qwen2 vocabulary;
#                without it the vocabulary is synthetic, of the same size: speed is the same)
#   run:         carry [".devdeps", ".devdata"], command: bash bench/run_device.sh
#
# Environment (defaults): PRESET (qwen2.5-3b), TYPE (q4_k_m), REPS (3),
#   CUDA_P (512), CUDA_N (128), CPU_P (64), CPU_N (16), CPU_THREADS (all cores),
#   BUILD (build-device), CMAKE_ARGS (-DCMAKE_BUILD_TYPE=Release
#   -DVIBRANT_BUILD_TESTS=OFF), KERNELS (1; 0 skips the kernel micro-benchmarks),
#   KERNELS_FILTER (all; a --benchmark_filter regex), KERNELS_MIN_TIME (0.2 s per
#   case). With $OUT set (the device tool sets it), the JSON results and the logs
#   are written there too.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${PRESET:-qwen2.5-3b}
TYPE=${TYPE:-q4_k_m}
REPS=${REPS:-3}
CUDA_P=${CUDA_P:-512}
CUDA_N=${CUDA_N:-128}
CPU_P=${CPU_P:-64}
CPU_N=${CPU_N:-16}
CPU_THREADS=${CPU_THREADS:-$(nproc)}
BUILD=${BUILD:-build-device}
KERNELS=${KERNELS:-1}
KERNELS_FILTER=${KERNELS_FILTER:-}
KERNELS_MIN_TIME=${KERNELS_MIN_TIME:-0.2}
read -r -a cmake_args <<<"${CMAKE_ARGS:--DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF}"
RESULTS=${OUT:-$BUILD/bench-results}
WORK=${WORK:-/tmp/vibrant-bench}
mkdir -p "$RESULTS" "$WORK"

if [ -f .devdeps/setup.sh ]; then
  # shellcheck disable=SC1091
  source .devdeps/setup.sh
fi

log() { printf '\n== %s\n' "$*" >&2; }

log "machine"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi"
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
  git log -1 --format='commit %h %s' 2>/dev/null || true
} | tee "$RESULTS/machine.txt" >&2

log "build (Release)"
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja "${cmake_args[@]}" >"$RESULTS/cmake.log" 2>&1 || { tail -50 "$RESULTS/cmake.log"; exit 1; }
ninja -C "$BUILD" vibrantc vibrant-bench >"$RESULTS/build.log" 2>&1 ||
  { tail -50 "$RESULTS/build.log"; exit 1; }
echo "built in $(( $(date +%s) - start )) s" >&2
VIBRANTC=$BUILD/tools/vibrantc/vibrantc
BENCH=$BUILD/tools/vibrant-bench/vibrant-bench

log "synthesize $PRESET $TYPE"
MODEL=$WORK/$PRESET-$TYPE.gguf
vocab=()
if [ -f .devdata/ggml-vocab-qwen2.gguf ]; then vocab=(--vocab-file .devdata/ggml-vocab-qwen2.gguf); fi
"$VIBRANTC" synth --preset "$PRESET" --type "$TYPE" -o "$MODEL" "${vocab[@]}" | tee "$RESULTS/synth.txt" >&2

log "compile"
for dev in cpu cuda; do
  t0=$(date +%s%N)
  if "$VIBRANTC" compile "$MODEL" -o "$WORK/model.$dev.plan" --device "$dev" \
      --ctx-size $(( CUDA_P + CUDA_N )) --max-tokens "$CUDA_P" >"$RESULTS/compile-$dev.log" 2>&1; then
    cat "$RESULTS/compile-$dev.log" >&2
    echo "vibrantc compile --device $dev: $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
  else
    echo "compile for $dev failed (expected while the CUDA backend is not in this build):" >&2
    tail -3 "$RESULTS/compile-$dev.log" >&2
  fi
done

tables=()
log "vibrant-bench, CPU: -p $CPU_P -n $CPU_N -r $REPS -t $CPU_THREADS"
if "$BENCH" -m "$MODEL" --device cpu -p "$CPU_P" -n "$CPU_N" -r "$REPS" -t "$CPU_THREADS" \
    --json-out "$RESULTS/bench-cpu.json" >"$RESULTS/bench-cpu.md" 2>"$RESULTS/bench-cpu.err"; then
  tables+=("$RESULTS/bench-cpu.md")
else
  cat "$RESULTS/bench-cpu.err" >&2
fi

log "vibrant-bench, CUDA: -p $CUDA_P -n $CUDA_N -r $REPS"
for variant in default mmq no-fusion no-graphs; do
  flags=()
  case $variant in
    mmq) flags=(--mmq-max-rows 65536) ;;  # prefill on the quantized tensor-core GEMM
    no-fusion) flags=(--no-fusion) ;;
    no-graphs) flags=(--no-graphs) ;;
  esac
  if "$BENCH" -m "$MODEL" --device cuda -p "$CUDA_P" -n "$CUDA_N" -r "$REPS" "${flags[@]}" \
      --json-out "$RESULTS/bench-cuda-$variant.json" >"$RESULTS/bench-cuda-$variant.md" \
      2>"$RESULTS/bench-cuda-$variant.err"; then
    tables+=("$RESULTS/bench-cuda-$variant.md")
  else
    echo "CUDA ($variant) not run: $(tail -1 "$RESULTS/bench-cuda-$variant.err")" >&2
    break
  fi
done

if [ -f "$RESULTS/bench-cuda-default.md" ]; then
  log "CUDA per-kernel profile (VIBRANT_CUDA_PROFILE=1: direct launches, events around each kernel)"
  VIBRANT_CUDA_PROFILE=1 "$BENCH" -m "$MODEL" --device cuda -p "$CUDA_P" -n "$CUDA_N" -r 1 \
    --no-warmup >/dev/null 2>"$RESULTS/cuda-profile.txt" || true
  grep -A200 '^vibrant cuda profile' "$RESULTS/cuda-profile.txt" >&2 || tail -5 "$RESULTS/cuda-profile.txt" >&2

  log "device-to-device copy bandwidth (the roofline's denominator), through PyTorch"
  python3 - <<'PY' 2>&1 | tee "$RESULTS/d2d-bandwidth.txt" >&2 || true
import torch
n = 1 << 30
x = torch.empty(n, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
reps = 20
start.record()
for _ in range(reps):
    y.copy_(x)
end.record()
torch.cuda.synchronize()
ms = start.elapsed_time(end) / reps
print(f"d2d copy of 1 GiB: {ms:.3f} ms = {2 * n / ms / 1e6:.0f} GB/s read+written "
      f"({n / ms / 1e6:.0f} GB/s each way)")
PY
fi

if [ "$KERNELS" = 1 ]; then
  log "kernel micro-benchmarks: cuda_kernels_benchmark (min time $KERNELS_MIN_TIME s per case)"
  if ninja -C "$BUILD" cuda_kernels_benchmark >>"$RESULTS/build.log" 2>&1; then
    filter=()
    if [ -n "$KERNELS_FILTER" ]; then filter=(--benchmark_filter="$KERNELS_FILTER"); fi
    "$BUILD/bench/cuda_kernels_benchmark" --benchmark_format=console \
      --benchmark_out="$RESULTS/cuda-kernels.json" --benchmark_out_format=json \
      --benchmark_min_time="$KERNELS_MIN_TIME" "${filter[@]}" 2>&1 |
      tee "$RESULTS/cuda-kernels.txt" >&2 || true
  else
    echo "cuda_kernels_benchmark not built (no CUDA toolkit in this build?):" >&2
    tail -3 "$RESULTS/build.log" >&2
  fi
fi

log "results"
for t in "${tables[@]}"; do
  echo "### $(basename "$t" .md)"
  echo
  cat "$t"
  echo
done
if [ -f "$RESULTS/d2d-bandwidth.txt" ]; then cat "$RESULTS/d2d-bandwidth.txt"; fi
if [ -f "$RESULTS/cuda-kernels.txt" ]; then
  echo
  sed -n '/^## summary/,$p' "$RESULTS/cuda-kernels.txt"
fi
