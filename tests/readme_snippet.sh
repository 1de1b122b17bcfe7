#!/bin/sh
# The README's first example, exactly as it appears there: takes README.md's first ```cpp
# block and the ```text block after it (what the program prints), builds the program with
# warnings as errors, runs it and compares its output with that text (in any line order:
# client and server print from the same loop). So the README's first snippet and its
# output cannot drift from the library.
# Usage: tests/readme_snippet.sh   (CXX=g++ by default; needs python3)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tisock-readme.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
cxx=${CXX:-g++}

python3 - "$root/README.md" "$tmp" <<'PY'
import re, sys
readme, out = open(sys.argv[1]).read(), sys.argv[2]
code = re.search(r'^```cpp\n(.*?)^```$', readme, re.S | re.M)
text = code and re.compile(r'^```text\n(.*?)^```$', re.S | re.M).search(readme, code.end())
if not code or not text:
    sys.exit("README.md: no ```cpp block followed by a ```text block of its output")
open(out + '/snippet.cpp', 'w').write(code.group(1))
open(out + '/expected.txt', 'w').write(text.group(1))
PY

$cxx -std=c++20 -pthread -Wall -Wextra -Wpedantic -Werror -I "$root/include" -o "$tmp/snippet" "$tmp/snippet.cpp"
status=0
timeout 20 "$tmp/snippet" >"$tmp/output" || status=$?
sort "$tmp/output" >"$tmp/output.sorted"
sort "$tmp/expected.txt" >"$tmp/expected.sorted"
if [ $status -ne 0 ] || ! cmp -s "$tmp/output.sorted" "$tmp/expected.sorted"; then
    echo "FAIL README.md's first snippet (exit status $status): it printed"
    sed 's/^/    /' "$tmp/output"
    echo "  and the README says"
    sed 's/^/    /' "$tmp/expected.txt"
    exit 1
fi
echo "ok   README.md's first snippet ($(wc -l <"$tmp/snippet.cpp") lines, $cxx): prints what the README shows"
