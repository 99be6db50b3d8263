#!/usr/bin/env bash
# Installs the Debian packages Vibrant builds against, when they are missing.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
pkgs=(cmake ninja-build g++ clang libclang-rt-dev libabsl-dev libgtest-dev libgmock-dev googletest
      libbenchmark-dev libpcre2-dev nlohmann-json3-dev pkg-config libedit-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
