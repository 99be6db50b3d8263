#!/usr/bin/env bash
# Builds everything and runs the whole test suite (what CI runs).
# Tests that need ../shared (models, llama.cpp references, tokenizer vectors)
# report themselves skipped when it is absent; GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
# A short run of every fuzzer (longer: .ci/fuzz.sh TARGET SECONDS).
if [ -f .ci/fuzz.sh ]; then bash .ci/fuzz.sh all "${FUZZ_SECONDS:-20}"; fi
# vibrant-server's request parser, fuzzed briefly (longer: FUZZ_SECONDS=600 .ci/fuzz-server.sh).
if [ -f .ci/fuzz-server.sh ]; then FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash .ci/fuzz-server.sh; fi
