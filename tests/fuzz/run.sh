#!/usr/bin/env bash
# Builds one libFuzzer target with clang++ and runs it for a bounded time.
# Usage: tests/fuzz/run.sh TARGET [SECONDS]    TARGET: codec | address   (default 30 s)
# Exit status: 0 when the run ends without a finding, non-zero on a crash, a sanitizer report
# or a build failure. Crash inputs are left in the build directory (printed at the end).
set -euo pipefail

target=${1:?usage: run.sh TARGET [SECONDS]}
seconds=${2:-30}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${CLANGXX:-clang++}
out=${FUZZ_BUILD_DIR:-${TMPDIR:-/tmp}/tisock-fuzz-$target}
mkdir -p "$out/corpus"

# -fno-sanitize=function: clang 14 cannot compile inline coroutines with it.
"$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize=function \
    -fno-sanitize-recover=undefined -Wall -Wextra -Werror \
    -I "$root/include" "$here/fuzz_$target.cpp" -o "$out/fuzz_$target"

# New inputs go to a scratch corpus so that a run never rewrites the checked-in seeds.
cd "$out"
if "./fuzz_$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/" "$out/corpus" "$here/corpus/$target"; then
    echo "fuzz_$target: no findings in ${seconds}s"
else
    status=$?
    echo "fuzz_$target: FINDING (exit $status); artifacts in $out:" >&2
    ls "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* 2>/dev/null >&2 || true
    exit "$status"
fi
