#!/usr/bin/env bash
# Hardening jobs CI runs after the README's test command (docs/TESTING.md):
#   1. the whole suite (but the two big oracle trees) under ASan + UBSan,
#      real FUSE mounts included;
#   2. ThreadSanitizer on the concurrent readers (library, layer stack and
#      driver pool);
#   3. every libFuzzer target for FUZZ_SECONDS (default 30) each, two at a
#      time.
# Any sanitizer report, test failure or fuzz finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
jobs="$(nproc)"
t0=$(date +%s)
lap() { echo "ci-hardening: $1 after $(( $(date +%s) - t0 )) s"; }

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# -g1: line tables only, enough for the sanitizers' stack traces; full debug
# info made this build the longest step of CI.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCRYPTEX_SANITIZE=ON -DCRYPTEX_WERROR=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  >/dev/null
cmake --build build-asan -j"$jobs"
# The kill -9 loop's 200 trials run in the default suite; here 50 find
# memory errors as well (each trial is 3 commands under ASan).
(cd build-asan && CRYPTEX_STORE_KILL_TRIALS=50 ctest --output-on-failure -j2 -LE slow --timeout 900)
lap "ASan+UBSan suite"

# strict_memcmp=0: a memcmp is checked over the bytes it compares, not all
# n. The delta matcher's suffix search compares long ranges that differ
# early; checked whole, building the tests' patches took 60 of the job's
# seconds (StackTest.ConcurrentReadsOfAColdStack 61 s -> 4 s). Races are
# found the same way.
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:strict_memcmp=0
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCRYPTEX_TSAN=ON -DCRYPTEX_WERROR=ON >/dev/null
cmake --build build-tsan -j"$jobs" --target image_concurrency_test parallel_test push_test view_test patched_file_test
build-tsan/fs/lib/image_concurrency_test
build-tsan/fs/lib/view_test --gtest_filter='*Concurren*'
build-tsan/fs/lib/patched_file_test
build-tsan/fs/cryptexfs/parallel_test
build-tsan/fs/cryptexfs/push_test
lap "ThreadSanitizer"

tests/fuzz/run.sh "${FUZZ_SECONDS:-30}" "$PWD/build-fuzz"
lap "fuzzing"
