// Fault suite, re-entrancy and races: closing a socket, or dropping the last handle to it,
// from inside every callback; closing while a coroutine is suspended in a read;
// cancellation racing completion 100,000 times; an exception thrown by a user callback
// (connected, read, write, stream::read_all and pump): it leaves run() and strands nothing.
#include <doctest/doctest.h>

#include <optional>

#include "fault_support.hpp"

using namespace fault_test;
using tisock::io_event;
using tisock::reactor;
using tisock::state;
using tisock::tcp;
// The socket tests' helpers for the exception cases (raw_listener and run_until are
// fault_test's here: tisock_test's are named in full).
using tisock_test::boom;
using tisock_test::buffer_of;
using tisock_test::connect_trio;
using tisock_test::outcome;
using tisock_test::pattern;
using tisock_test::small_window_client;
using tisock_test::socket_trio;
using tisock_test::start;
using tisock_test::watchdog;

namespace {

enum class action { close, drop };
const char* name_of(action a) { return a == action::close ? "close" : "drop the last handle"; }

// Every callback of one socket, counted; `after` counts any that arrive once the action ran.
struct tally {
    int connected = 0, errors = 0, accepted = 0, reads = 0, writes = 0, shutdowns = 0;
    int after = 0;
    bool acted = false;
    void note() {
        if (acted) ++after;
    }
};

// Connects a library client (holding its only handle in `holder`) to a raw listener.
struct client_fixture {
    raw_fd listener;
    raw_fd peer;
    int port = 0;
    std::optional<tcp> holder;
    tally t;

    client_fixture(reactor& r, std::function<void(tcp&)> on_connected = {}) {
        listener = raw_listener("127.0.0.1", 16, port);
        holder.emplace(r, tisock::tcp_options{.host = "127.0.0.1",
                                              .port = port,
                                              .connected =
                                                  [this, on_connected](tcp& s) {
                                                      t.note();
                                                      ++t.connected;
                                                      if (on_connected) on_connected(s);
                                                  },
                                              .error = [this](tcp&, const std::string&, std::error_code) {
                                                  t.note();
                                                  ++t.errors;
                                              }});
    }
    void connect(reactor& r) {
        holder->connect();
        REQUIRE(run_until(r, [&] { return t.connected + t.errors > 0; }));
        peer = raw_accept(listener.get());
    }
    // Runs the action on `s` (the callback's own handle) and records it.
    void act(action a, const tcp& s) {
        t.acted = true;
        if (a == action::close) {
            s.close();
            CHECK(s.state() == state::closed);
            CHECK(s.native_handle() == -1);
        } else {
            holder.reset();  // the callback's parameter keeps the socket alive until it returns
        }
    }
    // After the action, the peer sees the connection end (FIN, or reset for unread data).
    void check_peer_sees_end() {
        REQUIRE(peer);
        int err = 0;
        (void)raw_read_to_eof(peer.get(), 2s, &err);
        CHECK((err == 0 || err == ECONNRESET));
    }
};

tisock::task<void> read_until_canceled(tcp s, std::error_code& ec, int& completions) {
    std::array<std::byte, 32> buf{};
    try {
        (void)co_await s.async_read(buf);
    } catch (const std::system_error& e) {
        ec = e.code();
    }
    ++completions;
}

void inside_connected(reactor& r, action a) {
    client_fixture* self = nullptr;
    client_fixture c(r, [&](tcp& s) { self->act(a, s); });
    self = &c;
    c.connect(r);
    pump(r, 50ms);
    CHECK(c.t.connected == 1);
    CHECK(c.t.after == 0);
    c.check_peer_sees_end();
}

void inside_read(reactor& r, action a) {
    client_fixture c(r);
    c.connect(r);
    const tcp s = *c.holder;
    tisock::buffer into(64);
    int write_done = 0;
    std::error_code write_code;
    s.write(tisock::buffer(8u << 20), [&](const io_event& e) {
        c.t.note();
        ++write_done;
        write_code = e.code;
    });
    s.read(into, [&](const io_event& e) {
        c.t.note();
        ++c.t.reads;
        CHECK(e.success);
        c.act(a, e.source);
    });
    send_all(c.peer.get(), "go");
    REQUIRE(run_until(r, [&] { return c.t.reads == 1; }));
    if (a == action::close) {
        REQUIRE(run_until(r, [&] { return write_done == 1; }));
        CHECK(write_code == std::errc::operation_canceled);  // a callback after close(), by design
        c.t.after -= 1;
    } else {
        // Dropping the handle does not end operations in flight (API.md): the
        // write keeps its socket until the peer reads or goes away.
        c.peer.reset();
        REQUIRE(run_until(r, [&] { return write_done == 1; }));
        c.t.after -= 1 + c.t.errors;
    }
    pump(r, 20ms);
    CHECK(c.t.reads == 1);
    CHECK(c.t.after == 0);
    if (a == action::close) c.check_peer_sees_end();
}

void inside_write(reactor& r, action a) {
    client_fixture c(r);
    c.connect(r);
    const tcp s = *c.holder;
    std::vector<std::error_code> codes;
    for (int i = 0; i < 3; ++i) {
        s.write(tisock::buffer::from_string("w" + std::to_string(i)), [&, i](const io_event& e) {
            codes.push_back(e.code);
            if (i == 0) c.act(a, e.source);
        });
    }
    REQUIRE(run_until(r, [&] { return codes.size() == 3; }));
    pump(r, 20ms);
    CHECK(codes.size() == 3);
    for (auto& ec : codes) CHECK(!ec);  // all three reached the kernel inside write()
    std::string got = raw_read_to_eof(c.peer.get(), 2s);
    CHECK(got == "w0w1w2");
}

void inside_shutdown_done(reactor& r, action a) {
    client_fixture c(r);
    c.connect(r);
    const tcp s = *c.holder;
    s.write(tisock::buffer::from_string("before shutdown"), {});
    s.shutdown([&](tcp& sock, std::error_code ec) {
        c.t.note();
        ++c.t.shutdowns;
        CHECK(!ec);
        c.act(a, sock);
    });
    REQUIRE(run_until(r, [&] { return c.t.shutdowns == 1; }));
    pump(r, 20ms);
    CHECK(c.t.after == 0);
    CHECK(raw_read_to_eof(c.peer.get(), 2s) == "before shutdown");
}

// Runs `r` until `done()` or `limit`, swallowing (and counting) `boom` thrown by callbacks.
template <class Predicate>
bool run_through_booms(reactor& r, Predicate done, int& booms, milliseconds limit = 3000ms) {
    auto deadline = test_clock::now() + limit;
    while (!done()) {
        if (test_clock::now() >= deadline) return false;
        try {
            if (r.run_for(10ms) == 0) std::this_thread::sleep_for(1ms);
        } catch (const boom&) {
            ++booms;
        }
    }
    return true;
}

// Runs `body` twice, with close() and with dropping the last handle, each time on a reactor
// of its own, and checks that no descriptor is left once that reactor is gone.
template <class Body>
void with_each_action(Body body) {
    for (action a : {action::close, action::drop}) {
        CAPTURE(name_of(a));
        descriptor_baseline fds;
        {
            reactor r;
            body(r, a);
        }
        check_nothing_left(fds);
    }
}

}  // namespace

