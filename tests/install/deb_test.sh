#!/usr/bin/env bash
# deb_test: builds the .deb (cpack -G DEB) from BUILD_DIR and checks what a
# Debian user relies on:
#   1. the control data: Maintainer is a real address; Depends names fuse3
#      and the package of every shared library the binaries link
#      (readelf NEEDED -> dpkg -S on this machine), and nothing the binaries
#      do not link (libinih1 only once something uses inih), but libcurl4:
#      loaded by the https feed transport, linked by no binary; every file
#      under /etc is a conffile; the copyright and changelog are there; the
#      man pages are those of docs/man, each gzipped in its section;
#   2. lintian: no errors (its whole output is printed);
#   3. in a clean Debian 12 root (debootstrap --variant=minbase bookworm,
#      cached as a tarball in $CRYPTEX_DEB_ROOT_CACHE): `apt-get install
#      ./cryptex.deb` pulls in what it needs; the postinst made
#      /etc/cryptex/keys and /var/lib/cryptex root-owned 0755; `cryptex
#      --help`; the sample tree (examples/sample-tree) is sealed, verified
#      against /etc/cryptex/keys, and mounted three ways from the installed
#      binaries -- cryptexfs, `mount -t fuse.cryptexfs`, and an fstab line
#      (`mount -T FSTAB DIR`) -- each serving the tree byte for byte;
#      `dpkg --purge cryptex` leaves no file of ours.
# The root runs in a private mount namespace (unshare -m) with /proc
# mounted and /dev/fuse bound in. Needs root and /dev/fuse.
# Exit 77 (skipped) only when the root cannot be made and the network is
# unreachable; with CI set (not "false"/"0"), any other reason it cannot run
# (no debootstrap, no lintian, not root) is a failure.
# usage: deb_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(realpath "$1") src=$(realpath "$2")
cache=${CRYPTEX_DEB_ROOT_CACHE:-/var/cache/cryptex-ci/bookworm-minbase.tar}
mirror=${CRYPTEX_DEB_MIRROR:-http://deb.debian.org/debian}
in_ci() { case "${CI:-}" in "" | false | 0) return 1 ;; *) return 0 ;; esac; }
skip() { # REASON: skip, or fail under CI
  if in_ci; then echo "deb_test: FAIL (CI=$CI): $*" >&2; exit 1; fi
  echo "deb_test: SKIPPED: $*" >&2; exit 77
}
fail=0
bad() { echo "deb_test: $*" >&2; fail=1; }
[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, mounts)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
for tool in cpack dpkg-deb readelf unshare chroot; do
  command -v $tool >/dev/null || skip "no $tool (scripts/deps.sh installs it)"
done

work=$(mktemp -d /var/tmp/cryptex-deb-test.XXXXXX)
cleanup() {
  # A mount left by a failed step lives in the private namespace and died
  # with it; only the files remain.
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. build the package and check its control data -----------------------
(cd "$build" && cpack -G DEB -B "$work/pkg" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; echo "deb_test: cpack -G DEB failed" >&2; exit 1; }
deb=$(ls "$work"/pkg/cryptex_*.deb)
echo "deb_test: built ${deb##*/}"
dpkg-deb -f "$deb" Package Version Architecture Maintainer Depends
maint=$(dpkg-deb -f "$deb" Maintainer)
case $maint in *@localhost* | "") bad "Maintainer '$maint' is not a real address" ;; esac
depends=$(dpkg-deb -f "$deb" Depends)
dep_names=$(tr ',|' '\n\n' <<<"$depends" | sed 's/^ *//; s/[ (:].*//' | sort -u)
has_dep() { grep -qx "$1" <<<"$dep_names"; }
has_dep fuse3 || bad "Depends lacks fuse3 (mount.fuse3, fusermount3): $depends"
dpkg-deb -x "$deb" "$work/data"
dpkg-deb -e "$deb" "$work/control"
needed_pkgs=""
for bin in "$work/data/usr/bin/"*; do
  for lib in $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    # The package that ships the library the dynamic linker would load
    # (asked by both names a merged /usr gives it).
    path=$(ldd "$bin" | awk -v l="$lib" '$1 == l {print $3; exit}')
    pkg=""
    for p in "$path" "${path#/usr}" "/usr$path"; do
      [ -n "$p" ] || continue
      pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$pkg" ] && break
    done
    [ -n "$pkg" ] || { bad "${bin##*/} links $lib, which no package on this machine owns"; continue; }
    needed_pkgs+="$pkg"$'\n'
    has_dep "$pkg" || bad "${bin##*/} links $lib ($pkg) but Depends lacks $pkg: $depends"
  done
done
# What the binaries must link today (libdivsufsort3: cryptex mkpatch's delta
# encoder).
for pkg in libfuse3-3 libzstd1 libssl3 libdivsufsort3; do
  has_dep "$pkg" || bad "Depends lacks $pkg: $depends"
