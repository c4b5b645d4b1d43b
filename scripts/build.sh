#!/usr/bin/env bash
# Configures and builds cryptex into ./build (release with debug info).
# Usage: scripts/build.sh [TARGET...]   (default: everything, tests included;
#        the demo builds only `cryptex` and `cryptexfs`)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCRYPTEX_WERROR=ON >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
