// Review findings: each case failed on the code it was written against (see the commit
// that added it). Over real loopback sockets.
#include <doctest/doctest.h>

#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "support.hpp"

using namespace tisock_test;
using tisock::io_event;
using tisock::state;
using tisock::tcp;

namespace {

// Runs `r` until `done()` or `limit`, swallowing (and counting) `boom` thrown by callbacks.
template <class Predicate>
bool run_through_booms(tisock::reactor& r, Predicate done, int& booms, std::chrono::milliseconds limit = 3000ms) {
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

// A client whose send buffer fills at once: the raw peer advertises a small window and
// reads nothing until told to.
tcp connect_small(tisock::reactor& r, raw_listener& l, raw_peer& peer) {
    tcp s(r, {.host = l.host(), .port = l.port()});
    s.connect();
    REQUIRE(run_until(r, [&] { return !s.is_connecting(); }));
    REQUIRE(s.state() == state::connected);
    int small = 4096;
    REQUIRE(::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    peer = l.accept();
    REQUIRE(peer.is_open());
    return s;
}

// The set-up of the queued-write cases: `s`, connected by connect_small, whose writes queue
// behind a `peer` that reads nothing until told to. It runs before the case's watchdog
// starts; run_until's and accept's limits bound it.
struct small_window_client {
    tisock::reactor r;
    raw_listener l{"127.0.0.1", 16, 4096};
    raw_peer peer;
    tcp s = connect_small(r, l, peer);
};

foreign_coroutine write_in_foreign(tcp s, const std::string* data) { co_await s.async_write(bytes_of(*data)); }

}  // namespace

TEST_CASE("review: a connected callback that throws still resumes the coroutine awaiting async_connect") {
    watchdog wd(20s);
    tisock::reactor r;
    raw_listener l("127.0.0.1");
    tcp s(r, {.host = "127.0.0.1", .port = l.port(), .connected = [](tcp&) { throw boom(); }});
    outcome out;
    start(r, [](tcp s) -> tisock::task<void> { co_await s.async_connect(); }(s), out);
    int booms = 0;
    CHECK(run_through_booms(r, [&] { return out.done; }, booms));
    CHECK(booms == 1);
    CHECK(out.done);
    CHECK_MESSAGE(!out.error, out.what());
    CHECK(s.state() == state::connected);
    s.close();
    CHECK(reactor_is_idle(r));
}

TEST_CASE_FIXTURE(small_window_client, "review: a write callback that throws does not strand the writes queued behind it") {
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
    CHECK(reactor_is_idle(r));
}

TEST_CASE_FIXTURE(small_window_client, "review: shutdown waiting behind a write whose coroutine is destroyed still completes") {
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
}

TEST_CASE("review: a stream::read_all callback that throws propagates out of run(), never std::terminate") {
    watchdog wd(20s);
    tisock::reactor r;
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
    CHECK(reactor_is_idle(r));
}

TEST_CASE("review: a stream::pump handler that throws propagates out of run(), never std::terminate") {
    watchdog wd(20s);
    tisock::reactor r;
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
    CHECK(reactor_is_idle(r));
}

TEST_CASE("review: a reactor destroyed with every kind of pending thing runs nothing and leaks nothing") {
    watchdog wd(30s);
    tracked::reset();
    descriptor_baseline fds;
    int callbacks = 0;
    std::optional<foreign_coroutine> foreign;
    {
        tisock::reactor r;
        raw_listener l("127.0.0.1", 16, 4096);
        // Set-up that needs the reactor to run.
        raw_peer stuck_peer, quick_peer, pump_peer;
        tcp stuck = connect_small(r, l, stuck_peer);
        tcp quick = connect_small(r, l, quick_peer);
        tcp pumped = connect_small(r, l, pump_peer);
        tcp listener = make_listener(r, "127.0.0.1", {.accepted = [&, t = tracked()](tcp&, tcp) { ++callbacks; }});
        raw_peer early = raw_peer::connect("127.0.0.1", listener.port());
        run_for_at_least(r, 50ms);  // the connection waits in the listener's user-space queue

        // From here on the reactor never runs again.
        // A hostname connect: the resolver job is in flight (or its result already posted).
        tcp resolving(r, {.host = "localhost", .port = l.port(), .connected = [&, t = tracked()](tcp&) { ++callbacks; }});
        resolving.connect();
        // A coroutine (not started yet: its start is queued) and one awaiting a connect.
        outcome co, co2;
        tcp connecting(r, {.host = "127.0.0.1", .port = l.port()});
        start(r, [](tcp s, tracked) -> tisock::task<void> { co_await s.async_connect(); }(connecting, tracked()), co);
        r.poll();  // starts the coroutine: it suspends in async_connect
        start(r, [](tracked) -> tisock::task<void> { co_return; }(tracked()), co2);
        // accept() with a connection pending: a delivery is queued.
        listener.accept();
        // A stuck write with a shutdown behind it; a write completed at once whose callback
        // is queued, with a foreign coroutine's write behind it.
        stuck.write(buffer_of(pattern(8u << 20)), [&, t = tracked()](const io_event&) { ++callbacks; });
        stuck.shutdown([&, t = tracked()](tcp&, std::error_code) { ++callbacks; });
        quick.write(buffer_of(pattern(8u << 20)), [&, t = tracked()](const io_event&) { ++callbacks; });
        static const std::string tail = "tail";
        foreign.emplace(write_in_foreign(quick, &tail));
        // A pump spawned (its runner's start is queued), and a posted handler.
        tisock::stream::pump(pumped, [&, t = tracked()](const tisock::pump_event<tcp>&) { ++callbacks; }, 64);
        r.post([&, t = tracked()] { ++callbacks; });
        CHECK(callbacks == 0);
        CHECK(tracked::alive() > 0);
    }
    CHECK(callbacks == 0);
    CHECK(tracked::alive() == 0);
    foreign.reset();  // a foreign frame is its owner's to destroy, after the reactor too
    check_nothing_left(fds);
}
