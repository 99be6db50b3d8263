#!/usr/bin/env bash
# The test suite built with AddressSanitizer and UndefinedBehaviorSanitizer
# (GCC, Debian's defaults): every test binary and tool instrumented, the first
# report of either sanitizer fails the test (UBSan does not recover). CI runs
# it after scripts/test.sh (.ci/run).
#
#   scripts/sanitize.sh                      # build-asan, the whole suite
#   SANITIZE_TESTS='cli_|runtime' scripts/sanitize.sh   # a ctest -R subset
#   SANITIZE_EXCLUDE='gpu' scripts/sanitize.sh          # a ctest -E filter
#   SANITIZE_TARGETS='cli_hardening_test plan_validate_test' SANITIZE_TESTS='cli_hardening|runtime' \
#     scripts/sanitize.sh                    # build only these targets (a quick local run)
#
# The suite under the sanitizers is slower than the plain one (ASan's checks,
# no vectorized kernels' speed), so the build uses -O1 and ctest gets a
# longer per-test timeout. GPU tests skip without a GPU here as in the plain
# build; scripts/cuda-sanitize.sh runs compute-sanitizer over them on the GPU
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SANITIZE_BUILD_DIR:-build-asan}
jobs=${SANITIZE_JOBS:-$(nproc)}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

t0=$(date +%s)
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" \
  -DVIBRANT_BUILD_BENCH=OFF \
  ${CMAKE_CXX_COMPILER_LAUNCHER:+-DCMAKE_CXX_COMPILER_LAUNCHER=$CMAKE_CXX_COMPILER_LAUNCHER} \
  >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" ${SANITIZE_TARGETS:+--target $SANITIZE_TARGETS}
t1=$(date +%s)
echo "sanitize.sh: build $((t1 - t0)) s" >&2

# No binary may need the NVIDIA driver to start (CUDA is dlopen'ed): a
# sanitizer link keeps every library it is given, which once pulled in
# libcuda.so.1 from the CUDA stubs (codegen/CMakeLists.txt).
bad=0
while IFS= read -r f; do
  if readelf -d "$f" 2>/dev/null | grep -q 'NEEDED.*libcuda\.so'; then
    echo "sanitize.sh: $f needs libcuda.so (links the CUDA driver)" >&2
    bad=1
  fi
done < <(find "$build" -type f -perm -u+x -not -name '*.so*' -not -path '*/CMakeFiles/*')
[ "$bad" -eq 0 ] || exit 1

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
# Tests that measure memory (the server's load test) read this: RSS under
# ASan is the quarantine's, and LeakSanitizer does the leak check instead.
export VIBRANT_SANITIZED=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
args=(--test-dir "$build" --output-on-failure -j "$jobs" --timeout 1500)
[ -n "${SANITIZE_TESTS:-}" ] && args+=(-R "$SANITIZE_TESTS")
[ -n "${SANITIZE_EXCLUDE:-}" ] && args+=(-E "$SANITIZE_EXCLUDE")
set +e
ctest "${args[@]}"
rc=$?
set -e
echo "sanitize.sh: tests $(($(date +%s) - t1)) s, exit $rc" >&2
exit "$rc"
