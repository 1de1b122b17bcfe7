#!/usr/bin/env bash
# Builds the codec/buffer fuzzer with clang++ and runs it for a bounded time.
# Usage: tests/fuzz/run_codec.sh [SECONDS]   (default 30; run from anywhere)
# Exit status: 0 when the run ends without a finding, non-zero on a crash, a sanitizer report
# or a build failure. Crash inputs are left in the build directory (printed at the end).
set -euo pipefail

seconds=${1:-30}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${CLANGXX:-clang++}
out=${FUZZ_BUILD_DIR:-${TMPDIR:-/tmp}/tisock-fuzz-codec}
mkdir -p "$out/corpus"

"$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize=function \
    -fno-sanitize-recover=undefined -Wall -Wextra -Werror \
    -I "$root/include" "$here/fuzz_codec.cpp" -o "$out/fuzz_codec"

# New inputs go to a scratch corpus so that a run never rewrites the checked-in seeds.
cd "$out"
if "./fuzz_codec" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/" "$out/corpus" "$here/corpus/codec"; then
    echo "fuzz_codec: no findings in ${seconds}s"
else
    status=$?
    echo "fuzz_codec: FINDING (exit $status); artifacts in $out:" >&2
    ls "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* 2>/dev/null >&2 || true
    exit "$status"
fi
