#!/usr/bin/env bash
# The cryptex demo: seal the sample component, check it three ways, read it
# without mounting, mount it with cryptexfs (every block verified on read),
# show what happens to a tampered copy, then ship a signed patch in a signed
# feed that the device's policy agent pulls, installs and activates live on
# the running mount, show status and history, revert it, swap the policy to
# "defer" by editing the INI file and show the deferral with its reason, and
# revoke the patch in the feed.
#
# Usage: examples/demo.sh [WORKDIR]   (default: a fresh temporary directory)
# Needs a build in ./build (scripts/build.sh). Run as root for the mount part.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(dirname "$here")"
bin="$top/build/cli/cryptex"
fsbin="$top/build/fs/cryptexfs/cryptexfs"
work="${1:-$(mktemp -d /tmp/cryptex-demo.XXXXXX)}"
mkdir -p "$work"
mnt="$work/mnt"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
  for m in "$mnt" "$work/live" "$work/pinned"; do
    mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m" || true
  done
}
trap cleanup EXIT

cd "$work"
step "1. The vendor makes a signing key; devices trust its public half"
run "$bin" keygen -o vendor.key
mkdir -p trust && cp vendor.key.pub trust/

step "2. Seal the sample component tree into a signed image"
run "$bin" build "$here/sample-tree" -o greeter.cryptex --key vendor.key \
  --name org.example.greeter --version 1.0.0 --release-counter 1 --epoch 1767225600

step "3. Check it: signature, every block, every chunk, every file digest"
run "$bin" verify greeter.cryptex --trust trust

step "4. What is inside, and how to check the tree with a tool we did not write"
run "$bin" inspect greeter.cryptex --trust trust
verity_cmd="$("$bin" inspect greeter.cryptex --trust trust --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["veritysetup_command"])')"
printf '$ %s\n' "$verity_cmd"
eval "$verity_cmd"

step "5. Read it without mounting"
run "$bin" ls greeter.cryptex / -l --trust trust
run "$bin" ls greeter.cryptex /lib -l --trust trust
run "$bin" cat greeter.cryptex /share/doc/greeter/README --trust trust

step "6. Extract it and compare with the source (diff -r, fsverity digest)"
run "$bin" extract greeter.cryptex extracted --trust trust
run diff -r --no-dereference "$here/sample-tree" extracted && echo "identical"
run fsverity digest extracted/lib/libgreet.so.1

