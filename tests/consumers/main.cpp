// A coroutine echo round trip on 127.0.0.1: exits 0 when the reply matches.
#include <tisock/tisock.hpp>

#include <array>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string_view>

tisock::task<void> serve_one(tisock::tcp listener) {
    tisock::tcp peer = co_await listener.async_accept();
    std::array<std::byte, 64> buf{};
    std::size_t n = co_await peer.async_read(buf);
    co_await peer.async_write(std::span<const std::byte>(buf.data(), n));
    peer.close();
}

tisock::task<bool> round_trip(tisock::reactor& r, int port) {
    tisock::tcp client(r, {.host = "127.0.0.1", .port = port});
    co_await client.async_connect();
    constexpr std::string_view hello = "hello, tisock";
    co_await client.async_write(std::as_bytes(std::span(hello)));
    std::array<std::byte, 64> reply{};
    std::size_t got = 0;
    while (got < hello.size()) {
        std::size_t n = co_await client.async_read(std::span(reply).subspan(got));
        if (n == 0) break;
        got += n;
    }
    client.close();
    co_return got == hello.size() && std::memcmp(reply.data(), hello.data(), got) == 0;
}

int main() {
    tisock::reactor r;
    tisock::tcp listener(r, {.host = "127.0.0.1", .port = 0});
    listener.listen();
    tisock::spawn(r, serve_one(listener));
    bool ok = tisock::sync_wait(r, round_trip(r, listener.port()));
    listener.close();
    std::puts(ok ? "echo ok" : "echo MISMATCH");
    return ok ? 0 : 1;
}
