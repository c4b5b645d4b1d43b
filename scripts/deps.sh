#!/usr/bin/env bash
# Installs everything cryptex needs to build, test and run on Debian 12.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git python3
  dpkg-dev                                           # dpkg-buildflags: the packager's flags (scripts/build.sh)
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
  libcurl4-openssl-dev                               # the feed's https transport (feed/transport_https.cc)
  nginx                                              # /usr/sbin/nginx (with ssl): the feed tests' loopback server
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  # The nginx package starts a system nginx on port 80 when installed. The
  # tests start their own (feed/testing/loopback.h) and need no service: a
  # policy-rc.d for the time of the install keeps nginx (only) from being
  # started, with or without systemd, unless the machine already has one.
  policy=/usr/sbin/policy-rc.d; own_policy=""
  if [ ! -e "$policy" ]; then
    own_policy=1
    trap '$SUDO rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# scripts/deps.sh: do not start nginx while installing it\nfor a; do [ "$a" = nginx ] && exit 101; done\nexit 0\n' \
      | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$own_policy" ]; then $SUDO rm -f "$policy"; trap - EXIT; fi
fi
# tests/oracle/debian_patch_test fetches .debs with `apt-get download`, which
# needs the package lists (a fresh container may have none).
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
fi
