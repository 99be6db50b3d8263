#!/usr/bin/env bash
# The chat page in headless Chromium (chat_page_test.mjs) against a
# vibrant-server on stories260K; the screenshot is left in
# BUILD_DIR/server-chat-page.png.
#   tests/server/chat_page.sh BUILD_DIR
# Exits 77 (skipped) without node or chromium.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:?usage: chat_page.sh BUILD_DIR}
server="$build/tools/vibrant-server/vibrant-server"
command -v node >/dev/null || { echo "SKIP: node is not installed"; exit 77; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "SKIP: chromium is not installed (scripts/install-deps.sh installs it)"; exit 77; }
work=$(mktemp -d)
export VIBRANT_PLAN_CACHE="$work/plans"
"$server" -m "$root/tests/data/stories260K.gguf" --port 0 -t 2 >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(grep -o '127.0.0.1:[0-9]*' "$work/out" 2>/dev/null | head -1 | cut -d: -f2)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/err"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start"; exit 1; }
node "$here/chat_page_test.mjs" "http://127.0.0.1:$port" "$build/server-chat-page.png" "$browser"