TEST_CASE("close() or dropping the last handle inside the connected callback") { with_each_action(inside_connected); }

TEST_CASE("close() or dropping the last handle inside a read callback") { with_each_action(inside_read); }

TEST_CASE("close() or dropping the last handle inside a write callback") { with_each_action(inside_write); }

TEST_CASE("close() or dropping the last handle inside the shutdown callback") { with_each_action(inside_shutdown_done); }

TEST_CASE("inside the error callback close() throws state_error; dropping the last handle is safe") {
    with_each_action([](reactor& r, action a) {
        std::optional<tcp> holder;
        int errors = 0, threw = 0;
        holder.emplace(r, tisock::tcp_options{.host = "127.0.0.1",
                                              .port = closed_port("127.0.0.1"),
                                              .error = [&](tcp& s, const std::string&, std::error_code) {
                                                  ++errors;
                                                  if (a == action::close) {
                                                      try {
                                                          s.close();
                                                      } catch (const tisock::state_error&) {
                                                          ++threw;
                                                      }
                                                      CHECK(s.state() == state::error);
                                                  } else {
                                                      holder.reset();
                                                      CHECK(s.state() == state::error);
                                                  }
                                              }});
        holder->connect();
        REQUIRE(run_until(r, [&] { return errors > 0; }));
        pump(r, 20ms);
        CHECK(errors == 1);
        CHECK(threw == (a == action::close ? 1 : 0));
        CHECK(holder.has_value() == (a == action::close));
    });
}

