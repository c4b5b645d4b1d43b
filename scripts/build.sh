#!/usr/bin/env bash
# Configures and builds cryptex into ./build as Debian packages it: the
# Release build type (-O3) with dpkg-buildflags' flags (-g, hardening:
# -D_FORTIFY_SOURCE=2, -fstack-protector-strong, -z relro), plus -Werror.
# The test suite runs against exactly these binaries, and CI's release job
# builds its .deb from them (docs/TESTING.md).
# Usage: scripts/build.sh [TARGET...]   (default: everything, tests included;
#        the demo builds only `cryptex` and `cryptexfs`)
set -euo pipefail
cd "$(dirname "$0")/.."
# As debhelper's cmake build system passes them: CPPFLAGS into C/CXXFLAGS.
# Given on the command line, not in the environment, so that they also
# replace what an existing build directory cached.
if ! command -v dpkg-buildflags >/dev/null; then
  echo "build.sh: dpkg-buildflags not found: install dpkg-dev (scripts/deps.sh does)" >&2
  exit 1
fi
cppflags=$(dpkg-buildflags --get CPPFLAGS)
ldflags=$(dpkg-buildflags --get LDFLAGS)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCRYPTEX_WERROR=ON \
  -DCMAKE_C_FLAGS="$(dpkg-buildflags --get CFLAGS) $cppflags" \
  -DCMAKE_CXX_FLAGS="$(dpkg-buildflags --get CXXFLAGS) $cppflags" \
  -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" \
  -DCMAKE_MODULE_LINKER_FLAGS="$ldflags" >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
