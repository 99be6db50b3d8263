#!/usr/bin/env bash
# Fuzzes Vibrant's parsers with libFuzzer under ASan and UBSan.
#
#   .ci/fuzz.sh [TARGET|all] [SECONDS]       # default: all, 20 s each (CI)
#   .ci/fuzz.sh plan 600                      # one target, longer
#   FUZZ_RUNS=10000000 .ci/fuzz.sh ir_text    # a number of inputs instead of a time
#   FUZZ_BUILD_DIR=/tmp/f .ci/fuzz.sh
#
# Targets (each fuzzer's source says what it checks):
#   gguf       the GGUF reader, and the writer by round trip  frontends/gguf/gguf_fuzzer.cc
#   plan       the plan loader, structure-aware (sections re-checksummed),
#              through to the CPU executor                    runtime/plan_fuzzer.cc
#   ir_text    the IR text parser                             ir/ir_text_fuzzer.cc
#   ir_binary  the IR binary deserializer (GRAPH section)     ir/ir_binary_fuzzer.cc
#   tokenizer  the tokenizers, every vocabulary type and pre-tokenizer
#              (long local runs: VIBRANT_FUZZ_VOCAB_DIR=../shared/tokenizer)
#                                                             frontends/tokenizer/tokenizer_fuzzer.cc
#   lower      lowering and the compile pipeline              frontends/lower/lower_fuzzer.cc
#   chat       chat template recognition (tokenizer.chat_template) and
#              rendering                                      frontends/chat/chat_template_fuzzer.cc
#
# Seeds: the committed tests/fuzz/seeds/TARGET/, plus fresh ones written by
# tests/fuzz/fuzz_seeds and frontends/gguf/gguf_fuzz_seeds at every run.
# Inputs the fuzzer finds interesting accumulate in BUILD/corpus/TARGET/.
# Exits non-zero when a fuzzer finds a crash, a leak, undefined behaviour or a
# broken invariant; the reproducer is left in BUILD/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${1:-all}
seconds=${2:-${FUZZ_SECONDS:-20}}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_BUILD_JOBS:-2}
cc=${FUZZ_CC:-clang}
cxx=${FUZZ_CXX:-clang++}
all_targets=(gguf plan ir_text ir_binary tokenizer lower chat)

if [ "$target" = all ]; then
  targets=("${all_targets[@]}")
else
  case " ${all_targets[*]} " in
    *" $target "*) targets=("$target") ;;
    *) echo "fuzz.sh: unknown target '$target' (one of: ${all_targets[*]}, all)" >&2; exit 2 ;;
  esac
fi
if ! command -v "$cxx" >/dev/null; then
  echo "fuzz.sh: $cxx not found (scripts/install-deps.sh installs clang)" >&2
  exit 1
fi

mkdir -p "$build"
# Everything in this build dir is instrumented for coverage and sanitizers;
# only the fuzzers and the seed writers are built.
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
  -DVIBRANT_FUZZ=ON -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF -DVIBRANT_CUDA=OFF \
  >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; exit 1; }
fuzzers=()
for t in "${targets[@]}"; do
  case "$t" in
    chat) fuzzers+=(chat_template_fuzzer) ;;
    *) fuzzers+=("${t}_fuzzer") ;;
  esac
done
ninja -C "$build" -j"$jobs" "${fuzzers[@]}" fuzz_seeds gguf_fuzz_seeds

# Fresh seeds every run (the committed ones may predate a format change).
fresh="$build/seeds"
rm -rf "$fresh"
mkdir -p "$fresh/gguf" "$fresh/plan" "$fresh/ir_text" "$fresh/ir_binary" "$fresh/tokenizer" "$fresh/lower" \
  "$fresh/chat"
"$build/tests/fuzz/fuzz_seeds" "$fresh"
model="$root/tests/data/stories260K.gguf"
"$build/frontends/gguf/gguf_fuzz_seeds" "$fresh/gguf" "$model"

binary_of() {
  case "$1" in
    gguf) echo "$build/frontends/gguf/gguf_fuzzer" ;;
    plan) echo "$build/runtime/plan_fuzzer" ;;
    ir_text) echo "$build/ir/ir_text_fuzzer" ;;
    ir_binary) echo "$build/ir/ir_binary_fuzzer" ;;
    tokenizer) echo "$build/frontends/tokenizer/tokenizer_fuzzer" ;;
    lower) echo "$build/frontends/lower/lower_fuzzer" ;;
    chat) echo "$build/frontends/chat/chat_template_fuzzer" ;;
  esac
}

failed=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seed_dirs=("$fresh/$t")
  [ -d "$root/tests/fuzz/seeds/$t" ] && seed_dirs+=("$root/tests/fuzz/seeds/$t")
  [ "$t" = ir_text ] && seed_dirs+=("$root/passes/testdata")
  limit=(-max_total_time="$seconds")
  what="${seconds}s"
  if [ -n "${FUZZ_RUNS:-}" ]; then
    limit=(-runs="$FUZZ_RUNS")
    what="$FUZZ_RUNS inputs"
  fi
  echo "fuzz.sh: fuzzing $t for $what" >&2
  set +e
  # cuda plans (their DISPATCH sections) reach 200 KB; other inputs stay small.
  max_len=131072
  [ "$t" = plan ] && max_len=262144
  "$(binary_of "$t")" "$corpus" "${seed_dirs[@]}" "${limit[@]}" \
    -max_len="$max_len" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" 2>"$build/fuzz-$t.log"
  rc=$?
  set -e
  tail -n 12 "$build/fuzz-$t.log" >&2
  if [ "$rc" -ne 0 ]; then
    echo "fuzz.sh: $t: the fuzzer failed (exit $rc); log $build/fuzz-$t.log, reproducers in $artifacts:" >&2
    ls -l "$artifacts" >&2
    failed=1
  else
    echo "fuzz.sh: $t: no crash in $what" >&2
  fi
done
exit "$failed"
