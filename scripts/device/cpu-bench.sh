#!/bin/bash
# One device call (the `device` tool) for the CPU backend on the device
# machine's cores: Release build, the 0.5B and 3B Q4_K_M presets, vibrant-bench
# beside llama-bench (the x86 CPU build of ../shared/peers) at THREADS threads
# (default: the physical cores), two rounds, read bandwidth measured in the
# same run; logs under $OUT.
#   carry: .devdeps (../shared/device/pack-deps.sh) and .devpeers holding
#   llama.cpp-cpu-x86.tar.xz (mkdir -p .devpeers && cp ../shared/peers/llama.cpp-cpu-x86.tar.xz .devpeers/).
# Env: THREADS, P (64), N (16), REPS (3).
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vibrant-out}
mkdir -p "$OUT"
[ -f .devdeps/setup.sh ] && source .devdeps/setup.sh
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|Flags" | cut -c1-200 | tee "$OUT/cpu.txt"
cmake -S . -B build-cpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF > "$OUT/cmake.log" 2>&1 ||
  { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build-cpu -j16 vibrantc vibrant-bench > "$OUT/build.log" 2>&1 ||
  { grep -E "error" -A6 "$OUT/build.log" | head -40; exit 1; }
vc=build-cpu/tools/vibrantc/vibrantc
for p in qwen2.5-0.5b qwen2.5-3b; do
  $vc synth --preset $p --type q4_k_m -o /tmp/$p-q4_k_m.gguf > /dev/null 2>&1 || echo "synth $p failed"
done
THREADS=${THREADS:-$(lscpu -p=core,socket | grep -v '^#' | sort -u | wc -l)}
LLAMA_CPU_TARBALL=$PWD/.devpeers/llama.cpp-cpu-x86.tar.xz bash bench/cpu_vs_llamacpp.sh -b build-cpu \
  -t "$THREADS" -p "${P:-64}" -n "${N:-16}" -r "${REPS:-3}" --rounds 2 --mem-bw \
  /tmp/qwen2.5-0.5b-q4_k_m.gguf /tmp/qwen2.5-3b-q4_k_m.gguf 2>&1 | tee "$OUT/cpu-vs-llamacpp.txt"
