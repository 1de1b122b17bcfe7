// Reads and writes on connected sockets (API.md "The socket": the Ti.IOStream callback
// functions and the awaitables): echo, FIFO order, large transfers, close and shutdown
// semantics, end of stream, read deadlines, offsets and ranges, write timeouts, SIGPIPE.
// Over real loopback sockets, 127.0.0.1 and ::1, in both styles.
//
// Peers that must behave in a way the library never would (never read, read slowly,
// reset) are raw POSIX sockets, driven from a helper thread when they have to block.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace tisock_test;
using tisock::io_event;
using tisock::state;
using tisock::state_error;
using tisock::tcp;

namespace {

// A raw peer accepted on a helper thread, which then runs `work(peer)`.
class threaded_peer {
public:
    template <class Work>
    threaded_peer(raw_listener& l, Work work)
        : thread_([this, &l, work]() mutable {
              peer_ = l.accept();
              if (peer_.is_open()) work(peer_);
              done_ = true;
          }) {}
    threaded_peer(const threaded_peer&) = delete;
    threaded_peer& operator=(const threaded_peer&) = delete;
    ~threaded_peer() { join(); }
    bool done() const { return done_; }
    void join() {
        if (thread_.joinable()) thread_.join();
        peer_.close();
    }

private:
    raw_peer peer_;
    std::atomic<bool> done_{false};
    std::thread thread_;  // last: starts once the other members exist
};

// A tisock client connected to `l` (callback connect), bounded.
tcp connect_to(tisock::reactor& r, const raw_listener& l, tisock::tcp_options options = {}) {
    options.host = l.host();
    options.port = l.port();
    tcp s(r, std::move(options));
    s.connect();
    REQUIRE(run_until(r, [&] { return s.state() != state::initialized || !s.is_connecting(); }));
    REQUIRE(s.state() == state::connected);
    return s;
}

std::string read_text(const tisock::buffer& b, std::int64_t n) { return b.clone(0, std::size_t(n > 0 ? n : 0)).to_string(); }

}  // namespace

TEST_CASE_FIXTURE(socket_test, "echo with callbacks") {
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    const std::string message = std::string("hello over ") + host;
    tisock::buffer server_buf(256), client_buf(256);
    int server_reads = 0, server_writes = 0, client_writes = 0, client_reads = 0;
    std::string echoed;
    t.inbound.read(server_buf, [&](const io_event& e) {
        ++server_reads;
        REQUIRE(e.success);
        CHECK(e.source == t.inbound);
        REQUIRE(e.bytes_processed == std::int64_t(message.size()));
        e.source.write(server_buf.clone(0, std::size_t(e.bytes_processed)), [&](const io_event& w) {
            ++server_writes;
            CHECK(w.success);
            CHECK(w.bytes_processed == std::int64_t(message.size()));
        });
    });
    t.client.write(tisock::buffer::from_string(message), [&](const io_event& e) {
        ++client_writes;
        CHECK(e.success);
        CHECK(e.source == t.client);
        CHECK(e.bytes_processed == std::int64_t(message.size()));
        CHECK(e.code == std::error_code());
        CHECK(e.error.empty());
    });
    t.client.read(client_buf, [&](const io_event& e) {
        ++client_reads;
        CHECK(e.success);
        echoed = read_text(client_buf, e.bytes_processed);
    });
    REQUIRE(run_until(r, [&] { return client_reads == 1; }));
    run_for_at_least(r, 50ms);
    CHECK(echoed == message);
    CHECK(server_reads == 1);
    CHECK(server_writes == 1);
    CHECK(client_writes == 1);
    CHECK(client_reads == 1);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "echo with co_await") {
    TISOCK_LOOPBACK_HOSTS(host);

    tcp listener = make_listener(r, host);
    tcp client(r, {.host = host, .port = listener.port()});
    auto serve = [](tcp l) -> tisock::task<void> {
        tcp in = co_await l.async_accept();
        std::byte buf[4096];
        for (;;) {
            std::size_t n = co_await in.async_read(buf);
            if (n == 0) break;  // end of stream
            std::size_t w = co_await in.async_write(std::span<const std::byte>(buf, n));
            REQUIRE(w == n);
        }
        in.close();
    };
    auto talk = [](tcp c, std::string& reply) -> tisock::task<void> {
        co_await c.async_connect();
        for (std::string m : {"one", "two two", "three three three"}) {
            REQUIRE(co_await c.async_write(bytes_of(m)) == m.size());
            std::string got;
            std::byte buf[64];
            while (got.size() < m.size()) {
                std::size_t n = co_await c.async_read(buf);
                REQUIRE(n > 0);
                got += text_of({buf, n});
            }
            reply += got + "|";
        }
        co_await c.async_shutdown();
        std::byte buf[8];
        REQUIRE(co_await c.async_read(buf) == 0);  // the server closed after our EOF
    };
    outcome s, c;
    std::string reply;
    start(r, serve(listener), s);
    start(r, talk(client, reply), c);
    REQUIRE(run_until(r, [&] { return s.done && c.done; }));
    CHECK_MESSAGE(!s.error, s.what());
    CHECK_MESSAGE(!c.error, c.what());
    CHECK(reply == "one|two two|three three three|");
    CHECK(client.state() == state::connected);  // end of stream is not an error
    client.close();
    listener.close();
    check_nothing_left(r, fds);
}