done
# libcurl is loaded by the https feed transport when it is first used
# (feed/curl_api.h), never linked: no binary names it, Depends does.
has_dep libcurl4 || bad "Depends lacks libcurl4 (the https feed transport loads libcurl.so.4): $depends"
for bin in "$work/data/usr/bin/"*; do
  readelf -d "$bin" | grep -q 'Shared library: \[libcurl' && bad "${bin##*/} links libcurl"
done
if has_dep libinih1 && ! grep -qx libinih1 <<<"$needed_pkgs"; then
  bad "Depends names libinih1 but no binary links libinih"
fi
etc_files=$(cd "$work/data" && { find etc -type f 2>/dev/null || true; } | sed 's|^|/|' | sort)
conffiles=$(sort "$work/control/conffiles" 2>/dev/null || true)
missing=$(comm -23 <(printf '%s\n' $etc_files) <(printf '%s\n' $conffiles) | sed '/^$/d')
[ -z "$missing" ] || bad "files under /etc that are not conffiles: $missing"
for f in copyright changelog.gz; do
  [ -f "$work/data/usr/share/doc/cryptex/$f" ] || bad "no /usr/share/doc/cryptex/$f"
done
# Every man page of docs/man, compressed (deb-prebuild.cmake), and no other.
want_pages=$(cd "$src/docs/man" && for p in *.[1-9]; do echo "man${p##*.}/$p.gz"; done | sort)
have_pages=$(cd "$work/data/usr/share/man" 2>/dev/null && find . -type f | sed 's|^\./||' | sort) || true
[ "$have_pages" = "$want_pages" ] ||
  bad "man pages in the .deb: '$(echo $have_pages)', want '$(echo $want_pages)' (docs/man, gzipped)"

# --- 2. lintian ---------------------------------------------------------------
if command -v lintian >/dev/null; then
  # As nobody (lintian warns when run as root), on a copy nobody can read.
  mkdir -m 0755 "$work/lint"
  install -m 0644 "$deb" "$work/lint/"
  chmod 0755 "$work"
  # Exit 0: no errors; 1: errors (tags at --fail-on error); else it broke.
  lint_rc=0
  HOME=$work/lint setpriv --reuid=65534 --regid=65534 --clear-groups \
    lintian --display-info --tag-display-limit 0 "$work/lint/${deb##*/}" >"$work/lintian.log" 2>&1 ||
    lint_rc=$?
  echo "deb_test: lintian ${deb##*/} (exit $lint_rc):"
  sed 's/^/  /' "$work/lintian.log"
  [ $lint_rc -le 1 ] || bad "lintian did not run (exit $lint_rc, above)"
  if [ $lint_rc -eq 1 ] || grep -q '^E: ' "$work/lintian.log"; then
    bad "lintian reports errors (above)"
  fi
else
  skip "no lintian (scripts/deps.sh installs it)"
fi

