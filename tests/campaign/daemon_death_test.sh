#!/bin/sh
# daemon_death_test.sh CAMPAIGN CRYPTEXFS: the corruption campaign must count a
# cryptexfs that dies as a crash (and fail), never as an image it refused.
#
# Each run puts a stand-in in front of the real driver: the unmodified image
# (the campaign's sanity run) goes to the real cryptexfs; each flipped copy
# meets one way of dying that is not the driver's refusal (exit status 3,
# integrity, after "cryptexfs: IMAGE: reason", before mounting):
#   asan-exit     a sanitizer report and exit status 3 before mounting
#   silent-exit   exit status 3 without a word, before mounting
#   false-refusal a well-formed refusal line for every copy: a crash for
#                 each copy the library opens and reads
#   exit-after    mounts and serves, then exits 23 after the unmount
#                 (LeakSanitizer's exit code)
# Exit 0 if the campaign reported each as a crash and failed; 77 without
# /dev/fuse.
set -u
campaign=$1
real=$2
[ -r /dev/fuse ] && [ -w /dev/fuse ] || { echo "SKIPPED: needs /dev/fuse"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for mode in asan-exit silent-exit false-refusal exit-after; do
  fake="$work/cryptexfs-$mode"
  case $mode in
    asan-exit) die='echo "==42==ERROR: AddressSanitizer: SEGV on unknown address" >&2; exit 3' ;;
    silent-exit) die='exit 3' ;;
    false-refusal) die='echo "cryptexfs: $1: refused" >&2; exit 3' ;;
    exit-after) die="\"$real\" \"\$@\"; exit 23" ;;
  esac
  cat >"$fake" <<SCRIPT
#!/bin/sh
case "\$1" in
  */flipped.cryptex) $die ;;
  *) exec "$real" "\$@" ;;
esac
SCRIPT
  chmod +x "$fake"
  out="$work/$mode.out"
  "$campaign" --generate --generate-files 20 --seed 3 --flips 8 --timeout-ms 20000 \
    --mount-with "$fake" >"$out" 2>&1
  rc=$?
  crashes=$(grep -c 'CRASH (mount)' "$out")
  want=8
  if [ "$mode" = false-refusal ]; then
    # Only the copies the library opens make the refusal false.
    lib_refused=$(awk '/^library/ { f = 1 } f && /^TOTAL/ { print $3; exit }' "$out")
    want=$((8 - ${lib_refused:-8}))
  fi
  if [ "$rc" -ne 1 ] || [ "$want" -lt 1 ] || [ "$crashes" -ne "$want" ]; then
    echo "FAIL $mode: campaign exit $rc, $crashes flips counted as mount crashes, want $want"
    cat "$out"
    status=1
  else
    echo "ok   $mode: exit 1, $crashes of $want flips counted as mount crashes"
    grep -m1 'CRASH (mount)' "$out"
  fi
done
exit $status