TEST_CASE("1,000 callback writes in a row arrive in order; each callback runs once, in order") {
    watchdog wd(30s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS(host);

    std::string expected;
    for (int i = 0; i < 1000; ++i) expected += "message " + std::to_string(i) + " of 1000;";
    raw_listener l(host);
    std::string received;
    threaded_peer peer(l, [&](raw_peer& p) { received = p.receive_exactly(expected.size()); });
    tcp client = connect_to(r, l);

    std::vector<int> order;
    std::vector<int> calls(1000, 0);
    for (int i = 0; i < 1000; ++i) {
        client.write(tisock::buffer::from_string("message " + std::to_string(i) + " of 1000;"),
                     [&, i](const io_event& e) {
                         ++calls[std::size_t(i)];
                         order.push_back(i);
                         CHECK(e.success);
                     });
    }
    REQUIRE(run_until(r, [&] { return order.size() >= 1000 && peer.done(); }, 20s));
    run_for_at_least(r, 50ms);
    peer.join();
    CHECK(received == expected);
    REQUIRE(order.size() == 1000);
    bool in_order = true, once = true;
    for (int i = 0; i < 1000; ++i) {
        in_order = in_order && order[std::size_t(i)] == i;
        once = once && calls[std::size_t(i)] == 1;
    }
    CHECK(in_order);
    CHECK(once);
    client.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE("concurrent async_writes queue in FIFO order") {
    watchdog wd(30s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS(host);

    // Each chunk is large, so most of them really wait in the queue.
    constexpr int count = 40;
    std::vector<std::string> chunks;
    std::string expected;
    for (int i = 0; i < count; ++i) {
        chunks.push_back(std::string(200'000, char('A' + i % 26)) + std::to_string(i));
        expected += chunks.back();
    }
    raw_listener l(host);
    std::string received;
    threaded_peer peer(l, [&](raw_peer& p) { received = p.receive_exactly(expected.size()); });
    tcp client = connect_to(r, l);

    std::vector<int> finished;
    std::vector<outcome> outcomes(count);
    auto write_one = [](tcp c, const std::string& data, std::vector<int>& done, int i) -> tisock::task<void> {
        std::size_t n = co_await c.async_write(bytes_of(data));
        REQUIRE(n == data.size());
        done.push_back(i);
    };
    for (int i = 0; i < count; ++i) start(r, write_one(client, chunks[std::size_t(i)], finished, i), outcomes[std::size_t(i)]);
    REQUIRE(run_until(r, [&] { return finished.size() == count && peer.done(); }, 20s));
    peer.join();
    CHECK(received.size() == expected.size());
    CHECK(received == expected);
    for (int i = 0; i < count; ++i) {
        CHECK(finished[std::size_t(i)] == i);
        CHECK_MESSAGE(!outcomes[std::size_t(i)].error, outcomes[std::size_t(i)].what());
    }
    client.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE("a 16 MiB write to a slow reader completes with every byte") {
    watchdog wd(60s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS_AND_STYLES(host, coroutine_style);

    const std::string data = pattern(16u << 20);
    raw_listener l(host);
    std::string received;
    bool eof = false;
    // Reads in small bites with pauses: the writer meets a full send buffer many times.
    threaded_peer peer(l, [&](raw_peer& p) {
        for (int i = 0;; ++i) {
            int status = 0;
            std::string part = p.receive_some(32 * 1024, &status);
            if (status <= 0) {
                eof = status == 0;
                break;
            }
            received += part;
            if (i % 16 == 0) std::this_thread::sleep_for(1ms);
        }
    });
    tcp client = connect_to(r, l);

    if (!coroutine_style) {
        int writes = 0;
        std::int64_t written = 0;
        client.write(buffer_of(data), [&](const io_event& e) {
            ++writes;
            CHECK(e.success);
            written = e.bytes_processed;
        });
        REQUIRE(run_until(r, [&] { return writes > 0; }, 40s));
        run_for_at_least(r, 20ms);
        CHECK(writes == 1);
        CHECK(written == std::int64_t(data.size()));
    } else {
        outcome o;
        std::size_t written = 0;
        auto go = [](tcp c, const std::string& d, std::size_t& n) -> tisock::task<void> {
            n = co_await c.async_write(bytes_of(d));
        };
        start(r, go(client, data, written), o);
        REQUIRE(run_until(r, [&] { return o.done; }, 40s));
        CHECK_MESSAGE(!o.error, o.what());
        CHECK(written == data.size());
    }
    client.close();  // every byte reached the kernel: the peer gets them all, then FIN
    peer.join();
    CHECK(eof);
    CHECK(received.size() == data.size());
    CHECK(received == data);
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE("a 16 MiB async_write to a tisock reader that reads slowly") {
    watchdog wd(60s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    const std::string data = pattern(16u << 20);
    auto send = [](tcp c, const std::string& d) -> tisock::task<void> {
        REQUIRE(co_await c.async_write(bytes_of(d)) == d.size());
        co_await c.async_shutdown();
    };
    auto receive = [](tisock::reactor& rr, tcp in, std::string& out) -> tisock::task<void> {
        std::vector<std::byte> buf(48 * 1024);
        for (int i = 0;; ++i) {
            std::size_t n = co_await in.async_read(buf);
            if (n == 0) co_return;
            out += text_of({buf.data(), n});
            if (i % 32 == 0) co_await rr.sleep_for(1ms);
        }
    };
    outcome s, c;
    std::string received;
    start(r, send(t.client, data), s);
    start(r, receive(r, t.inbound, received), c);
    REQUIRE(run_until(r, [&] { return s.done && c.done; }, 40s));
    CHECK_MESSAGE(!s.error, s.what());
    CHECK_MESSAGE(!c.error, c.what());
    CHECK(received.size() == data.size());
    CHECK(received == data);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "write then close delivers a small message; its callback succeeds after close()") {
    TISOCK_LOOPBACK_HOSTS(host);

    raw_listener l(host);
    std::string received;
    bool eof = false;
    threaded_peer peer(l, [&](raw_peer& p) { received = p.receive_all(&eof); });
    error_log errors;
    tcp client = connect_to(r, l, {.error = errors.callback()});

    int writes = 0;
    io_event result{client, 0, false, {}, {}};
    client.write(tisock::buffer::from_string("goodbye, and thanks"), [&](const io_event& e) {
        ++writes;
        result = e;
    });
    client.close();
    CHECK(writes == 0);
    CHECK(client.state() == state::closed);
    REQUIRE(run_until(r, [&] { return writes > 0 && peer.done(); }));
    run_for_at_least(r, 50ms);
    peer.join();
    CHECK(received == "goodbye, and thanks");
    CHECK(eof);
    CHECK(writes == 1);
    CHECK(result.success);
    CHECK(result.bytes_processed == 19);
    CHECK_FALSE(result.code);
    CHECK(errors.count == 0);
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "close() cancels a write whose bytes have not all reached the kernel") {
    TISOCK_LOOPBACK_HOSTS(host);

    raw_listener l(host, 16, 4096);
    tcp client = connect_to(r, l);
    raw_peer p = l.accept();  // never reads
    REQUIRE(p.is_open());
    error_log errors;
    client.set_error(errors.callback());
    int writes = 0;
    io_event result{client, 0, true, {}, {}};
    client.write(buffer_of(pattern(32u << 20)), [&](const io_event& e) {
        ++writes;
        result = e;
    });
    run_for_at_least(r, 50ms);
    CHECK(writes == 0);
    client.close();
    REQUIRE(run_until(r, [&] { return writes > 0; }));
    run_for_at_least(r, 50ms);
    CHECK(writes == 1);
    CHECK_FALSE(result.success);
    CHECK(result.bytes_processed == -1);
    CHECK(result.code == std::errc::operation_canceled);
    CHECK(errors.count == 0);
    p.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "close() cancels a pending read with operation_canceled and no error callback") {
    TISOCK_LOOPBACK_HOSTS_AND_STYLES(host, coroutine_style);

    error_log errors;
    socket_trio t = connect_trio(r, host, {.error = errors.callback()});

    if (!coroutine_style) {
        tisock::buffer b(16);
        int reads = 0;
        io_event result{t.client, 0, true, {}, {}};
        t.client.read(b, [&](const io_event& e) {
            ++reads;
            result = e;
        });
        run_for_at_least(r, 30ms);
        t.client.close();
        REQUIRE(run_until(r, [&] { return reads > 0; }));
        run_for_at_least(r, 50ms);
        CHECK(reads == 1);
        CHECK_FALSE(result.success);
        CHECK(result.bytes_processed == -1);
        CHECK(result.code == std::errc::operation_canceled);
        CHECK_FALSE(result.error.empty());
        CHECK(result.source == t.client);
    } else {
        std::byte buf[16];
        std::size_t n = 99;
        outcome o;
        start(r, [](tcp c, std::span<std::byte> b, std::size_t& out) -> tisock::task<void> {
            out = co_await c.async_read(b);
        }(t.client, buf, n), o);
        run_for_at_least(r, 30ms);
        CHECK_FALSE(o.done);
        t.client.close();
        REQUIRE(run_until(r, [&] { return o.done; }));
        CHECK(o.threw<std::system_error>());
        CHECK(o.code() == std::errc::operation_canceled);
        CHECK(n == 99);
    }
    CHECK(t.client.state() == state::closed);
    CHECK(errors.count == 0);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "end of stream: bytes_processed -1 with success, async_read returns 0, the socket stays connected") {
    TISOCK_LOOPBACK_HOSTS_AND_STYLES(host, coroutine_style);

    error_log errors;
    raw_listener l(host);
    tcp client = connect_to(r, l, {.error = errors.callback()});
    raw_peer p = l.accept();
    REQUIRE(p.send_all("last words"));
    p.shutdown_write();

    if (!coroutine_style) {
        tisock::buffer b(64);
        std::vector<io_event> events;
        auto on_read = [&](const io_event& e) { events.push_back(e); };
        client.read(b, on_read);
        REQUIRE(run_until(r, [&] { return events.size() == 1; }));
        CHECK(events[0].success);
        CHECK(read_text(b, events[0].bytes_processed) == "last words");
        client.read(b, on_read);
        REQUIRE(run_until(r, [&] { return events.size() == 2; }));
        CHECK(events[1].success);
        CHECK(events[1].bytes_processed == -1);
        CHECK_FALSE(events[1].code);
        client.read(b, on_read);  // end of stream again, not an error
        REQUIRE(run_until(r, [&] { return events.size() == 3; }));
        CHECK(events[2].success);
        CHECK(events[2].bytes_processed == -1);
        run_for_at_least(r, 30ms);
        CHECK(events.size() == 3);
    } else {
        std::string got;
        std::size_t last = 99, again = 99;
        outcome o;
        start(r, [](tcp c, std::string& text, std::size_t& end, std::size_t& end2) -> tisock::task<void> {
            std::byte buf[64];
            for (;;) {
                std::size_t n = co_await c.async_read(buf);
                if (n == 0) break;
                text += text_of({buf, n});
            }
            end = 0;
            end2 = co_await c.async_read(buf);
        }(client, got, last, again), o);
        REQUIRE(run_until(r, [&] { return o.done; }));
        CHECK_MESSAGE(!o.error, o.what());
        CHECK(got == "last words");
        CHECK(last == 0);
        CHECK(again == 0);
    }
    CHECK(client.state() == state::connected);
    CHECK(client.is_readable());
    // We can still write to a peer that only shut down its sending side.
    int writes = 0;
    client.write(tisock::buffer::from_string("reply"), [&](const io_event& e) {
        ++writes;
        CHECK(e.success);
    });
    REQUIRE(run_until(r, [&] { return writes == 1; }));
    CHECK(p.receive_exactly(5) == "reply");
    client.close();
    CHECK(errors.count == 0);
    p.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "async_read with a deadline throws timed_out; the socket stays connected and usable") {
    TISOCK_LOOPBACK_HOSTS(host);

    error_log errors;
    socket_trio t = connect_trio(r, host, {.error = errors.callback()});
    int fd = t.client.native_handle();
    struct result {
        std::error_code first;
        std::chrono::milliseconds waited{0};
        state after = state::initialized;
        std::string second;
    } res;
    auto go = [](tcp c, result& out) -> tisock::task<void> {
        std::byte buf[32];
        stopwatch sw;
        try {
            (void)co_await c.async_read(buf, 150ms);
        } catch (const std::system_error& e) {
            out.first = e.code();
        }
        out.waited = sw.elapsed();
        out.after = c.state();
        std::size_t n = co_await c.async_read(buf, 5000ms);
        out.second = text_of({buf, n});
    };
    outcome o;
    start(r, go(t.client, res), o);
    REQUIRE(run_until(r, [&] { return res.first || o.done; }));
    CHECK(res.first == std::errc::timed_out);
    CHECK(res.waited >= 150ms);
    CHECK(res.waited < 3000ms);
    CHECK(res.after == state::connected);
    CHECK(t.client.native_handle() == fd);
    t.inbound.write(tisock::buffer::from_string("late data"), {});
    REQUIRE(run_until(r, [&] { return o.done; }));
    CHECK_MESSAGE(!o.error, o.what());
    CHECK(res.second == "late data");
    CHECK(t.client.state() == state::connected);
    CHECK(errors.count == 0);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "read(buffer, offset, length) writes exactly at offset") {
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    tisock::buffer b(10);
    b.fill('.');
    t.inbound.write(tisock::buffer::from_string("ABCDEFGH"), {});
    run_for_at_least(r, 30ms);
    std::vector<std::int64_t> sizes;
    t.client.read(b, 3, 4, [&](const io_event& e) { sizes.push_back(e.bytes_processed); });
    REQUIRE(run_until(r, [&] { return sizes.size() == 1; }));
    CHECK(sizes[0] == 4);
    CHECK(b.to_string() == "...ABCD...");
    t.client.read(b, 0, 10, [&](const io_event& e) { sizes.push_back(e.bytes_processed); });
    REQUIRE(run_until(r, [&] { return sizes.size() == 2; }));
    CHECK(sizes[1] == 4);
    CHECK(b.to_string() == "EFGHBCD...");
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "write(buffer, offset, length) sends exactly that slice") {
    TISOCK_LOOPBACK_HOSTS(host);

    raw_listener l(host);
    tcp client = connect_to(r, l);
    raw_peer p = l.accept();
    std::vector<std::int64_t> sizes;
    client.write(tisock::buffer::from_string("0123456789"), 2, 5, [&](const io_event& e) { sizes.push_back(e.bytes_processed); });
    client.write(tisock::buffer::from_string("abc"), 3, 0, [&](const io_event& e) { sizes.push_back(e.bytes_processed); });
    client.write(tisock::buffer::from_string("xyz"), 0, 3, [&](const io_event& e) { sizes.push_back(e.bytes_processed); });
    // buffer::npos as the length means "to the end", as everywhere in the buffer API.
    client.write(tisock::buffer::from_string("-tail"), 1, tisock::buffer::npos,
                 [&](const io_event& e) { sizes.push_back(e.bytes_processed); });
    REQUIRE(run_until(r, [&] { return sizes.size() == 4; }));
    client.close();
    bool eof = false;
    CHECK(p.receive_all(&eof) == "23456xyztail");
    CHECK(eof);
    CHECK(sizes == std::vector<std::int64_t>{5, 0, 3, 4});
    p.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "bad offsets and lengths throw std::out_of_range and start nothing") {
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    tisock::buffer b(8);
    int callbacks = 0;
    auto count = [&](const io_event&) { ++callbacks; };
    CHECK_THROWS_AS(t.client.read(b, 9, 0, count), std::out_of_range);
    CHECK_THROWS_AS(t.client.read(b, 4, 5, count), std::out_of_range);
    CHECK_THROWS_AS(t.client.read(b, 0, 9, count), std::out_of_range);
    CHECK_THROWS_AS(t.client.read(b, 4, std::size_t(-2), count), std::out_of_range);  // offset + length overflows
    CHECK_THROWS_AS(t.client.write(tisock::buffer(8), 9, 0, count), std::out_of_range);
    CHECK_THROWS_AS(t.client.write(tisock::buffer(8), 2, 7, count), std::out_of_range);
    CHECK_THROWS_AS(t.client.write(tisock::buffer(8), 4, std::size_t(-2), count), std::out_of_range);
    run_for_at_least(r, 30ms);
    CHECK(callbacks == 0);
    // No read was left pending: a new one is accepted and gets the data.
    t.client.read(b, 8, 0, count);  // offset == length with length 0 is valid: completes with 0
    REQUIRE(run_until(r, [&] { return callbacks == 1; }));
    int got = 0;
    t.client.read(b, [&](const io_event& e) { got = int(e.bytes_processed); });
    t.inbound.write(tisock::buffer::from_string("ok"), {});
    REQUIRE(run_until(r, [&] { return got == 2; }));
    CHECK(t.client.state() == state::connected);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE("shutdown(): every queued byte arrives before end of stream, and the reply can still be read") {
    watchdog wd(40s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS_AND_STYLES(host, coroutine_style);

    // The peer starts reading only after a pause, so the writes really are queued when
    // shutdown() is called.
    const std::string data = pattern(8u << 20);
    raw_listener l(host);
    std::string received;
    bool eof = false;
    threaded_peer peer(l, [&](raw_peer& p) {
        std::this_thread::sleep_for(200ms);
        received = p.receive_all(&eof);
        p.send_all("thanks, got it all");
        p.shutdown_write();
    });
    tcp client = connect_to(r, l);
    std::string reply;
    int shutdowns = 0;

    if (!coroutine_style) {
        int writes = 0;
        constexpr std::size_t part = 1u << 20;
        for (std::size_t off = 0; off < data.size(); off += part) {
            client.write(buffer_of(std::string_view(data).substr(off, part)), [&](const io_event& e) {
                ++writes;
                CHECK(e.success);
                CHECK(shutdowns == 0);  // every write completes before the shutdown
            });
        }
        client.shutdown([&](tcp& s, std::error_code ec) {
            ++shutdowns;
            CHECK_FALSE(ec);
            CHECK(s == client);
        });
        CHECK(shutdowns == 0);
        tisock::buffer b(64);
        bool reply_done = false;
        std::function<void(const io_event&)> on_read = [&](const io_event& e) {
            REQUIRE(e.success);
            if (e.bytes_processed < 0) {
                reply_done = true;
                return;
            }
            reply += read_text(b, e.bytes_processed);
            client.read(b, on_read);
        };
        client.read(b, on_read);
        REQUIRE(run_until(r, [&] { return reply_done; }, 30s));
        CHECK(writes == 8);
    } else {
        auto send_all = [](tcp c, const std::string& d) -> tisock::task<void> {
            REQUIRE(co_await c.async_write(bytes_of(d)) == d.size());
        };
        auto close_and_listen = [](tcp c, std::string& out, int& done) -> tisock::task<void> {
            co_await c.async_shutdown();  // waits for the write queued ahead of it
            ++done;
            std::byte buf[64];
            for (;;) {
                std::size_t n = co_await c.async_read(buf);
                if (n == 0) break;
                out += text_of({buf, n});
            }
        };
        outcome w, s;
        start(r, send_all(client, data), w);
        start(r, close_and_listen(client, reply, shutdowns), s);
        REQUIRE(run_until(r, [&] { return w.done && s.done; }, 30s));
        CHECK_MESSAGE(!w.error, w.what());
        CHECK_MESSAGE(!s.error, s.what());
    }
    peer.join();
    CHECK(shutdowns == 1);
    CHECK(eof);
    CHECK(received.size() == data.size());
    CHECK(received == data);
    CHECK(reply == "thanks, got it all");
    CHECK(client.state() == state::connected);
    client.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(small_window_client, "shutdown waiting behind a write whose coroutine is destroyed still completes") {
    watchdog wd(20s);
    const std::string big = pattern(4 << 20);
    foreign_coroutine writer = write_in_foreign(s, &big);
    REQUIRE(!writer.done());  // the write is queued: the peer reads nothing
    bool shut = false;
    s.shutdown([&](tcp&, std::error_code) { shut = true; });
    writer.destroy();  // abandons the write: nothing is queued ahead of the shutdown now
    CHECK(run_until(r, [&] { return shut; }, 2000ms));
    CHECK(reactor_is_idle(r));
    s.close();
    peer.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE("a write to a peer that never reads fails with timed_out after the timeout") {
    watchdog wd(30s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS_AND_STYLES(host, coroutine_style);

    raw_listener l(host, 16, 4096);  // a small receive window
    error_log errors;
    tcp client = connect_to(r, l, {.timeout = 200ms, .error = errors.callback()});
    raw_peer p = l.accept();  // never reads
    REQUIRE(p.is_open());
    const std::string data = pattern(64u << 20);  // far more than both socket buffers hold
    std::chrono::milliseconds elapsed{0};

    if (!coroutine_style) {
        int writes = 0;
        io_event result{client, 0, true, {}, {}};
        stopwatch sw;
        client.write(buffer_of(data), [&](const io_event& e) {
            ++writes;
            result = e;
            elapsed = sw.elapsed();
        });
        REQUIRE(run_until(r, [&] { return writes > 0; }, 10s));
        CHECK(writes == 1);
        CHECK_FALSE(result.success);
        CHECK(result.bytes_processed == -1);
        CHECK(result.code == std::errc::timed_out);
    } else {
        outcome o;
        stopwatch sw;
        start(r, [](tcp c, const std::string& d) -> tisock::task<void> { (void)co_await c.async_write(bytes_of(d)); }(
                     client, data), o);
        REQUIRE(run_until(r, [&] { return o.done; }, 10s));
        elapsed = sw.elapsed();
        CHECK(o.threw<std::system_error>());
        CHECK(o.code() == std::errc::timed_out);
    }
    REQUIRE(run_until(r, [&] { return errors.count > 0; }));
    run_for_at_least(r, 50ms);
    CHECK(elapsed >= 200ms);
    CHECK(elapsed < 5000ms);
    CHECK(errors.count == 1);
    CHECK(errors.code == std::errc::timed_out);
    CHECK(client.state() == state::error);
    CHECK(client.native_handle() == -1);
    p.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "writing to a peer that has gone away fails without SIGPIPE") {
    TISOCK_LOOPBACK_HOSTS(host);

    raw_listener l(host);
    error_log errors;
    tcp client = connect_to(r, l, {.error = errors.callback()});
    raw_peer p = l.accept();
    p.close();  // a plain close: our first bytes draw a reset, later writes hit EPIPE
    std::vector<io_event> results;
    for (int i = 0; i < 50 && errors.count == 0; ++i) {
        if (client.state() != state::connected) break;
        client.write(tisock::buffer::from_string("anyone there?"), [&](const io_event& e) { results.push_back(e); });
        run_for_at_least(r, 10ms);
    }
    REQUIRE(run_until(r, [&] { return errors.count > 0; }));
    run_for_at_least(r, 50ms);
    CHECK(errors.count == 1);
    CHECK((errors.code == std::errc::broken_pipe || errors.code == std::errc::connection_reset));
    CHECK(client.state() == state::error);
    REQUIRE_FALSE(results.empty());
    CHECK_FALSE(results.back().success);
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE("full duplex: a read and a write wait on one socket at once") {
    watchdog wd(40s);
    tisock::reactor r;
    descriptor_baseline fds;
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    const std::string a = pattern(4u << 20), b = pattern((4u << 20) + 17);
    auto writer = [](tcp s, const std::string& out) -> tisock::task<void> {
        REQUIRE(co_await s.async_write(bytes_of(out)) == out.size());
    };
    auto reader = [](tcp s, std::size_t expect, std::string& in) -> tisock::task<void> {
        std::vector<std::byte> buf(64 * 1024);
        while (in.size() < expect) {
            std::size_t n = co_await s.async_read(buf);
            REQUIRE(n > 0);
            in += text_of({buf.data(), n});
        }
    };
    std::string at_inbound, at_client;
    outcome w1, w2, r1, r2;
    // Both sides write first: neither reads until both send buffers are full.
    start(r, writer(t.client, a), w1);
    start(r, writer(t.inbound, b), w2);
    start(r, reader(t.client, b.size(), at_client), r1);
    start(r, reader(t.inbound, a.size(), at_inbound), r2);
    REQUIRE(run_until(r, [&] { return w1.done && w2.done && r1.done && r2.done; }, 30s));
    for (outcome* o : {&w1, &w2, &r1, &r2}) CHECK_MESSAGE(!o->error, o->what());
    CHECK(at_inbound == a);
    CHECK(at_client == b);
    t.close_all();
    check_nothing_left(r, fds);
}

// ---- try_write (beyond the spec: libuv's uv_try_write) --------------------------------------

TEST_CASE("try_write hands the kernel what it takes now, keeps FIFO order behind queued writes, and refuses misuse") {
    tisock::reactor r;
    descriptor_baseline fds;
    {
        socket_trio t = connect_trio(r, "127.0.0.1");
        const std::string hello = "hello";
        CHECK(t.client.try_write(bytes_of(hello)) == hello.size());

        std::string received;
        tisock::buffer into(64);
        t.inbound.read(into, [&](const io_event& e) { received = into.to_string().substr(0, std::size_t(e.bytes_processed)); });
        REQUIRE(run_until(r, [&] { return !received.empty(); }));
        CHECK(received == hello);

        // Fill the kernel's buffers (nobody reads), then queue one more write: try_write must
        // not jump the queue, so it takes nothing.
        std::vector<std::byte> chunk(1 << 20, std::byte{'x'});
        std::size_t taken = 0;
        for (int i = 0; i < 64; ++i) taken += t.client.try_write(chunk);
        CHECK(taken > 0);
        CHECK(t.client.try_write(chunk) == 0);  // the kernel is full
        bool queued_done = false;
        t.client.write(tisock::buffer::from_string("tail"), [&](const io_event&) { queued_done = true; });
        CHECK(t.client.try_write(bytes_of(hello)) == 0);  // behind the queued write
        CHECK_FALSE(queued_done);

        t.client.shutdown();
        CHECK_THROWS_AS((void)t.client.try_write(bytes_of(hello)), state_error);
        t.close_all();
        r.run_for(100ms);
        CHECK_THROWS_AS((void)t.client.try_write(bytes_of(hello)), state_error);  // closed
    }
    REQUIRE(run_until(r, [&] { return fds.leaked() == 0; }));
    check_nothing_left(r, fds);
}
