#!/usr/bin/env bash
# install_test: `cmake --install BUILD --prefix /opt/cryptex-test` with
# DESTDIR=a temporary directory, then checks what a user relies on:
#   - cryptex and cryptexfs in bin, executable (0755), and they run
#     (`cryptex --help`, `cryptexfs --version`) from the installed place;
#   - the systemd units' ExecStart names the installed cryptexfs (the prefix
#     given at install time, without DESTDIR), and nothing is left unfilled;
#   - man pages in share/man/man1, man5 and man8, bash completion, docs (0644);
#     the installed man pages render (groff -ww) and pass check_man.py
#     against the installed programs;
#   - the plugin ABI header, the shipped plugins in their
#     directory, and cryptex-plugin.pc: pkg-config gives the installed
#     header's -I and plugin directory, and the installed example plugin
#     (share/doc/cryptex/examples) builds with those flags alone;
#   - the examples: the agent's configuration and the plugin;
#   - nothing is installed outside DESTDIR/PREFIX;
#   - `mount -t fuse.cryptexfs`, and `mount DIR` with an fstab line (a
#     temporary fstab, mount -T), find the installed cryptexfs with no helper
#     of ours: in a private mount namespace the installed bin is bind-mounted
#     on /usr/local/bin (the default prefix; mount(8) resets PATH to
#     /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin and runs
#     /sbin/mount.fuse, which runs `cryptexfs` from that PATH). Needs root,
#     /dev/fuse and unshare(1); exits 77 (skipped) without them.
# usage: install_test.sh BUILD_DIR SOURCE_DIR PLUGIN_DIR
# (PLUGIN_DIR relative to the prefix, as configured)
set -euo pipefail
build=$1 src=$2 plugindir=$3
prefix=/opt/cryptex-test
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
fail=0
bad() { echo "install_test: $*" >&2; fail=1; }

DESTDIR=$dest cmake --install "$build" --prefix "$prefix" >"$dest.log" 2>&1 ||
  { cat "$dest.log" >&2; rm -f "$dest.log"; exit 1; }
rm -f "$dest.log"
root=$dest$prefix

expect_mode() { # MODE FILE
  if [ ! -f "$root/$2" ]; then bad "$2 not installed"; return; fi
  local m; m=$(stat -c %a "$root/$2")
  [ "$m" = "$1" ] || bad "$2 has mode $m, want $1"
}
expect_mode 755 bin/cryptex
expect_mode 755 bin/cryptexfs
expect_mode 644 lib/systemd/system/cryptex-mount@.service
expect_mode 644 lib/systemd/system/cryptex-image@.service
expect_mode 644 lib/systemd/system/cryptex-agent.service
expect_mode 644 lib/systemd/system/cryptex-agent.timer
expect_mode 644 share/man/man1/cryptex.1
expect_mode 644 share/man/man8/cryptexfs.8
expect_mode 644 share/man/man5/cryptex.conf.5
expect_mode 644 share/bash-completion/completions/cryptex
for doc in README.md DESIGN.md FORMAT.md STORE.md POLICY.md FEED.md cryptexfs.md copyright changelog.gz; do expect_mode 644 "share/doc/cryptex/$doc"; done

for ex in cryptex.conf policy-plugin/README.md policy-plugin/weekend.c; do
  expect_mode 644 "share/doc/cryptex/examples/$ex"
done
expect_mode 644 include/cryptex/policy_plugin.h
expect_mode 644 share/pkgconfig/cryptex-plugin.pc
for plugin in approve auto defer health lists revocation rollout window; do
  expect_mode 644 "$plugindir/$plugin.so"
done

# A plugin author's build, from the installed files only. The sysroot maps
# the .pc's PREFIX paths into DESTDIR; the variable is the path on the target.
pc() { PKG_CONFIG_PATH=$root/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest pkg-config "$@"; }
if pc --exists cryptex-plugin; then
  cflags=$(pc --cflags cryptex-plugin | sed "s/ *$//")
  [ "$cflags" = "-I$root/include" ] || bad "pkg-config --cflags cryptex-plugin is '$cflags', want -I$root/include"
  dir=$(PKG_CONFIG_PATH=$root/share/pkgconfig pkg-config --variable=plugindir cryptex-plugin)
  [ "$dir" = "$prefix/$plugindir" ] || bad "cryptex-plugin plugindir is '$dir', want $prefix/$plugindir"
  # shellcheck disable=SC2086  # cflags: words
  if cc -shared -fPIC -Wall -Wextra -Werror $cflags -o "$dest/weekend.so" \
    "$root/share/doc/cryptex/examples/policy-plugin/weekend.c" 2>"$dest/cc.log"; then
    nm -D --defined-only "$dest/weekend.so" | grep -q ' T cryptex_policy_plugin$' ||
      bad "the example plugin built with cryptex-plugin's flags exports no cryptex_policy_plugin"
  else
    bad "the example plugin does not build with pkg-config --cflags cryptex-plugin: $(cat "$dest/cc.log")"
  fi
  rm -f "$dest/weekend.so" "$dest/cc.log"
