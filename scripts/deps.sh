#!/usr/bin/env bash
# Installs everything cryptex needs to build, test and run on Debian 12.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git python3
  libfuse3-dev fuse3 libzstd-dev zstd libssl-dev libinih-dev
  libgtest-dev googletest
  nlohmann-json3-dev                                 # cryptex --json output
  cryptsetup-bin fsverity squashfs-tools squashfuse   # oracles and peers
  openssl                                            # the openssl tool: key interop oracle
  strace valgrind                                    # extract_test counts system calls; ls -l under valgrind
  clang-14 libclang-rt-14-dev                        # fuzzing, sanitizers
  clang-format
  libdivsufsort-dev bsdiff time                      # delta encoder; its benchmark
  groff-base                                         # man page lint (tests/install)
  ca-certificates                                    # debian_patch_test: https to snapshot.debian.org
  tzdata                                             # the window policy plugin: IANA time zones
  lintian debootstrap file                           # the .deb: lint, clean-root install (deb_test)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# tests/oracle/debian_patch_test fetches .debs with `apt-get download`, which
# needs the package lists (a fresh container may have none).
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
fi
