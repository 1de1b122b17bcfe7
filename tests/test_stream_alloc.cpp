// Zero-copy and zero-allocation checks of the Ti.Stream socket forms, in their own
// executable: they replace the global operator new and interpose recv(), both program-wide.
//
//  - Zero-copy: recv() is wrapped (the executable's definition takes precedence over
//    libc's; the real one is found with dlsym(RTLD_NEXT)), so the test sees the pointer
//    each read hands the kernel and checks that it lies in the caller's buffer.
//  - Zero allocation: a 16 MiB pump allocates nothing per chunk once it runs (the chunk is
//    reused, the read awaiter lives in the coroutine frame).
#include "support.hpp"

#include <dlfcn.h>
#include <sys/socket.h>

#include <tisock/buffer.hpp>
#include <tisock/stream.hpp>
#include <tisock/tcp.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

// ---- counted allocation ------------------------------------------------------------------
// The benchmarks' counting replacement of every form of operator new/delete (one copy in
// the tree; it may be included by one translation unit of a binary only).
#include "../benchmarks/alloc_counter.hpp"

using tisock_bench::allocations;

// ---- recv() interposition ----------------------------------------------------------------
namespace {
using recv_fn = ssize_t (*)(int, void*, std::size_t, int);

// Which descriptor to watch, and the region its reads must land in (the caller's buffer,
// looked up at each call since a growing buffer moves).
struct recv_watch {
    int fd = -1;
    const tisock::buffer* target = nullptr;
    std::size_t target_offset = 0;  // with `exact`: the read must start at target->data() + offset
    std::size_t exact_size = 0;     // with `exact`: and ask for exactly this many bytes
    bool exact = false;
    int calls = 0;
    int outside = 0;  // reads that did not land in the target
};
recv_watch watch;

recv_fn real_recv() {
    static recv_fn fn = reinterpret_cast<recv_fn>(::dlsym(RTLD_NEXT, "recv"));
    return fn;
}
}  // namespace

extern "C" ssize_t recv(int fd, void* data, std::size_t size, int flags) {
    if (fd == watch.fd && watch.target != nullptr) {
        ++watch.calls;
        const auto* p = static_cast<const std::byte*>(data);
        const std::byte* begin = watch.target->data();
        const std::byte* end = begin + watch.target->length();
        bool inside = p >= begin && p + size <= end;
        if (watch.exact) inside = p == begin + watch.target_offset && size == watch.exact_size;
        if (!inside) ++watch.outside;
    }
    return real_recv()(fd, data, size, flags);
}

using tisock::buffer;
using tisock::io_event;
using tisock::pump_event;
using tisock::reactor;
using tisock::task;
using tisock::tcp;
using namespace tisock_test;
namespace stream = tisock::stream;

namespace {
struct watch_scope {
    watch_scope(int fd, const buffer& target) {
        watch = recv_watch{};
        watch.fd = fd;
        watch.target = &target;
    }
    ~watch_scope() { watch = recv_watch{}; }
};

task<void> send_then_shutdown(tcp s, const buffer& data) {
    co_await stream::async_write(s, data);
    co_await s.async_shutdown();
}
}  // namespace

TEST_CASE("the recv() wrapper is in the path (control)") {
    REQUIRE(reinterpret_cast<void*>(real_recv()) != nullptr);
    reactor r;
    socket_trio t = connect_trio(r, "127.0.0.1");
    buffer into(8);
    watch_scope w(t.inbound.native_handle(), into);
    t.client.write(buffer::from_string("x"), {});
    int calls = 0;
    t.inbound.read(into, [&calls](const io_event&) { ++calls; });
    REQUIRE(run_until(r, [&] { return calls == 1; }));
    CHECK(watch.calls >= 1);
    t.close_all();
}