if [ -x "$fsbin" ] && [ -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
  step "7. Mount it with cryptexfs: a read-only tree verified block by block"
  mkdir -p "$mnt"
  run "$bin" mount greeter.cryptex "$mnt" -o trust="$work/trust"
  run ls -l "$mnt" "$mnt/lib"
  run "$mnt/bin/greet"
  run diff -r --no-dereference "$here/sample-tree" "$mnt" && echo "mounted tree identical to source"
  if touch "$mnt/new-file" 2>/dev/null; then echo "unexpected: write succeeded"; exit 1; fi
  echo "writes are refused: read-only file system"
  run "$bin" status "$mnt"
  run "$bin" umount "$mnt"
fi

step "8. A tampered copy is caught and named"
cp greeter.cryptex tampered.cryptex
# Flip one byte in the middle of the data region.
python3 - "$work/tampered.cryptex" <<'PY'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(4096 + 1000)
    b = f.read(1)
    f.seek(4096 + 1000)
    f.write(bytes([b[0] ^ 0x40]))
PY
rc=0
"$bin" verify tampered.cryptex --trust trust || rc=$?
if [ "$rc" -ne 3 ]; then echo "unexpected: verify exit status $rc (want 3)"; exit 1; fi
echo "(exit status 3 = integrity failure: the flipped byte was found and named)"

step "9. The vendor fixes the library and ships a signed patch, not a new image"
rm -rf fixed && cp -a "$here/sample-tree" fixed
python3 - fixed/lib/libgreet.so.1 <<'PY'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:  # a few bytes of "code" change, as in a security fix
    f.seek(150000)
    f.write(b"PATCHED")
PY
echo 1.0.1 > fixed/share/doc/greeter/VERSION
touch -r "$here/sample-tree/share/doc/greeter/VERSION" fixed/share/doc/greeter/VERSION
run "$bin" mkpatch --from greeter.cryptex --to fixed -o greeter-1.0.1.cxpatch \
  --key vendor.key --trust trust --id greeter-1.0.1 --version 1.0.1 --severity high \
  --cve CVE-2026-10001 --class relaunch --release-counter 2 --epoch 1767312000 \
  --released-at "$(date -u +%s)"
run ls -l greeter.cryptex greeter-1.0.1.cxpatch
run "$bin" inspect greeter-1.0.1.cxpatch --trust trust
run "$bin" diff greeter.cryptex --to-patch greeter-1.0.1.cxpatch --trust trust
run "$bin" extract greeter.cryptex --patch greeter-1.0.1.cxpatch patched --trust trust
run diff -r --no-dereference fixed patched && echo "base + patch identical to the fixed tree"

if [ -x "$fsbin" ] && [ -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
  store="$work/store"
  step "10. A device: a store with the base, mounted live (cryptexfs -o store=)"
  run "$bin" add greeter.cryptex --store "$store" --trust trust
  mkdir -p "$work/live" "$work/pinned"
  run "$fsbin" org.example.greeter "$work/live" -o store="$store",trust="$work/trust"
  run "$work/live/bin/greet"
  run ls -i "$work/live/lib/libgreet.so.1" "$work/live/bin/greet"

  step "11. The vendor publishes the patch in a signed feed: plain files any web server can serve"
  # The index has its own key (docs/FEED.md, "Keys and rotation"): devices
  # trust it for the feed, and the patch key for what they install.
  mkdir -p "$work/feed" "$work/feed-trust"
  run "$bin" keygen -o feed-index.key
  cp feed-index.key.pub "$work/feed-trust/"
  cp greeter-1.0.1.cxpatch "$work/feed/"
  run "$bin" feed publish "$work/feed" --key feed-index.key --trust trust --expires 30d
  run ls "$work/feed"
  run "$bin" feed show "$work/feed" --trust "$work/feed-trust"

  step "12. The device's policy agent: the feed, a plugin chain in an INI file"
  # Policy plugins load only from a root-owned directory nobody else can
  # write (docs/POLICY.md); the shipped ones are in build/plugins/lib.
  mkdir -p "$work/plugins"
  chmod 0755 "$work/plugins"
  install -m 0644 "$top"/build/plugins/lib/*.so "$work/plugins/"
  conf="$work/cryptex.conf"
  cat >"$conf" <<EOF
[cryptex]
store = $store
trust = $work/trust
plugin_dir = $work/plugins
; A directory here; in a fleet, https://updates.example.com/greeter/
feed = $work/feed
feed_trust = $work/feed-trust
plugins = revocation, auto
; The staged-rollout bucket (0-99) comes from /etc/machine-id; a bare
; chroot has none, so the demo names one.
device_bucket = 42

[plugin.defer]
days = 7
immediate = critical
EOF
  run cat "$conf"
  run "$bin" policy simulate --config "$conf"

  step "13. The agent pulls it (checked against the signed index), installs and activates it live"
  exec 7<"$work/live/lib/libgreet.so.1"  # a process that has the old library open
  run "$bin" agent --once --config "$conf"
  run "$work/live/bin/greet"
  run ls -i "$work/live/lib/libgreet.so.1" "$work/live/bin/greet"
  echo "(the changed file is a new inode; unchanged files keep theirs)"
  printf 'already-open descriptor still reads the old bytes: '
  if cmp -s /dev/fd/7 "$here/sample-tree/lib/libgreet.so.1"; then echo yes; else
    echo "no"; exit 1; fi
  exec 7<&-
  run diff -r --no-dereference fixed "$work/live" && echo "live mount identical to the fixed tree"
  run "$fsbin" org.example.greeter "$work/pinned" -o store="$store",trust="$work/trust",level=base
  run diff -q "$work/pinned/lib/libgreet.so.1" "$work/live/lib/libgreet.so.1" || true
  echo "(level=base pins a mount at the base, beside the live one)"

  step "14. What is applied, why, and which CVEs it fixes"
  run "$bin" status org.example.greeter --store "$store" --trust trust
  run "$bin" history --store "$store"
  run "$bin" history --store "$store" --verify
  run "$bin" feed status --config "$conf"

  step "15. Revert: back to the base exactly, on the running mount"
  run "$bin" revert greeter-1.0.1 --store "$store" --reason "demo"
  run "$work/live/bin/greet"
  run diff -r --no-dereference "$here/sample-tree" "$work/live" && echo "live mount back to the base"

  step "16. Swap the policy: edit one line of the INI file, run the agent again"
  run sed -i 's/^plugins = revocation, auto$/plugins = revocation, defer/' "$conf"
  run grep '^plugins' "$conf"
  run "$bin" agent --once --config "$conf"
  run "$bin" status org.example.greeter --store "$store" --trust trust
  run diff -r --no-dereference "$here/sample-tree" "$work/live" && echo "live mount still at the base"
  echo "(what the chain would decide in 8 days, changing nothing:)"
  run "$bin" policy simulate --config "$conf" --at "$(date -u -d '+8 days' +%Y-%m-%dT%H:%M:%SZ)"

  step "17. The vendor revokes the patch in the feed: no device installs it any more"
  run "$bin" feed revoke "$work/feed" greeter-1.0.1 --reason "breaks greet --loud" \
    --key feed-index.key --trust trust --expires 30d
  run "$bin" agent --once --config "$conf"
  run "$bin" policy simulate --config "$conf" --at "$(date -u -d '+8 days' +%Y-%m-%dT%H:%M:%SZ)"
  run "$bin" history --store "$store"
  run "$bin" umount "$work/pinned"
  run "$bin" umount "$work/live"
fi

step "Done. Work directory: $work"
