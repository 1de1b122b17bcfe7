#!/bin/sh
# Compile-time hygiene of the public headers.
#  1. Warnings: every public header on its own, and a program that instantiates the
#     coroutine API (tests/consumers/main.cpp, at -O0 and -O2), compile with each compiler at
#     -std=c++20 -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Werror.
#  2. Without C++20 (-std=c++17), each public header fails with tisock's message first and
#     a short output.
#  3. Layering: memory_stream.hpp, preprocessed, contains no line of the reactor, the
#     socket or a backend (line markers of reactor.hpp, tcp.hpp, detail/socket_impl.hpp,
#     detail/epoll.hpp, detail/kqueue.hpp); prints the preprocessed sizes beside buffer.hpp's
#     and stream.hpp's.
#  4. Compile time (unless --warnings-only): a hello world including <tisock/tisock.hpp>,
#     median of 5 object compiles at -O0 and -O2; the same program with standalone Asio's
#     <asio.hpp> when it is installed (apt-get install libasio-dev, or ASIO_INCLUDE=dir).
# Usage: tests/compile_hygiene.sh [--warnings-only]   (CXXS="g++ clang++" by default)
# Exits non-zero on any warning or a missing compiler.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
compilers=${CXXS:-"g++ clang++"}
flags="-std=c++20 -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Werror"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tisock-hygiene.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
failed=0

for cxx in $compilers; do
    if ! command -v "$cxx" >/dev/null 2>&1; then
        echo "FAIL $cxx: not found"
        failed=1
        continue
    fi
    bad=0
    for h in "$root"/include/tisock/*.hpp; do
        name=${h#"$root"/include/}
        printf '#include <%s>\n' "$name" >"$tmp/header.cpp"
        # shellcheck disable=SC2086
        if ! $cxx $flags -I"$root/include" -fsyntax-only "$tmp/header.cpp" 2>"$tmp/err"; then
            echo "FAIL $cxx: $name"
            head -n 30 "$tmp/err" | sed 's/^/    /'
            bad=1
        fi
    done
    # shellcheck disable=SC2086
    if ! $cxx $flags -I"$root/include" -o "$tmp/echo" "$root/tests/consumers/main.cpp" 2>"$tmp/err" ||
       ! "$tmp/echo" >/dev/null; then
        echo "FAIL $cxx: tests/consumers/main.cpp (build or run)"
        head -n 30 "$tmp/err" | sed 's/^/    /'
        bad=1
    fi
    # Some warnings (-Wmaybe-uninitialized, -Wnull-dereference...) only show when optimizing.
    # shellcheck disable=SC2086
    if ! $cxx $flags -O2 -I"$root/include" -c -o "$tmp/echo.o" "$root/tests/consumers/main.cpp" 2>"$tmp/err"; then
        echo "FAIL $cxx: tests/consumers/main.cpp at -O2"
        head -n 30 "$tmp/err" | sed 's/^/    /'
        bad=1
    fi
    [ $bad = 0 ] && echo "ok   $cxx $($cxx -dumpversion): each public header, the echo program (-O0, -O2), $flags"
    [ $bad = 0 ] || failed=1
done

# Without C++20, each public header must stop at once with tisock's own message: the first
# error is "tisock needs C++20 (-std=c++20)" and the output stays a few lines long (g++ 12
# used to print some 1,000 lines, starting with "requires -fcoroutines").
old_std=-std=c++17
max_lines=12
for cxx in $compilers; do
    command -v "$cxx" >/dev/null 2>&1 || continue
    bad=0 longest=0
    for h in "$root"/include/tisock/*.hpp; do
        name=${h#"$root"/include/}
        printf '#include <%s>\nint main() {}\n' "$name" >"$tmp/old_std.cpp"
        if $cxx $old_std -I"$root/include" -fsyntax-only "$tmp/old_std.cpp" >"$tmp/err" 2>&1; then
            echo "FAIL $cxx $old_std: $name compiled"
            bad=1
            continue
        fi
        first=$(grep -m1 -E ': (fatal )?error:' "$tmp/err")
        lines=$(wc -l <"$tmp/err")
        [ "$lines" -gt "$longest" ] && longest=$lines
        case $first in
            *'tisock needs C++20 (-std=c++20)'*) ;;
            *) echo "FAIL $cxx $old_std: $name: the first error is not tisock's: $first"; bad=1 ;;
        esac
        if [ "$lines" -gt $max_lines ]; then
            echo "FAIL $cxx $old_std: $name: $lines lines of errors (at most $max_lines expected)"
            head -n 30 "$tmp/err" | sed 's/^/    /'
            bad=1
        fi
    done
    [ $bad = 0 ] && echo "ok   $cxx $old_std: each public header stops with \"tisock needs C++20\" first ($longest lines at most)"
    [ $bad = 0 ] || failed=1
done

# memory_stream.hpp exists so that streaming over buffers does not cost the reactor, epoll
# and tcp (about half the preprocessed size of stream.hpp): an include that brings one of
# them back must fail here rather than go unnoticed.
# (Any path under tisock/: detail headers reach the reactor as "../reactor.hpp".)
forbidden='/tisock/([^"]*/)?(reactor|tcp|socket_impl|epoll|kqueue)\.hpp"'
for cxx in $compilers; do
    command -v "$cxx" >/dev/null 2>&1 || continue
    bad=0 sizes=
    for name in tisock/buffer.hpp tisock/memory_stream.hpp tisock/stream.hpp; do
        printf '#include <%s>\n' "$name" >"$tmp/layer.cpp"
        if ! $cxx -std=c++20 -E -I"$root/include" "$tmp/layer.cpp" >"$tmp/layer.i" 2>"$tmp/err"; then
            echo "FAIL $cxx -E: $name"
            head -n 30 "$tmp/err" | sed 's/^/    /'
            bad=1
            continue
        fi
        sizes="$sizes ${name#tisock/} $(wc -l <"$tmp/layer.i"),"
        [ "$name" = tisock/memory_stream.hpp ] || continue
        grep -E "^# [0-9]+ \"[^\"]*$forbidden" "$tmp/layer.i" | awk '{print $3}' | sort -u >"$tmp/leaks"
        if [ -s "$tmp/leaks" ]; then
            echo "FAIL $cxx: $name pulls in the socket layer:"
            sed 's/^/    /' "$tmp/leaks"
            bad=1
        fi
    done
    [ $bad = 0 ] && echo "ok   $cxx: memory_stream.hpp includes no reactor, tcp or backend (preprocessed lines:${sizes%,})"
    [ $bad = 0 ] || failed=1
