#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh cryptex cryptexfs cryptex_plugins
exec ./examples/demo.sh
