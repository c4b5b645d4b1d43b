#!/usr/bin/env bash
# Release job CI runs after the test suite (docs/TESTING.md). The README's
# build (scripts/build.sh) is already what a Debian packager builds --
# CMAKE_BUILD_TYPE=Release (-O3) with Debian's default flags
# (dpkg-buildflags: -g -ffile-prefix-map -fstack-protector-strong -Wformat
# -Werror=format-security -D_FORTIFY_SOURCE=2, -Wl,-z,relro), plus -Werror
# -- and the whole suite ran against it. What this job adds is deb_test: the
# .deb cpack makes from that build passes lintian and installs, seals,
# verifies, mounts (cryptexfs, mount -t fuse.cryptexfs, an fstab line) and
# purges in a clean Debian 12 root. It fails if deb_test is skipped, unless
# the Debian mirror is unreachable (deb_test says so).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
t0=$(date +%s)
./scripts/build.sh  # nothing to do after scripts/test.sh
# Registers deb_test; every other setting stays as build.sh cached it.
cmake -S . -B build -DCRYPTEX_DEB_TEST=ON >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
ctest --test-dir build --output-on-failure -R '^deb_test$' --timeout 900 2>&1 | tee "$log"
echo "ci-release: deb_test after $(( $(date +%s) - t0 )) s"
# A failure failed the pipe above. It must have run (or been skipped for the
# reason it prints), not been left out.
grep -Eq 'deb_test \.+ *(Passed|\*\*\*Skipped)' "$log" || {
  echo "ci-release: deb_test did not run" >&2
  exit 1
}
