#!/bin/sh
# Regenerates the committed seed corpora tests/fuzz/corpus/<target>/ from a
# small image built by the library (see make_corpus.cc). Usage:
#   tests/fuzz/make_corpus.sh [BUILD_DIR]     (default: build-hard)
# The build dir must be configured (any configuration; fuzzing not needed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-hard}
cmake --build "$build" --target cryptex_fuzz_make_corpus >/dev/null
tool=$(find "$build" -name cryptex_fuzz_make_corpus -type f -perm -u+x | head -n 1)
# corpus/feed_index holds hand-made seeds (README.md): kept.
for d in superblock manifest image image_resealed delta; do rm -rf "$here/corpus/$d"; done
"$tool" "$here/corpus"
du -sh "$here/corpus"/*
