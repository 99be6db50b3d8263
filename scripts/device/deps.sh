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
