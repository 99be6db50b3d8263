#!/usr/bin/env bash
# Fuzzes vibrant-server's request parsing (tools/vibrant-server/request_fuzzer.cc)
# with libFuzzer under ASan and UBSan for ${FUZZ_SECONDS:-20} seconds, from
# seeds of valid and broken requests. Exits non-zero on a crash, a leak,
# undefined behaviour or a broken invariant (reproducer in BUILD/artifacts-server/).
#   .ci/fuzz-server.sh            FUZZ_SECONDS=600 .ci/fuzz-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
cxx=${FUZZ_CXX:-clang++}
command -v "$cxx" >/dev/null || { echo "fuzz-server.sh: $cxx not found" >&2; exit 1; }
mkdir -p "$build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="${FUZZ_CC:-clang}" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
  -DVIBRANT_FUZZ=ON -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF -DVIBRANT_CUDA=OFF \
  >"$build/configure-server.log" 2>&1 || { cat "$build/configure-server.log" >&2; exit 1; }
ninja -C "$build" -j"${FUZZ_BUILD_JOBS:-2}" server_request_fuzzer
seeds="$build/seeds-server"
corpus="$build/corpus-server"
artifacts="$build/artifacts-server"
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$artifacts"
i=0
while IFS= read -r line; do
  i=$((i + 1))
  printf '%s' "$line" >"$seeds/seed-$i.json"
done <<'SEEDS'
{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"temperature":0.7,"top_p":0.9,"max_tokens":16,"stream":true,"stream_options":{"include_usage":true},"stop":["\n","END"],"seed":1,"logprobs":true,"top_logprobs":2,"logit_bias":{"5":-100}}
{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"n":1,"presence_penalty":0.5,"frequency_penalty":-0.5,"top_k":40,"min_p":0.05}
{"prompt":"Once upon a time","max_tokens":8,"logprobs":3,"echo":false,"stop":"x","ignore_eos":true}
{"prompt":[1,403,407],"temperature":0,"seed":18446744073709551615}
{"prompt":["x"],"suffix":null,"best_of":1,"user":"u","repeat_penalty":1.1,"repeat_last_n":-1}
{"messages":[{"role":"assistant","content":null,"refusal":null}],"response_format":{"type":"text"},"tools":[],"tool_choice":"none"}
{"messages": [{"role": "user", "content": "\u00e9\ud83d\ude00"}], "max_tokens": 1e3}
SEEDS
echo "fuzz-server.sh: fuzzing the request parser for ${seconds}s" >&2
"$build/tools/vibrant-server/server_request_fuzzer" "$corpus" "$seeds" -max_total_time="$seconds" \
  -max_len=65536 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$artifacts/" \
  2>"$build/fuzz-server.log" || { tail -n 40 "$build/fuzz-server.log" >&2; exit 1; }
tail -n 8 "$build/fuzz-server.log" >&2
echo "fuzz-server.sh: no crash in ${seconds}s" >&2
