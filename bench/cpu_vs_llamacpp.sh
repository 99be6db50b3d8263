#!/usr/bin/env bash
# vibrant-bench beside llama-bench on the same GGUF files, thread count and
# tests, in one command, several rounds, with the machine's load before and
# after each round (the development machines are shared: compare only figures
# of one round, and report the spread over rounds).
#
#   bash bench/cpu_vs_llamacpp.sh [-b BUILD] [-t THREADS] [-p N] [-n N] [-r REPS]
#        [--rounds K] [--isa avx2|avx512|portable] [--exact] [--mem-bw] MODEL.gguf...
#
# llama.cpp comes from ../shared/peers/llama.cpp-cpu-x86.tar.xz (built for the
# development machines' CPUs; $LLAMA_CPU_TARBALL elsewhere), unpacked once into
# /tmp/llama.cpp-cpu-x86.
# Without --exact, --isa or with --isa both, each round also runs vibrant-bench
# capped at AVX2 (VIBRANT_CPU_ISA=avx2), the instruction set llama.cpp's build
# uses, when the machine has AVX-512.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
build="$here/build"
threads=2
prompt=64
gen=16
reps=3
rounds=3
isa=""
exact=""
membw=""
models=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -b) build="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    -p) prompt="$2"; shift 2 ;;
    -n) gen="$2"; shift 2 ;;
    -r) reps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --isa) isa="$2"; shift 2 ;;
    --exact) exact="--exact"; shift ;;
    --mem-bw) membw="--mem-bw"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[[ ${#models[@]} -gt 0 ]] || { echo "no model given" >&2; exit 2; }

peers="${LLAMA_CPU_TARBALL:-$here/../shared/peers/llama.cpp-cpu-x86.tar.xz}"
llama=/tmp/llama.cpp-cpu-x86
if [[ ! -x "$llama/llama-bench" ]]; then
  tar -xJf "$peers" -C /tmp
fi
vb="$build/tools/vibrant-bench/vibrant-bench"
[[ -x "$vb" ]] || { echo "$vb not built (ninja -C $build vibrant-bench)" >&2; exit 1; }

echo "# $(date -u +%FT%TZ) $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')," \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
for round in $(seq 1 "$rounds"); do
  for m in "${models[@]}"; do
    echo "## round $round, $(basename "$m"): load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    LD_LIBRARY_PATH="$llama" "$llama/llama-bench" -m "$m" -p "$prompt" -n "$gen" -t "$threads" \
      -r "$reps" 2>/dev/null | grep -E '^\| (model|qwen|llama)' | sed 's/^/llama.cpp /'
    if [[ -n "$isa" ]]; then
      VIBRANT_CPU_ISA="$isa" "$vb" -m "$m" -p "$prompt" -n "$gen" -t "$threads" -r "$reps" \
        $exact $membw 2>/dev/null | grep -E '^\| (qwen|llama)|reads' | sed "s/^/vibrant($isa) /"
    else
      "$vb" -m "$m" -p "$prompt" -n "$gen" -t "$threads" -r "$reps" $exact $membw 2>/dev/null |
        grep -E '^\| (qwen|llama)|reads' | sed 's/^/vibrant /'
      if grep -q avx512_vnni /proc/cpuinfo && [[ -z "$exact" ]]; then
        VIBRANT_CPU_ISA=avx2 "$vb" -m "$m" -p "$prompt" -n "$gen" -t "$threads" -r "$reps" \
          2>/dev/null | grep -E '^\| (qwen|llama)' | sed 's/^/vibrant(avx2) /'
      fi
    fi
    echo "## load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
