#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS seconds each (default 60), starting
# from the committed seed corpus. Usage, from anywhere:
#
#   tests/fuzz/run.sh [SECONDS] [BUILD_DIR]      (BUILD_DIR default: build-fuzz)
#
# Configures BUILD_DIR with clang++-14 and CRYPTEX_FUZZ=ON if it is not
# configured yet, builds the targets, and fuzzes each with ASan+UBSan. New
# inputs go to a scratch corpus (BUILD_DIR/fuzz-corpus/<target>), never into
# the committed one; crashes are written to BUILD_DIR/fuzz-artifacts/ and
# make the script exit 1 (the reproducer path is printed). Targets run
# $(nproc) at a time (FUZZ_JOBS overrides), each on one core.
set -eu
secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${2:-$root/build-fuzz}
targets="superblock manifest image image_resealed delta feed_index"

# CRYPTEX_FUZZ_WERROR=OFF builds without -Werror (clang-14 warns about some
# things gcc does not); the default keeps warnings fatal.
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCRYPTEX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 \
    -DCRYPTEX_WERROR="${CRYPTEX_FUZZ_WERROR:-ON}" >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target $(for t in $targets; do printf 'fuzz_%s ' "$t"; done)

status=0
mkdir -p "$build/fuzz-artifacts"
# fuzz_one TARGET: fuzzes one target; its report goes to
# fuzz-artifacts/TARGET.report, printed once all are done (outputs of
# parallel runs never interleave). Exit 1 on a finding.
fuzz_one() {
  t=$1
  bin=$(find "$build" -name "fuzz_$t" -type f -perm -u+x | head -n 1)
  scratch="$build/fuzz-corpus/$t"
  mkdir -p "$scratch"
  log="$build/fuzz-artifacts/$t.log"
  report="$build/fuzz-artifacts/$t.report"
  echo "== fuzz_$t: ${secs}s" >"$report"
  # -rss_limit_mb / -malloc_limit_mb: the reader must stay bounded in memory.
  # -timeout: no single input may take more than 10 s (hangs are findings).
  if "$bin" "$scratch" "$here/corpus/$t" -max_total_time="$secs" -max_len=65536 \
      -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$t-" >"$log" 2>&1; then
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" | sed 's/^/   /' >>"$report"
  else
    echo "   FINDING in fuzz_$t (log: $log)" >>"$report"
    grep -E "ERROR|FUZZ FINDING|SUMMARY|Test unit written" "$log" | head -n 20 | sed 's/^/   /' >>"$report"
    return 1
  fi
}
jobs=${FUZZ_JOBS:-$(nproc)}
pids=()
names=()
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  fuzz_one "$t" &
  pids+=($!)
  names+=("$t")
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "$build/fuzz-artifacts/${names[$i]}.report"
done
exit $status
