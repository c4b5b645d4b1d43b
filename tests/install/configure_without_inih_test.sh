#!/usr/bin/env bash
# configure_without_inih_test: the project configures (cmake -S SRC) on a
# machine without inih (libinih-dev): nothing links inih yet, so a packager
# or user must not need it. pkg-config is pointed at a copy of its search
# path with inih.pc and INIReader.pc left out.
# usage: configure_without_inih_test.sh SOURCE_DIR
set -euo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/pc"
IFS=: read -r -a dirs <<<"$(pkg-config --variable pc_path pkg-config)"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  for pc in "$d"/*.pc; do
    case ${pc##*/} in inih.pc | INIReader.pc) continue ;; esac
    [ -e "$tmp/pc/${pc##*/}" ] || ln -s "$pc" "$tmp/pc/"
  done
done
PKG_CONFIG_LIBDIR=$tmp/pc pkg-config --exists inih &&
  { echo "configure_without_inih_test: could not hide inih from pkg-config" >&2; exit 1; }
if ! PKG_CONFIG_LIBDIR=$tmp/pc PKG_CONFIG_PATH= cmake -S "$src" -B "$tmp/build" >"$tmp/log" 2>&1; then
  cat "$tmp/log" >&2
  echo "configure_without_inih_test: cmake fails to configure without inih (above)" >&2
  exit 1
fi
echo "configure_without_inih_test: configures without inih"