else
  bad "pkg-config finds no cryptex-plugin in share/pkgconfig"
fi

stray=$(find "$dest" -mindepth 1 -not -path "$root" -not -path "$root/*" \
  -not -path "$dest/opt" -print)
[ -z "$stray" ] || bad "installed outside the prefix: $stray"

"$root/bin/cryptex" --help | grep -q '^  verify ' || bad "installed cryptex --help lists no verify"
"$root/bin/cryptexfs" --version >/dev/null 2>&1 || bad "installed cryptexfs --version fails"

for unit in "$root"/lib/systemd/system/cryptex-mount@.service \
  "$root"/lib/systemd/system/cryptex-image@.service; do
  [ -f "$unit" ] || continue
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
  case $exec_start in
    "$prefix/bin/cryptexfs "*) ;;
    *) bad "unit ExecStart is '$exec_start', want $prefix/bin/cryptexfs ..." ;;
  esac
  ! grep -n '@[A-Z_]*@' "$unit" >&2 || bad "unit has unsubstituted @VARS@"
  ! grep -n "$dest" "$unit" >&2 || bad "unit names the DESTDIR"
  grep -q "^Documentation=.*$prefix/share/doc/cryptex/cryptexfs.md" "$unit" ||
    bad "unit Documentation= does not name the installed cryptexfs.md"
done

agent_unit=$root/lib/systemd/system/cryptex-agent.service
if [ -f "$agent_unit" ]; then
  [ "$(sed -n 's/^ExecStart=//p' "$agent_unit")" = "$prefix/bin/cryptex agent --once" ] ||
    bad "cryptex-agent.service ExecStart is not '$prefix/bin/cryptex agent --once'"
  ! grep -n '@[A-Z_]*@' "$agent_unit" >&2 || bad "cryptex-agent.service has unsubstituted @VARS@"
fi

python3 "$src/tests/install/check_man.py" "$root/bin/cryptex" "$root/bin/cryptexfs" \
  "$root/share/man/man1/cryptex.1" "$root/share/man/man8/cryptexfs.8" \
  "$root/share/man/man5/cryptex.conf.5" ||
  bad "installed man pages (above)"
for page in man1/cryptex.1 man8/cryptexfs.8 man5/cryptex.conf.5; do
  [ "$(groff -man -Tutf8 "$root/share/man/$page" 2>/dev/null | grep -c .)" -gt 40 ] ||
    bad "groff -man $page renders almost nothing"
done
python3 "$src/tests/install/completion_test.py" "$root/bin/cryptex" \
  "$root/share/bash-completion/completions/cryptex" || bad "installed completion (above)"

mount_via_mount8() {
  local w=$dest/mount8
  mkdir -p "$w/tree" "$w/keys" "$w/mnt"
  echo leaf >"$w/tree/f"
  "$root/bin/cryptex" keygen -o "$w/k" >/dev/null
  cp "$w/k.pub" "$w/keys/"
  "$root/bin/cryptex" build "$w/tree" -o "$w/img.cryptex" --key "$w/k" --name t --version 1 \
    >/dev/null 2>&1 || { bad "installed cryptex build failed"; return; }
  # The fstab line a user writes (docs/PACKAGING.md), read by `mount DIR`
  # from a temporary fstab (mount -T).
  echo "$w/img.cryptex $w/mnt fuse.cryptexfs ro,nodev,nosuid,nofail,_netdev,trust=$w/keys 0 0" \
    >"$w/fstab"
  local out
  out=$(unshare -m --propagation private sh -c "
    mount --bind '$root/bin' /usr/local/bin || exit 9
    PATH=/bin mount -t fuse.cryptexfs -o trust='$w/keys' '$w/img.cryptex' '$w/mnt' || exit 1
    cat '$w/mnt/f'; umount '$w/mnt' || exit 1
    PATH=/bin mount -T '$w/fstab' '$w/mnt' || exit 2
    grep ' $w/mnt .* - fuse.cryptexfs ' /proc/self/mountinfo | grep -q ' ro[, ]' || exit 3
    cat '$w/mnt/f'; umount '$w/mnt'" 2>&1) ||
    bad "mount -t fuse.cryptexfs / fstab line (exit $?) with cryptexfs in /usr/local/bin: $out"
  [ "$out" = $'leaf\nleaf' ] || bad "mount -t fuse.cryptexfs and fstab served '$out', want 'leaf' twice"
}
skipped=0
if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && command -v unshare >/dev/null; then
  mount_via_mount8
else
  echo "install_test: not root, no /dev/fuse or no unshare: mount(8) check skipped" >&2
  skipped=1
fi

[ $fail -ne 0 ] || [ $skipped -eq 0 ] || exit 77
[ $fail -eq 0 ] && echo "install_test: installed tree under DESTDIR$prefix is complete"
exit $fail