done

[ "${1:-}" = --warnings-only ] && exit $failed

cat >"$tmp/hello_tisock.cpp" <<'CPP'
#include <tisock/tisock.hpp>
#include <cstdio>
int main() {
    tisock::reactor r;
    r.post([] { std::puts("hello"); });
    r.run();
}
CPP
cat >"$tmp/hello_asio.cpp" <<'CPP'
#include <asio.hpp>
#include <cstdio>
int main() {
    asio::io_context io;
    asio::post(io, [] { std::puts("hello"); });
    io.run();
}
CPP
# The floor: the same program with only the standard and system headers tisock includes.
{
    # shellcheck disable=SC2013  # header names have no spaces
    for h in $(sed -n 's/^#include <\([^>]*\)>.*/\1/p' "$root"/include/tisock/*.hpp "$root"/include/tisock/detail/*.hpp |
               grep -v '^tisock/' | sort -u); do
        printf '#include <%s>\n' "$h" >"$tmp/one.cpp"
        "${compilers%% *}" -std=c++20 -fsyntax-only "$tmp/one.cpp" 2>/dev/null && printf '#include <%s>\n' "$h"
    done
    printf '#include <cstdio>\nint main() { std::puts("hello"); }\n'
} >"$tmp/hello_std.cpp"
asio_inc=${ASIO_INCLUDE:-}
if [ -z "$asio_inc" ] && [ -f /usr/include/asio.hpp ]; then asio_inc=/usr/include; fi

# median_ms CXX OPT SOURCE INCLUDE: median compiler CPU time (user+sys, so that a busy
# machine distorts it less than wall time) of 5 compiles to an object file
median_ms() {
    python3 - "$@" <<'PY'
import os, statistics, subprocess, sys
cxx, opt, src, inc = sys.argv[1:5]
cmd = [cxx, '-std=c++20', opt, '-I' + inc, '-c', src, '-o', src + '.o']
subprocess.run(cmd, check=True)  # warm the file cache
times = []
for _ in range(5):
    before = os.times()
    subprocess.run(cmd, check=True)
    after = os.times()
    times.append((after.children_user - before.children_user + after.children_system - before.children_system) * 1000)
print(round(statistics.median(times)))
PY
}

echo
echo "Compile time of a hello world (median CPU ms of 5 object compiles; std = only the"
echo "standard/system headers tisock includes; ratio = tisock / asio)"
printf '%-16s %-4s %8s %8s %8s %7s\n' compiler opt tisock std asio ratio
for cxx in $compilers; do
    command -v "$cxx" >/dev/null 2>&1 || continue
    for opt in -O0 -O2; do
        t=$(median_ms "$cxx" "$opt" "$tmp/hello_tisock.cpp" "$root/include") || { failed=1; continue; }
        f=$(median_ms "$cxx" "$opt" "$tmp/hello_std.cpp" "$tmp") || f=-
        a=- ratio=-
        if [ -n "$asio_inc" ]; then
            a=$(median_ms "$cxx" "$opt" "$tmp/hello_asio.cpp" "$asio_inc") || a=-
            [ "$a" != - ] && ratio=$(python3 -c "print(f'{$t / $a:.2f}')")
        fi
        printf '%-16s %-4s %8s %8s %8s %7s\n' "$cxx $($cxx -dumpversion)" "$opt" "$t" "$f" "$a" "$ratio"
    done
done
[ -n "$asio_inc" ] || echo "(standalone Asio not found: apt-get install libasio-dev or set ASIO_INCLUDE)"
exit $failed
