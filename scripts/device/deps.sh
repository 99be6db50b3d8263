# Sourced by the device scripts, from the repository root: the carried
# dependencies (.devdeps, made here once by ../shared/device/pack-deps.sh with
# DEVDEPS_EXTRA="libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
# libpcre2-posix3") unpacked where CMake and pkg-config find them. PCRE2's
# pkg-config files name /usr as their prefix; they are pointed at /opt/devdeps.
source .devdeps/setup.sh
for f in .devdeps/libpcre2*.deb; do [ -f "$f" ] && dpkg -x "$f" /opt/devdeps; done
for pc in /opt/devdeps/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-*.pc; do
  [ -f "$pc" ] && sed -i "s#^prefix=.*#prefix=/opt/devdeps/usr#" "$pc"
done
export PKG_CONFIG_PATH=/opt/devdeps/usr/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}

# build_tools LOG TARGET...: a Release build of the tools alone (no tests, no
# benchmarks) into build/, its time appended to LOG; exits on failure.
build_tools() {
  local log=$1; shift
  local t0=$(date +%s)
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIBRANT_BUILD_TESTS=OFF -DVIBRANT_BUILD_BENCH=OFF \
    > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  ninja -C build -j16 "$@" > "$OUT/build.log" 2>&1 || { grep error -A5 "$OUT/build.log" | head -40; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$log"
}

# The peer (../shared/peers, carried as .devpeers): llama.cpp built for sm_90
# in $L when the archive is there.
L=/tmp/llama.cpp-cuda-sm90
[ -f .devpeers/llama.cpp-cuda-sm90.tar.xz ] && [ ! -x $L/llama-bench ] && tar -xJf .devpeers/llama.cpp-cuda-sm90.tar.xz -C /tmp