# --- 3. a clean Debian 12 root ------------------------------------------------
mirror_host=${mirror#*://}
mirror_host=${mirror_host%%/*}
network_up() { timeout 10 bash -c "exec 3<>/dev/tcp/$mirror_host/80" 2>/dev/null; }

make_root_tarball() {
  command -v debootstrap >/dev/null || skip "no debootstrap (scripts/deps.sh installs it)"
  local tmp_root=$work/bootstrap
  echo "deb_test: debootstrap --variant=minbase bookworm (cached in $cache)"
  if ! debootstrap --variant=minbase bookworm "$tmp_root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2
    network_up || { echo "deb_test: SKIPPED: $mirror_host unreachable, no cached root" >&2; exit 77; }
    bad "debootstrap failed with the network up (above)"
    exit 1
  fi
  rm -f "$tmp_root"/var/cache/apt/archives/*.deb
  mkdir -p "$(dirname "$cache")"
  tar -C "$tmp_root" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
  rm -rf "$tmp_root"
}
# A root older than 30 days is rebuilt (its package lists go stale).
if [ ! -f "$cache" ] || [ -n "$(find "$cache" -mtime +30)" ]; then make_root_tarball; fi
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$cache"
cp "$deb" "$root/tmp/cryptex.deb"
cp -a "$src/examples/sample-tree" "$root/tmp/sample-tree"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# The .debs apt fetches are kept for the next run.
mkdir -p "$(dirname "$cache")/apt-archives/partial"

cat >"$root/tmp/inside.sh" <<'INSIDE'
#!/bin/sh
# Runs inside the clean root. Prints "FAIL: ..." for each failed check.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
fail() { echo "FAIL: $*"; failed=1; }
failed=0
snapshot() { # the files of the root, but the package manager's own state
  find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /var/lib/dpkg \
    -o -path /var/lib/apt -o -path /var/cache -o -path /var/log -o -path /run \) -prune \
    -o -print | sort
}
snapshot >/tmp/before
apt-get update -qq >/tmp/apt.log 2>&1 || echo "apt-get update failed (offline?); using the root's lists"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /tmp/cryptex.deb \
    >>/tmp/apt.log 2>&1; then
  cat /tmp/apt.log; echo "FAIL: apt-get install ./cryptex.deb"; exit 1
fi
echo "installed: $(dpkg-query -W -f '${Package} ${Version} ${Status}' cryptex)"
for d in /etc/cryptex/keys /var/lib/cryptex /var/lib/cryptex/images; do
  m=$(stat -c '%a %U:%G' "$d" 2>/dev/null) || { fail "postinst did not create $d"; continue; }
  [ "$m" = "755 root:root" ] || fail "$d is $m, want 755 root:root"
done
ldd /usr/bin/cryptex /usr/bin/cryptexfs | grep 'not found' && fail "unresolved libraries"
ls /usr/lib/*/libcurl.so.4 >/dev/null 2>&1 ||
  fail "no libcurl.so.4 after the install: the https feed transport could not load it"
cryptex --help | grep -q '^  verify ' || fail "cryptex --help"
cryptexfs --version >/dev/null 2>&1 || fail "cryptexfs --version"
cd /tmp
cryptex keygen -o /tmp/k >/dev/null || fail "cryptex keygen"
cp /tmp/k.pub /etc/cryptex/keys/ci.pub
img=/var/lib/cryptex/images/sample.cryptex
cryptex build /tmp/sample-tree -o $img --key /tmp/k --name sample --version 1 >/dev/null 2>&1 ||
  fail "cryptex build (seal) the sample tree"
cryptex verify $img >/tmp/verify.log 2>&1 || { cat /tmp/verify.log; fail "cryptex verify (trust /etc/cryptex/keys)"; }
check_mount() { # HOW DIR: the tree served at DIR is the sample tree
  if diff -r --no-dereference /tmp/sample-tree "$2" >/tmp/diff.log 2>&1; then
    echo "ok: $1 serves the sample tree"
  else
    head /tmp/diff.log; fail "$1: mounted tree differs from the sample tree"
  fi
  umount "$2" || fail "$1: umount $2"
}
mkdir -p /mnt/a /mnt/b /mnt/c
if cryptexfs $img /mnt/a; then check_mount "cryptexfs IMAGE DIR" /mnt/a; else fail "cryptexfs $img /mnt/a"; fi
if mount -t fuse.cryptexfs -o ro $img /mnt/b; then check_mount "mount -t fuse.cryptexfs" /mnt/b
else fail "mount -t fuse.cryptexfs $img /mnt/b"; fi
echo "$img /mnt/c fuse.cryptexfs ro,nodev,nosuid,nofail,_netdev,trust=/etc/cryptex/keys 0 0" >/tmp/fstab
if mount -T /tmp/fstab /mnt/c; then check_mount "fstab line (mount -T FSTAB DIR)" /mnt/c
else fail "mount -T /tmp/fstab /mnt/c: $(cat /tmp/fstab)"; fi

# What the administrator added goes first, then the package.
rm -f /etc/cryptex/keys/ci.pub $img
dpkg --purge cryptex >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; fail "dpkg --purge cryptex"; }
rmdir /mnt/a /mnt/b /mnt/c
snapshot >/tmp/after
# New paths that no installed package owns are ours (dependencies stay).
comm -13 /tmp/before /tmp/after >/tmp/new
left=""
while read -r p; do
  # (dpkg knows /bin/x or /usr/bin/x as shipped; /usr is merged)
  dpkg -S "$p" >/dev/null 2>&1 || dpkg -S "${p#/usr}" >/dev/null 2>&1 || left="$left $p"
done </tmp/new
[ -z "$left" ] || fail "dpkg --purge cryptex left:$left"
[ $failed -eq 0 ] && echo "ok: purged, nothing of ours left"
exit $failed
INSIDE
chmod +x "$root/tmp/inside.sh"

out=$(unshare -m --propagation private sh -c '
  set -e
  root=$1 archives=$2
  mount -t proc proc "$root/proc"
  for n in null zero full random urandom tty fuse; do
    [ -e "$root/dev/$n" ] || touch "$root/dev/$n"
    mount --bind "/dev/$n" "$root/dev/$n"
  done
  mkdir -p "$root/dev/pts" "$root/dev/shm"
  mount --bind "$archives" "$root/var/cache/apt/archives"
  exec chroot "$root" /tmp/inside.sh
' sh "$root" "$(dirname "$cache")/apt-archives" 2>&1) && rc=0 || rc=$?
sed 's/^/  [root] /' <<<"$out"
if grep -q 'FAIL: apt-get install' <<<"$out" && ! network_up; then
  echo "deb_test: SKIPPED: apt-get install in the clean root failed and $mirror_host is unreachable" >&2
  exit 77
fi
[ $rc -eq 0 ] || bad "in the clean Debian 12 root (above)"
[ $fail -eq 0 ] && echo "deb_test: ${deb##*/} passes lintian, installs, works and purges in a clean Debian 12 root"
exit $fail
