#!/usr/bin/env bash
# The main job on the bundled demo model: build, compile stories260K into a plan,
# and generate its story (greedy, so the text is reproducible).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF >/dev/null
cmake --build build-release --target vibrantc vibrant-run
./build-release/tools/vibrantc/vibrantc compile tests/data/stories260K.gguf -o build-release/stories260K.plan
./build-release/tools/vibrant-run/vibrant-run build-release/stories260K.plan -p "Once upon a time" -n 48 --temp 0
echo
