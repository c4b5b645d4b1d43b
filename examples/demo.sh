#!/usr/bin/env bash
# The cryptex demo: seal the sample component, check it three ways, read it
# without mounting, mount it with cryptexfs (every block verified on read),
# and show what happens to a tampered copy.
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
cleanup() { mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt" || true; }
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

step "Done. Work directory: $work"
