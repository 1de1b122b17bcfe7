#!/bin/sh
# Builds and runs ../main.cpp (the program all the consumers share) against an installed
# tisock found only through pkg-config.
# For a `meson install --destdir DEST` tree, run with
#   PKG_CONFIG_PATH=DEST/usr/local/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=DEST
# (the sysroot maps the .pc file's -I/usr/local/include into DEST); for a real install,
# plain `sh build.sh`. Usage: build.sh [output-dir]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-.}
CXX=${CXX:-g++}
# shellcheck disable=SC2046  # pkg-config output is meant to be word-split
$CXX -std=c++20 -o "$out/echo" "$here/../main.cpp" $(pkg-config --cflags --libs tisock)
"$out/echo"
