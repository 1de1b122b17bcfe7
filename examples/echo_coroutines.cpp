// An echo server and a client written with co_await: spawn, async_accept, async_read,
// async_write, async_shutdown and sync_wait.
//
// The server accepts connections on 127.0.0.1 (port 0: the kernel picks one) and spawns
// one coroutine per connection that writes back whatever it reads, until end of stream.
// The client sends a few messages, waits for each echo and prints the round trip, then
// shuts down its sending side and waits for the server to do the same.
//
// Exits by itself with status 0: sync_wait returns when the client is done, and the
// listener is closed (which ends the accept loop) before main returns.
#include <tisock/tisock.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

namespace {

using namespace std::chrono_literals;

// One connection: echo until the peer shuts down, then shut down our side too.
tisock::task<void> echo(tisock::tcp connection) {
    std::array<std::byte, 4096> buf;  // lives in the coroutine frame for the whole connection
    try {
        std::size_t total = 0;
        for (;;) {
            const std::size_t n = co_await connection.async_read(buf);
            if (n == 0) break;  // end of stream
            co_await connection.async_write(std::span(buf).first(n));
            total += n;
        }
        co_await connection.async_shutdown();
        std::printf("server: %s:%d sent end of stream after %zu bytes; closing\n", connection.host().c_str(),
                    connection.port(), total);
        connection.close();
    } catch (const std::system_error& e) {
        // A spawned task must not let an exception escape (it would call std::terminate).
        std::printf("server: connection failed: %s\n", e.what());
    }
}

// Accepts until the listener is closed (the pending accept then ends with
// operation_canceled).
tisock::task<void> accept_loop(tisock::reactor& r, tisock::tcp listener) {
    try {
        for (;;) {
            tisock::tcp connection = co_await listener.async_accept();
            std::printf("server: accepted %s:%d\n", connection.host().c_str(), connection.port());
            tisock::spawn(r, echo(connection));
        }
    } catch (const std::system_error& e) {
        if (e.code() != std::errc::operation_canceled) std::printf("server: accept failed: %s\n", e.what());
        std::printf("server: listener closed, accept loop done\n");
    }
}

std::string_view as_text(std::span<const std::byte> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Reads exactly `into.size()` bytes (an echo may arrive in pieces), with a deadline so a
// bug shows up as an error instead of a hang.
tisock::task<void> read_exactly(tisock::tcp& socket, std::span<std::byte> into) {
    std::size_t got = 0;
    while (got < into.size()) {
        const std::size_t n = co_await socket.async_read(into.subspan(got), 5s);
        if (n == 0) throw std::runtime_error("the server closed the connection early");
        got += n;
    }
}

tisock::task<int> client(tisock::reactor& r, int port) {
    tisock::tcp socket{r, {.host = "127.0.0.1", .port = port, .timeout = 5s}};
    co_await socket.async_connect();
    std::printf("client: connected from %s:%d\n", socket.local_host().c_str(), socket.local_port());

    constexpr std::array<std::string_view, 3> messages{"Well, hello there!", "How are you?",
                                                       "A somewhat longer message, to show that any size works."};
    int round_trips = 0;
    for (std::string_view text : messages) {
        const auto message = std::as_bytes(std::span(text));
        std::array<std::byte, 128> reply{};
        const auto start = std::chrono::steady_clock::now();
        co_await socket.async_write(message);
        co_await read_exactly(socket, std::span(reply).first(message.size()));
        const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
        const std::string_view echoed = as_text(std::span(reply).first(message.size()));
        std::printf("client: sent \"%.*s\", got back \"%.*s\" in %lld us\n", int(text.size()), text.data(),
                    int(echoed.size()), echoed.data(), static_cast<long long>(elapsed.count()));
        if (echoed == text) ++round_trips;
    }

    // Nothing more to send: the server reads end of stream, shuts down its side, and we
    // read end of stream in turn.
    co_await socket.async_shutdown();
    std::array<std::byte, 16> rest;
    const std::size_t n = co_await socket.async_read(rest, 5s);
    std::printf("client: %s\n", n == 0 ? "the server shut down its side too" : "unexpected bytes after the echoes");
    socket.close();
    co_return n == 0 ? round_trips : -1;
}

}  // namespace

int main() {
    tisock::reactor r;
    tisock::tcp listener{r, {.host = "127.0.0.1", .port = 0}};
    listener.listen();
    std::printf("server: listening on %s:%d\n", listener.host().c_str(), listener.port());
    tisock::spawn(r, accept_loop(r, listener));

    int round_trips = -1;
    try {
        round_trips = tisock::sync_wait(r, client(r, listener.port()));
    } catch (const std::exception& e) {
        std::printf("client failed: %s\n", e.what());
    }

    // Ends the accept loop; let it (and the echo coroutine) finish.
    listener.close();
    r.run_for(5s);

    const bool ok = round_trips == 3;
    std::printf("%s: %d round trips\n", ok ? "done" : "FAILED", round_trips);
    return ok ? 0 : 1;
}