TEST_CASE("zero-copy: stream::read and async_read hand the kernel the caller's buffer at the offset") {
    for (bool coroutine : {false, true}) {
        INFO(std::string(coroutine ? "coroutine" : "callback"));
        reactor r;
        socket_trio t = connect_trio(r, "127.0.0.1");
        buffer into(1000);
        watch_scope w(t.inbound.native_handle(), into);
        watch.exact = true;
        watch.target_offset = 100;
        watch.exact_size = 50;
        std::int64_t n = -2;
        outcome out;
        if (coroutine) {
            start(r, [](tcp s, buffer& b, std::int64_t& got) -> task<void> {
                got = co_await stream::async_read(s, b, 100, 50);
            }(t.inbound, into, n), out);
        } else {
            stream::read(t.inbound, into, 100, 50, [&n](const io_event& e) { n = e.bytes_processed; });
        }
        t.client.write(buffer::from_string("zero copy"), {});
        REQUIRE(run_until(r, [&] { return n != -2; }));
        CHECK_MESSAGE(!out.error, out.what());
        CHECK(n == 9);
        CHECK(into.clone(100, 9).to_string() == "zero copy");
        CHECK(watch.calls >= 1);
        CHECK(watch.outside == 0);
        t.close_all();
    }
}

TEST_CASE("zero-copy: read_all reads straight into the caller's (growing) buffer") {
    for (bool coroutine : {false, true}) {
        INFO(std::string(coroutine ? "coroutine" : "callback"));
        reactor r;
        socket_trio t = connect_trio(r, "127.0.0.1");
        buffer into;
        watch_scope w(t.inbound.native_handle(), into);
        const buffer data(1u << 20);
        outcome sent, read;
        start(r, send_then_shutdown(t.client, data), sent);
        int calls = 0;
        if (coroutine) {
            start(r, [](tcp s, buffer& b) -> task<void> { co_await stream::async_read_all(s, b); }(t.inbound, into), read);
        } else {
            stream::read_all(t.inbound, into, [&calls](const io_event&) { ++calls; });
        }
        REQUIRE(run_until(r, [&] { return sent.done && (coroutine ? read.done : calls == 1); }, 30000ms));
        CHECK(into.length() == data.length());
        CHECK(watch.calls >= 2);
        CHECK(watch.outside == 0);
        t.close_all();
    }
}

TEST_CASE("zero allocation: a 16 MiB pump allocates nothing per chunk in steady state") {
    constexpr std::size_t total = 16u << 20;
    constexpr std::size_t max_chunk = 16384;
    for (bool coroutine : {true, false}) {
        INFO(std::string(coroutine ? "coroutine" : "callback"));
        reactor r;
        socket_trio t = connect_trio(r, "127.0.0.1");
        const buffer data(total);
        struct counters {
            std::int64_t chunks = 0;
            std::int64_t bytes = 0;
            std::size_t at_warm = 0;   // allocations when chunk `warm_up` arrived
            std::size_t at_end = 0;    // allocations when the last data chunk arrived
            std::int64_t chunks_at_warm = 0;
            bool ended = false;
        } c;
        constexpr std::int64_t warm_up = 16;
        auto handler = [&c](const pump_event<tcp>& e) {
            if (e.bytes_processed < 0) {
                c.ended = true;
                return;
            }
            ++c.chunks;
            c.bytes += e.bytes_processed;
            if (c.chunks == warm_up) {
                c.at_warm = allocations();
                c.chunks_at_warm = c.chunks;
            }
            c.at_end = allocations();
        };
        outcome sent, pumped;
        start(r, send_then_shutdown(t.client, data), sent);
        if (coroutine) {
            start(r, [](tcp s, decltype(handler) h) -> task<void> {
                co_await stream::async_pump(s, std::move(h), max_chunk);
            }(t.inbound, handler), pumped);
        } else {
            stream::pump(t.inbound, handler, max_chunk);
        }
        REQUIRE(run_until(r, [&] { return c.ended && sent.done && (!coroutine || pumped.done); }, 60000ms));
        CHECK_MESSAGE(!sent.error, sent.what());
        CHECK_MESSAGE(!pumped.error, pumped.what());
        REQUIRE(c.bytes == std::int64_t(total));
        REQUIRE(c.chunks > warm_up + 100);
        const std::size_t steady = c.at_end - c.at_warm;
        MESSAGE("chunks: ", c.chunks, ", allocations over the last ", c.chunks - c.chunks_at_warm, " chunks: ", steady);
        CHECK(steady == 0);
        t.close_all();
    }
}
