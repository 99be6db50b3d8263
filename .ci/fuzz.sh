#!/usr/bin/env bash
# Fuzzes the GGUF reader (and the writer, by round trip) with libFuzzer under
# ASan and UBSan for ${FUZZ_SECONDS:-30} seconds. Exits non-zero when the
# fuzzer finds a crash, a leak, undefined behaviour or a broken invariant;
# the reproducer is left in ${FUZZ_BUILD_DIR}/artifacts/.
#
#   .ci/fuzz.sh                      # 30 s, as CI runs it
#   FUZZ_SECONDS=600 .ci/fuzz.sh     # longer
#   FUZZ_BUILD_DIR=/tmp/f .ci/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
jobs=${FUZZ_BUILD_JOBS:-2}
cc=${FUZZ_CC:-clang}
cxx=${FUZZ_CXX:-clang++}

if ! command -v "$cxx" >/dev/null; then
  echo "fuzz.sh: $cxx not found (scripts/install-deps.sh installs clang)" >&2
  exit 1
fi

mkdir -p "$build"
# Everything in this build dir is instrumented for coverage and sanitizers;
# only the fuzzer and the seed writer are built.
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
  -DVIBRANT_FUZZ=ON -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF -DVIBRANT_CUDA=OFF \
  >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; exit 1; }
ninja -C "$build" -j"$jobs" gguf_fuzzer gguf_fuzz_seeds

# A fresh seed corpus every run: writer-made files covering every value type
# and several tensor types, plus the bundled model's header. Inputs the
# fuzzer finds interesting accumulate in corpus/ between runs.
seeds="$build/seeds"
corpus="$build/corpus"
artifacts="$build/artifacts"
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$artifacts"
model="$root/tests/data/stories260K.gguf"
if [ -f "$model" ]; then
  "$build/frontends/gguf/gguf_fuzz_seeds" "$seeds" "$model"
else
  "$build/frontends/gguf/gguf_fuzz_seeds" "$seeds"
fi

echo "fuzz.sh: fuzzing the GGUF reader for ${seconds}s" >&2
set +e
"$build/frontends/gguf/gguf_fuzzer" "$corpus" "$seeds" \
  -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$build/fuzz.log"
rc=$?
set -e
tail -n 25 "$build/fuzz.log" >&2
if [ "$rc" -ne 0 ]; then
  echo "fuzz.sh: the fuzzer failed (exit $rc); reproducers in $artifacts:" >&2
  ls -l "$artifacts" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${seconds}s" >&2
