#!/usr/bin/env bash
# CPU time per token of llama.cpp and of Vibrant's CPU backend on one GGUF,
# robust to a shared machine's load: the task-clock (perf stat) of a run with
# R+3 repetitions minus that of a run with R repetitions is the CPU time of 3
# repetitions (model load, compile and warm-up cancel out). Figures are
# tokens per CPU-second; with -t 1 no thread waits for another (spin-waits
# would count as CPU time on a loaded machine), so this measures the kernels.
#
#   bash bench/cpu_cputime_vs_llamacpp.sh [-b BUILD] [-t THREADS] MODEL.gguf pp|tg N
#
# llama.cpp comes from ../shared/peers/llama.cpp-cpu-x86.tar.xz (built with
# AVX2 for the development machines), unpacked once into /tmp; Vibrant runs
# twice, with the widest ISA the machine has and capped at AVX2
# (VIBRANT_CPU_ISA=avx2, llama.cpp's instruction set).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="$here/build"
threads=1
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in
    -b) build="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -eq 3 ]] || { sed -n '2,15p' "$0"; exit 2; }
m=$1 kind=$2 n=$3
[[ "$kind" == pp || "$kind" == tg ]] || { echo "test must be pp or tg" >&2; exit 2; }
llama=/tmp/llama.cpp-cpu-x86
if [[ ! -x "$llama/llama-bench" ]]; then
  tar -xJf "${LLAMA_CPU_TARBALL:-$here/../shared/peers/llama.cpp-cpu-x86.tar.xz}" -C /tmp
fi
vb="$build/tools/vibrant-bench/vibrant-bench"
[[ -x "$vb" ]] || { echo "$vb not built (ninja -C $build vibrant-bench)" >&2; exit 1; }
if [[ "$kind" == pp ]]; then test_args="-p $n -n 0"; else test_args="-p 0 -n $n"; fi
clock() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | grep task-clock | cut -d, -f1; }
echo "# $(date -u +%FT%TZ) $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')," \
     "$(basename "$m"), $kind$n, $threads thread(s), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for engine in llama.cpp vibrant vibrant-avx2; do
  for r in 1 4; do
    case $engine in
      llama.cpp) c=$(LD_LIBRARY_PATH=$llama clock "$llama/llama-bench" -m "$m" -t "$threads" -r $r $test_args) ;;
      vibrant) c=$(clock "$vb" -m "$m" -t "$threads" -r $r $test_args) ;;
      vibrant-avx2) c=$(VIBRANT_CPU_ISA=avx2 clock "$vb" -m "$m" -t "$threads" -r $r $test_args) ;;
    esac
    eval "c$r=$c"
  done
  awk -v a="$c1" -v b="$c4" -v n="$n" -v e="$engine" -v k="$kind" \
    'BEGIN { ms = (b - a) / 3; printf "%-13s %s%d: %9.1f ms of CPU per run = %7.2f tokens per CPU-second\n", e, k, n, ms, n / (ms / 1000) }'
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
