#!/usr/bin/env bash
# benchmarks/compile_time.sh: compile time of the README's echo program against the same
# echo written with standalone Asio's coroutines (Debian: apt-get install libasio-dev).
#
#   benchmarks/compile_time.sh [--rounds N] [--opt -O2] [--include DIR]...
#
# Each round compiles both programs to an object file with g++ (-std=c++20, the given
# optimization level), in alternating order; the script prints the median compiler CPU
# time (user + sys, ms) of each and the per-round ratio tisock / Asio (median, min-max).
# --include DIR compiles the README program against another tisock include directory too
# (e.g. an older checkout: git worktree add /tmp/old REV; --include /tmp/old/include), so
# that two versions are measured in the same interleaved rounds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=7
opt=-O2
extra_includes=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift ;;
        --opt) opt=$2; shift ;;
        --include) extra_includes+=("$(realpath "$2")"); shift ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "compile_time.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -f /usr/include/asio.hpp ] || { echo "compile_time.sh: standalone Asio not found (apt-get install libasio-dev)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The README's first C++ block, exactly as CI builds it (tests/readme_snippet.sh).
awk '/^```cpp/ { if (!done) { inside = 1; next } } /^```/ { if (inside) { inside = 0; done = 1 } } inside' \
    "$root/README.md" > "$tmp/tisock_echo.cpp"

# The same program with Asio: accept one connection, echo until end of stream, a client
# that sends "hello" and shuts down.
cat > "$tmp/asio_echo.cpp" <<'EOF'
#include <asio.hpp>
#include <iostream>

asio::awaitable<void> echo_once(asio::ip::tcp::acceptor& listener) {
    asio::ip::tcp::socket peer = co_await listener.async_accept(asio::use_awaitable);
    std::byte buf[4096];
    try {
        for (;;) {
            std::size_t n = co_await peer.async_read_some(asio::buffer(buf), asio::use_awaitable);
            co_await asio::async_write(peer, asio::buffer(buf, n), asio::use_awaitable);
            std::cout << "server: echoed " << n << " bytes\n";
        }
    } catch (const std::system_error& e) {
        std::cout << "server: " << e.what() << "\n";
    }
    std::error_code ec;
    peer.close(ec);
}

int main() {
    asio::io_context io;
    asio::ip::tcp::acceptor listener(io, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(io, echo_once(listener), asio::detached);
    asio::ip::tcp::socket client(io);
    client.async_connect(listener.local_endpoint(), [&](std::error_code ec) {
        if (ec) return;
        asio::async_write(client, asio::buffer("hello", 5), [&](std::error_code, std::size_t n) {
            std::cout << "client: sent " << n << " bytes\n";
            client.shutdown(asio::ip::tcp::socket::shutdown_send);
        });
    });
    io.run();
}
EOF

# cpu_ms CMD...: compiler CPU time of one run, in ms.
cpu_ms() {
    local TIMEFORMAT='%3U %3S' t
    t=$( { time "$@" >/dev/null 2>&1; } 2>&1 )
    awk -v t="$t" 'BEGIN { split(t, p, " "); printf "%d\n", (p[1] + p[2]) * 1000 }'
}

names=(tisock asio)
sources=("$tmp/tisock_echo.cpp" "$tmp/asio_echo.cpp")
includes=("$root/include" "")
for i in "${!extra_includes[@]}"; do
    names+=("tisock@$((i + 1))")
    sources+=("$tmp/tisock_echo.cpp")
    includes+=("${extra_includes[$i]}")
done

declare -A times
for ((r = 0; r < rounds; ++r)); do
    order=("${!names[@]}")
    ((r % 2)) && order=($(printf '%s\n' "${order[@]}" | tac))
    for i in "${order[@]}"; do
        flags=(-std=c++20 "$opt" -pthread -c -o "$tmp/out.o")
        [ -n "${includes[$i]}" ] && flags+=(-I"${includes[$i]}")
        times[$i]+="$(cpu_ms g++ "${flags[@]}" "${sources[$i]}") "
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "g++ $(g++ -dumpversion) $opt, $rounds interleaved rounds, median compiler CPU ms (min-max)"
read -ra asio_t <<< "${times[1]}"
for i in "${!names[@]}"; do
    read -ra t <<< "${times[$i]}"
    m=$(printf '%s ' "${t[@]}" | median)
    lo=$(printf '%s\n' "${t[@]}" | sort -n | head -1)
    hi=$(printf '%s\n' "${t[@]}" | sort -n | tail -1)
    ratios=$(for k in "${!t[@]}"; do awk -v a="${t[$k]}" -v b="${asio_t[$k]}" 'BEGIN { printf "%.2f ", a / b }'; done)
    rm=$(printf '%s' "$ratios" | median)
    rlo=$(printf '%s' "$ratios" | tr ' ' '\n' | grep . | sort -n | head -1)
    rhi=$(printf '%s' "$ratios" | tr ' ' '\n' | grep . | sort -n | tail -1)
    printf '%-10s %6s ms [%s-%s]   ratio to asio %s [%s-%s]\n' "${names[$i]}" "$m" "$lo" "$hi" "$rm" "$rlo" "$rhi"
done