TEST_CASE("closing or dropping the listener, and closing the inbound socket, inside accepted") {
    with_each_action([](reactor& r, action a) {
        std::optional<tcp> listener;
        int accepted = 0, later = 0;
        int inbound_fd = -2;
        listener.emplace(r, tisock::tcp_options{.host = "127.0.0.1",
                                                .port = 0,
                                                .accepted = [&](tcp& l, tcp in) {
                                                    if (accepted++ > 0) ++later;
                                                    inbound_fd = in.native_handle();
                                                    CHECK(in.state() == state::connected);
                                                    in.close();
                                                    if (a == action::close) {
                                                        l.close();
                                                        CHECK(l.state() == state::closed);
                                                    } else {
                                                        listener.reset();
                                                    }
                                                }});
        listener->listen();
        int port = listener->port();
        listener->accept();
        raw_fd client = raw_connect("127.0.0.1", port);
        REQUIRE(run_until(r, [&] { return accepted == 1; }));
        pump(r, 20ms);
        CHECK(accepted == 1);
        CHECK(later == 0);
        CHECK(inbound_fd >= 0);
        CHECK(raw_read_to_eof(client.get(), 2s).empty());  // the inbound socket was closed
        raw_fd refused = raw_connect("127.0.0.1", port);
        CHECK_FALSE(refused);  // nothing listens there any more
    });
}

TEST_CASE_FIXTURE(descriptors_checked, "closing while another coroutine is suspended in a read: operation_canceled") {
    reactor r;
    client_fixture c(r);
    c.connect(r);
    std::error_code ec;
    int completions = 0;
    tisock::spawn(r, read_until_canceled(*c.holder, ec, completions));
    auto closer = [](reactor& rr, tcp s) -> tisock::task<void> {
        co_await rr.sleep_for(10ms);
        s.close();
    };
    tisock::spawn(r, closer(r, *c.holder));
    REQUIRE(run_until(r, [&] { return completions == 1; }));
    pump(r, 20ms);
    CHECK(completions == 1);
    CHECK(ec == std::errc::operation_canceled);
    CHECK(c.holder->state() == state::closed);
    CHECK(c.t.errors == 0);
    c.check_peer_sees_end();
}

TEST_CASE_FIXTURE(descriptors_checked, "an exception from a read callback propagates out of run(); the reactor keeps serving") {
    reactor r;
    client_fixture a(r), b(r);
    a.connect(r);
    b.connect(r);
    tisock::buffer into_a(16), into_b(16);
    int b_reads = 0;
    a.holder->read(into_a, [](const io_event&) { throw std::runtime_error("user callback failed"); });
    b.holder->read(into_b, [&](const io_event& e) { b_reads += e.success ? 1 : 100; });
    send_all(a.peer.get(), "boom");
    bool thrown = false;
    try {
        r.run_for(1000ms);
    } catch (const std::runtime_error& e) {
        thrown = std::string(e.what()) == "user callback failed";
    }
    CHECK(thrown);
    send_all(b.peer.get(), "fine");
    REQUIRE(run_until(r, [&] { return b_reads > 0; }));
    CHECK(b_reads == 1);
    CHECK(into_b.to_string().substr(0, 4) == "fine");
    // The socket whose callback threw is intact too.
    CHECK(a.holder->state() == state::connected);
    int a_reads = 0;
    a.holder->read(into_a, [&](const io_event& e) { a_reads += e.success ? 1 : 100; });
    send_all(a.peer.get(), "again");
    REQUIRE(run_until(r, [&] { return a_reads > 0; }));
    CHECK(a_reads == 1);
    a.holder->close();
    b.holder->close();
}

TEST_CASE_FIXTURE(descriptors_checked, "an exception from the connected callback propagates out of run(); the socket is connected all the same") {
    reactor r;
    client_fixture c(r, [](tcp&) { throw std::runtime_error("connected failed"); });
    c.holder->connect();
    bool thrown = false;
    try {
        r.run_for(1000ms);
    } catch (const std::runtime_error&) {
        thrown = true;
    }
    CHECK(thrown);
    CHECK(c.holder->state() == state::connected);
    c.holder->close();
}

