#!/usr/bin/env bash
# Installs the Debian packages Vibrant builds against, when they are missing.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
# libcpp-httplib-dev: vibrant-server's HTTP (cpp-httplib, what llama-server uses);
# chromium: the chat page's test in headless Chromium; curl: the server tests.
pkgs=(cmake ninja-build g++ clang libclang-rt-dev libabsl-dev libgtest-dev libgmock-dev googletest
      libbenchmark-dev libpcre2-dev nlohmann-json3-dev pkg-config libedit-dev libcpp-httplib-dev
      chromium curl)
# Node.js and npm for the server tests' official OpenAI client (Debian's, unless
# a node is already installed, e.g. from NodeSource, which brings its own npm).
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -ne 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The official OpenAI client for tests/server, pinned by its package-lock.json,
# installed once into tests/server/node_modules (the tests themselves never
# reach the network).
server_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/server"
if [ -f "$server_tests/package-lock.json" ] && [ ! -f "$server_tests/node_modules/openai/package.json" ]; then
  echo "install-deps: npm ci in tests/server (the openai client)" >&2
  npm ci --prefix "$server_tests" --no-audit --no-fund --loglevel=error >/dev/null
fi