TEST_CASE("an exception from the connected callback still resumes the coroutine awaiting async_connect") {
    watchdog wd(20s);
    reactor r;
    descriptor_baseline fds;
    tisock_test::raw_listener l("127.0.0.1");
    tcp s(r, {.host = "127.0.0.1", .port = l.port(), .connected = [](tcp&) { throw boom(); }});
    outcome out;
    start(r, [](tcp sock) -> tisock::task<void> { co_await sock.async_connect(); }(s), out);
    int booms = 0;
    CHECK(run_through_booms(r, [&] { return out.done; }, booms));
    CHECK(booms == 1);
    CHECK(out.done);
    CHECK_MESSAGE(!out.error, out.what());
    CHECK(s.state() == state::connected);
    s.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(small_window_client, "an exception from a write callback does not strand the writes queued behind it") {
    watchdog wd(30s);
    const std::string big = pattern(1 << 20);
    const std::string tail = "tail";
    bool first_done = false, second_done = false, shut = false;
    s.write(buffer_of(big), [&](const io_event& e) {
        CHECK(e.success);
        first_done = true;
        throw boom();
    });
    s.write(buffer_of(tail), [&](const io_event& e) {
        CHECK(e.success);
        second_done = true;
    });
    s.shutdown([&](tcp&, std::error_code ec) {
        CHECK(!ec);
        shut = true;
    });
    std::string received;
    std::thread reader([&] { received = peer.receive_all(); });
    int booms = 0;
    CHECK(run_through_booms(r, [&] { return first_done && second_done && shut; }, booms, 10000ms));
    CHECK(booms == 1);
    CHECK(second_done);
    CHECK(shut);
    if (!shut) peer.set_receive_timeout(10ms);  // let the reader give up
    reader.join();
    CHECK(received.size() == big.size() + (second_done ? tail.size() : 0));
    s.close();
    peer.close();
    l.close();
    check_nothing_left(r, fds);
}

TEST_CASE("an exception from a stream::read_all callback propagates out of run(), never std::terminate") {
    watchdog wd(20s);
    reactor r;
    descriptor_baseline fds;
    socket_trio t = connect_trio(r, "127.0.0.1");
    tisock::buffer into;
    bool called = false;
    tisock::stream::read_all(t.inbound, into, [&](const io_event& e) {
        CHECK(e.success);
        called = true;
        throw boom();
    });
    t.client.write(buffer_of("abc"), {});
    t.client.close();
    int booms = 0;
    CHECK(run_through_booms(r, [&] { return called && booms > 0; }, booms));
    CHECK(booms == 1);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE("an exception from a stream::pump handler propagates out of run(), never std::terminate") {
    watchdog wd(20s);
    reactor r;
    descriptor_baseline fds;
    socket_trio t = connect_trio(r, "127.0.0.1");
    int calls = 0;
    tisock::stream::pump(
        t.inbound,
        [&](const tisock::pump_event<tcp>&) {
            ++calls;
            throw boom();
        },
        64);
    t.client.write(buffer_of("abc"), {});
    int booms = 0;
    CHECK(run_through_booms(r, [&] { return booms > 0; }, booms));
    CHECK(booms == 1);
    CHECK(calls == 1);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(descriptors_checked, "writes racing close(): 2,000 connections x 50 writes, each completes exactly once") {
    reactor r;
    int port = 0;
    raw_fd listener = raw_listener("127.0.0.1", 64, port);
    // Small buffers on both sides, so the large write of each connection is still
    // being sent when close() comes: some writes finish, the rest are canceled.
    int small = 4096;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);  // inherited by accepted peers
    const std::string source = [] {
        std::string s(1u << 20, '\0');
        for (std::size_t i = 0; i < s.size(); ++i) s[i] = char((i * 131 + (i >> 12) * 7) & 0xff);
        return s;
    }();
    constexpr int connections = 2000, per_connection = 50;
    long total_ops = 0, succeeded_total = 0, canceled_total = 0;
    bool all_ok = true;
    for (int i = 0; i < connections && all_ok; ++i) {
        int connected = 0;
        tcp s(r, {.host = "127.0.0.1", .port = port, .connected = [&](tcp&) { ++connected; }});
        s.connect();
        REQUIRE(run_until(r, [&] { return connected == 1; }));
        raw_fd peer = raw_accept(listener.get());
        REQUIRE(peer);
        ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        std::vector<std::pair<int, std::error_code>> log;
        std::vector<std::size_t> sizes;
        std::string expected;
        for (int k = 0; k < per_connection; ++k) {
            std::size_t size = (k == i % per_connection) ? (32u << 10) : 1 + std::size_t(k * 7919 + i * 104729) % 2048;
            std::size_t offset = std::size_t(k * 4099 + i) % (source.size() - size);
            tisock::buffer b(size);
            std::memcpy(b.data(), source.data() + offset, size);
            expected.append(source, offset, size);
            sizes.push_back(size);
            s.write(std::move(b), [&log, k](const io_event& e) { log.push_back({k, e.code}); });
        }
        s.close();  // races the writes still queued, and the completions already queued
        if (!run_until(r, [&] { return log.size() == std::size_t(per_connection); })) all_ok = false;
        pump(r, 0ms);
        std::string got = raw_read_to_eof(peer.get(), 5s);
        std::size_t ok_bytes = 0;
        int succeeded = 0;
        for (int k = 0; k < int(log.size()); ++k) {
            if (log[std::size_t(k)].first != k) all_ok = false;  // FIFO
            if (!log[std::size_t(k)].second) {
                if (succeeded != k) all_ok = false;  // successes form a prefix
                ++succeeded;
                ok_bytes += sizes[std::size_t(k)];
            } else if (log[std::size_t(k)].second != std::errc::operation_canceled) {
                all_ok = false;
            }
        }
        if (log.size() != std::size_t(per_connection)) all_ok = false;
        // Delivered: every successful write, plus maybe part of the first canceled one.
        std::size_t limit = ok_bytes + (succeeded < per_connection ? sizes[std::size_t(succeeded)] : 0);
        if (got.size() < ok_bytes || got.size() > limit || expected.compare(0, got.size(), got) != 0) all_ok = false;
        if (!all_ok) MESSAGE("connection " << i << ": " << log.size() << " completions, " << succeeded << " ok, "
                                           << got.size() << " bytes delivered (" << ok_bytes << " acknowledged)");
        total_ops += long(log.size());
        succeeded_total += succeeded;
        canceled_total += long(log.size()) - succeeded;
    }
    CHECK(all_ok);
    CHECK(total_ops == long(connections) * per_connection);
    CHECK(succeeded_total > 0);
    CHECK(canceled_total > 0);  // the race really happened both ways
    MESSAGE("writes racing close(): " << succeeded_total << " completed, " << canceled_total << " canceled by close()");
}

TEST_CASE_FIXTURE(descriptors_checked, "a read deadline racing its data: every read completes exactly once, no byte lost") {
    reactor r;
    client_fixture c(r);
    c.connect(r);
    int peer_fd = c.peer.get();
    int one = 1;
    ::setsockopt(peer_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct stats {
        int completions = 0, timeouts = 0, with_data = 0, other = 0;
        std::size_t bytes = 0;
        bool finished = false;
    } st;
    constexpr int iterations = 2000;
    auto racer = [](reactor& rr, tcp s, int fd, int n, stats& out) -> tisock::task<void> {
        std::array<std::byte, 64> buf{};
        for (int i = 0; i < n; ++i) {
            // After the read is armed: busy for 0.5, 1.0 or 1.5 ms, then the byte is sent,
            // so the 1 ms deadline and the data land before, with or after each other.
            auto spin = std::chrono::microseconds(500 * (1 + i % 3));
            rr.post([fd, spin] {
                auto until = test_clock::now() + spin;
                while (test_clock::now() < until) {
                }
                (void)::send(fd, "x", 1, MSG_NOSIGNAL);
            });
            try {
                std::size_t got = co_await s.async_read(buf, 1ms);
                ++out.with_data;
                out.bytes += got;
            } catch (const std::system_error& e) {
                if (e.code() == std::errc::timed_out) {
                    ++out.timeouts;
                } else {
                    ++out.other;
                }
            }
            ++out.completions;
        }
        // Whatever a timed-out read left behind is still there.
        while (out.bytes < std::size_t(n) && out.other == 0) {
            try {
                out.bytes += co_await s.async_read(buf, 500ms);
            } catch (const std::system_error&) {
                ++out.other;
            }
        }
        out.finished = true;
    };
    tisock::spawn(r, racer(r, *c.holder, peer_fd, iterations, st));
    REQUIRE(run_until(r, [&] { return st.finished; }, 30s));
    CHECK(st.completions == iterations);
    CHECK(st.timeouts + st.with_data == iterations);
    CHECK(st.other == 0);
    CHECK(st.bytes == std::size_t(iterations));
    CHECK(st.timeouts > 0);
    CHECK(st.with_data > 0);
    CHECK(c.holder->state() == state::connected);  // a read deadline is not a socket error
    CHECK(c.t.errors == 0);
    MESSAGE("reads racing their deadline: " << st.with_data << " got data, " << st.timeouts << " timed out");
    c.holder->close();
}
