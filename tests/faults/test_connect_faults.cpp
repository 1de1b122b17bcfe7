// Fault suite, connect side: refused, blackholed, unreachable and exhausted connects,
// cancellation of a connect in flight, host/port validation. Every failure must arrive from the reactor (never inside connect()), move
// the socket to `error` with its descriptor closed, and run the error callback once.
#include <doctest/doctest.h>

#include <fstream>
#include <optional>

#include "fault_support.hpp"

using namespace fault_test;
using tisock::reactor;
using tisock::state;
using tisock::tcp;

namespace {

// Counts every callback of one socket (libuv's connect_cb_called / close_cb_called).
struct counts {
    int connected = 0;
    int errors = 0;
    std::error_code code;
    state state_in_error = state::initialized;
    int handle_in_error = 0;
    bool inside_call = false;  // set while connect() runs: no callback may see it set
    bool ran_inside_call = false;

    tisock::tcp_options options(std::string host, int port, milliseconds timeout = 0ms) {
        tisock::tcp_options o;
        o.host = std::move(host);
        o.port = port;
        o.timeout = timeout;
        o.connected = [this](tcp&) {
            ++connected;
            ran_inside_call |= inside_call;
        };
        o.error = [this](tcp& s, const std::string& message, std::error_code ec) {
            ++errors;
            code = ec;
            state_in_error = s.state();
            handle_in_error = s.native_handle();
            ran_inside_call |= inside_call;
            CHECK_FALSE(message.empty());
        };
        return o;
    }
    void connect(const tcp& s) {
        inside_call = true;
        s.connect();
        inside_call = false;
    }
};

// How a connect that fails once ended, checked inside a namespace body (no doctest there):
// "" when it did as expected, else what went wrong.
std::string failed_once(const counts& c, const tcp& s, std::errc expected) {
    if (c.ran_inside_call) return "a callback ran inside connect()";
    if (c.errors != 1) return "error callback ran " + std::to_string(c.errors) + " times";
    if (c.code != expected) return "unexpected error: " + c.code.message();
    if (s.state() != state::error || s.native_handle() != -1) return "socket not in error with its descriptor closed";
    return "";
}

// A listener whose kernel accept queue is full and which never accepts: the next SYN is
// dropped, so a connect to it hangs (no root needed).
struct blackhole {
    raw_fd listener;
    std::vector<raw_fd> fillers;
    int port = 0;
    blackhole() {
        listener = raw_listener("127.0.0.1", 1, port);
        for (int i = 0; i < 3; ++i) fillers.push_back(raw_connect("127.0.0.1", port, true));
        std::this_thread::sleep_for(50ms);  // let the handshakes that fit complete
    }
};

tisock::task<void> connect_expecting(tcp s, std::error_code& out, int& completions) {
    try {
        co_await s.async_connect();
    } catch (const std::system_error& e) {
        out = e.code();
    }
    ++completions;
}

tisock::task<void> close_after(reactor& r, tcp s, milliseconds d) {
    co_await r.sleep_for(d);
    s.close();
}

// A coroutine connect to 127.0.0.1:port that close() ends after `delay`: its outcome lands
// in ec and completions, the callbacks in c.
struct closed_connect {
    counts c;
    tcp s;
    std::error_code ec;
    int completions = 0;

    closed_connect(reactor& r, int port, milliseconds delay) : s(r, c.options("127.0.0.1", port)) {
        tisock::spawn(r, connect_expecting(s, ec, completions));
        tisock::spawn(r, close_after(r, s, delay));
    }
    closed_connect(const closed_connect&) = delete;
    closed_connect& operator=(const closed_connect&) = delete;

    // It completed once, canceled, and no callback ran.
    void check_canceled_without_callbacks() const {
        CHECK(completions == 1);
        CHECK(ec == std::errc::operation_canceled);
        CHECK(c.errors == 0);
        CHECK(c.connected == 0);
    }
};

}  // namespace

TEST_CASE("a refused connection on 127.0.0.1 and ::1 is reported from the reactor, never inside connect()") {
    for (const char* host : {"127.0.0.1", "::1"}) {
        CAPTURE(host);
        descriptor_baseline fds;
        {
            reactor r;
            counts c;
            tcp s(r, c.options(host, closed_port(host)));
            stopwatch t0;
            c.connect(s);
            CHECK(c.errors == 0);
            REQUIRE(run_until(r, [&] { return c.errors > 0; }, 5s));
            pump(r, 20ms);  // nothing more may arrive
            CHECK(t0.elapsed() < 1000ms);  // refused fast, not by a timer
            CHECK(c.errors == 1);
            CHECK(c.connected == 0);
            CHECK_FALSE(c.ran_inside_call);
            CHECK(c.code == std::errc::connection_refused);
            CHECK(c.state_in_error == state::error);
            CHECK(c.handle_in_error == -1);
            CHECK(s.state() == state::error);
            CHECK(s.native_handle() == -1);
            CHECK_FALSE(s.is_connecting());

            // The coroutine face reports the same error as an exception.
            std::error_code ec;
            int completions = 0;
            tisock::sync_wait(r, connect_expecting(s, ec, completions));
            CHECK(completions == 1);
            CHECK(ec == std::errc::connection_refused);
            pump(r, 20ms);  // the observer is queued after the coroutine's completion
            CHECK(c.errors == 2);  // the error observer runs for the coroutine style too
            CHECK(s.state() == state::error);
        }
        check_nothing_left(fds);
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "a connect timeout against a blackhole (full accept queue): timed_out after the timeout") {
    blackhole hole;
    REQUIRE(hole.listener);
    reactor r;
    counts c;
    tcp s(r, c.options("127.0.0.1", hole.port, 200ms));
    stopwatch t0;
    c.connect(s);
    CHECK(s.is_connecting());
    CHECK(s.state() == state::initialized);
    REQUIRE(run_until(r, [&] { return c.errors > 0; }, 5s));
    auto elapsed = t0.elapsed();
    pump(r, 20ms);
    CHECK(elapsed >= 200ms);
    CHECK(elapsed < 2000ms);
    CHECK(c.errors == 1);
    CHECK(c.connected == 0);
    CHECK(c.code == std::errc::timed_out);
    CHECK(s.state() == state::error);
    CHECK(s.native_handle() == -1);
    CHECK_FALSE(s.is_connecting());
}

TEST_CASE_FIXTURE(descriptors_checked, "a connect without timeout to a blackhole stays pending until close(): operation_canceled") {
    blackhole hole;
    reactor r;
    closed_connect k(r, hole.port, 300ms);
    stopwatch t0;
    REQUIRE(run_until(r, [&] { return k.completions > 0; }, 5s));
    CHECK(t0.elapsed() >= 300ms);  // nothing ended it before close()
    pump(r, 20ms);
    k.check_canceled_without_callbacks();  // close() runs no error callback
    CHECK(k.s.state() == state::closed);
    CHECK(k.s.native_handle() == -1);
}

TEST_CASE_FIXTURE(descriptors_checked, "close() while connecting: no callback at all, state closed, descriptor closed") {
    blackhole hole;
    int live_port = 0;
    raw_fd live = raw_listener("127.0.0.1", 16, live_port);
    reactor r;
    SUBCASE("blackhole, closed from a later turn") {
        counts c;
        tcp s(r, c.options("127.0.0.1", hole.port, 5000ms));
        c.connect(s);
        pump(r, 20ms);
        s.close();
        CHECK(s.state() == state::closed);
        CHECK_FALSE(s.is_connecting());
        CHECK(s.native_handle() == -1);
        pump(r, 100ms);
        CHECK(c.errors == 0);
        CHECK(c.connected == 0);
    }
    SUBCASE("refused, closed inside the same turn (the failure is already known)") {
        counts c;
        tcp s(r, c.options("127.0.0.1", closed_port("127.0.0.1")));
        c.connect(s);
        if (s.is_connecting()) {
            s.close();
            CHECK(s.state() == state::closed);
        } else {
            CHECK_THROWS_AS(s.close(), tisock::state_error);  // already failed: error, not connecting
        }
        pump(r, 100ms);
        CHECK(c.connected == 0);
        CHECK(c.errors == (s.state() == state::error ? 1 : 0));
    }
    SUBCASE("loopback listener, closed before the reactor saw the handshake") {
        counts c;
        tcp s(r, c.options("127.0.0.1", live_port));
        c.connect(s);
        if (s.is_connecting()) s.close();
        pump(r, 100ms);
        CHECK(c.errors == 0);
        // Either closed before completion, or (rare) connected inside connect(): then
        // the announcement still comes from the reactor.
        CHECK(c.connected == (s.state() == state::connected ? 1 : 0));
        if (s.state() == state::connected) s.close();
    }
    SUBCASE("coroutine: the connect completes exactly once with operation_canceled") {
        closed_connect k(r, hole.port, 1ms);
        REQUIRE(run_until(r, [&] { return k.completions > 0; }, 5s));
        pump(r, 50ms);
        k.check_canceled_without_callbacks();
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "an unreachable network (in a private namespace) fails with ENETUNREACH, asynchronously") {
    netns_outcome o = run_in_netns([]() -> std::string {
        reactor r;
        counts c;
        tcp s(r, c.options("192.0.2.1", 80));  // TEST-NET-1: no route in a fresh namespace
        c.connect(s);
        if (c.errors != 0) return "the error callback ran inside connect()";
        if (!run_until(r, [&] { return c.errors > 0; }, 5s)) return "no error within 5 s";
        pump(r, 20ms);
        return failed_once(c, s, std::errc::network_unreachable);
    });
    check_netns(o);
}

TEST_CASE_FIXTURE(descriptors_checked, "a second connect while one is pending, or on a connected socket, throws state_error") {
    blackhole hole;
    reactor r;
    counts c;
    tcp s(r, c.options("127.0.0.1", hole.port));
    c.connect(s);
    CHECK_THROWS_AS(s.connect(), tisock::state_error);
    CHECK(s.is_connecting());  // unchanged
    std::error_code ec;
    int completions = 0;
    auto second = [](tcp sock, std::error_code& out, int& n) -> tisock::task<void> {
        try {
            co_await sock.async_connect();
        } catch (const tisock::state_error&) {
            out = std::make_error_code(std::errc::operation_in_progress);
        }
        ++n;
    };
    tisock::sync_wait(r, second(s, ec, completions));
    CHECK(completions == 1);
    CHECK(ec == std::errc::operation_in_progress);
    CHECK(s.is_connecting());
    s.close();

    int port = 0;
    raw_fd l = raw_listener("127.0.0.1", 16, port);
    counts c2;
    tcp t(r, c2.options("127.0.0.1", port));
    c2.connect(t);
    REQUIRE(run_until(r, [&] { return c2.connected > 0; }));
    CHECK_THROWS_AS(t.connect(), tisock::state_error);
    CHECK(t.state() == state::connected);
    t.close();
    pump(r, 20ms);
    CHECK(c.errors + c.connected + c2.errors == 0);
    CHECK(c2.connected == 1);
}

TEST_CASE_FIXTURE(descriptors_checked, "reconnecting after close and after error: a fresh descriptor, no event from the old life") {
    reactor r;
    int port1 = 0, port2 = 0;
    raw_fd l1 = raw_listener("127.0.0.1", 16, port1);
    raw_fd l2 = raw_listener("127.0.0.1", 16, port2);
    counts c;
    tcp s(r, c.options("127.0.0.1", port1));
    c.connect(s);
    REQUIRE(run_until(r, [&] { return c.connected == 1; }));
    raw_fd peer1 = raw_accept(l1.get());
    REQUIRE(peer1);
    send_all(peer1.get(), "from the first life");
    s.close();
    peer1.reset();  // the old peer goes away: its FIN must not reach the new connection

    s.set_port(port2);
    c.connect(s);
    REQUIRE(run_until(r, [&] { return c.connected == 2; }));
    raw_fd peer2 = raw_accept(l2.get());
    REQUIRE(peer2);
    send_all(peer2.get(), "second");
    tisock::buffer in(64);
    std::string got;
    int reads = 0;
    s.read(in, [&](const tisock::io_event& e) {
        ++reads;
        if (e.bytes_processed > 0) got = in.to_string().substr(0, std::size_t(e.bytes_processed));
    });
    REQUIRE(run_until(r, [&] { return reads == 1; }));
    CHECK(got == "second");
    CHECK(c.errors == 0);

    // After an error: refused, then reconnect to a live listener.
    s.close();
    s.set_port(closed_port("127.0.0.1"));
    c.connect(s);
    REQUIRE(run_until(r, [&] { return c.errors == 1; }));
    CHECK(s.state() == state::error);
    s.set_port(port2);
    c.connect(s);
    REQUIRE(run_until(r, [&] { return c.connected == 3; }));
    CHECK(s.state() == state::connected);
    pump(r, 20ms);
    CHECK(c.errors == 1);
    CHECK(c.connected == 3);
    s.close();
}

TEST_CASE_FIXTURE(descriptors_checked, "exhausted ephemeral ports (in a private namespace): EADDRNOTAVAIL as an error, no spin") {
    netns_outcome o = run_in_netns([]() -> std::string {
        {
            std::ofstream range("/proc/sys/net/ipv4/ip_local_port_range");
            range << "40000 40010";
        }
        std::ifstream check("/proc/sys/net/ipv4/ip_local_port_range");
        int lo = 0, hi = 0;
        check >> lo >> hi;
        if (lo != 40000 || hi != 40010) return "could not narrow ip_local_port_range in the namespace";
        int port = 0;
        raw_fd listener = raw_listener("127.0.0.1", 64, port);
        std::vector<raw_fd> clients;
        for (int i = 0; i < 40; ++i) {  // until the range is used up
            raw_fd c = raw_connect("127.0.0.1", port, true);
            if (!c) break;
            clients.push_back(std::move(c));
        }
        if (clients.size() > 11) return "the port range was not enforced";
        reactor r;
        counts c;
        tcp s(r, c.options("127.0.0.1", port));
        c.connect(s);
        double cpu0 = cpu_seconds();
        if (!run_until(r, [&] { return c.errors > 0; }, 5s)) return "no error within 5 s";
        pump(r, 200ms);
        double cpu = cpu_seconds() - cpu0;
        if (std::string failure = failed_once(c, s, std::errc::address_not_available); !failure.empty()) return failure;
        if (cpu > 0.15) return "the loop spun: " + std::to_string(cpu) + " s CPU in 200 ms";
        return "";
    });
    check_netns(o);
}

TEST_CASE("invalid ports and hosts throw invalid_argument naming them, before any resolution") {
    reactor r;
    struct row {
        std::string host;
        int port;
        const char* names;  // the word the message must contain
    };
    const std::string long_label(300, 'a');
    const std::vector<row> rows = {
        {"127.0.0.1", -1, "port"},
        {"127.0.0.1", 0, "port"},
        {"127.0.0.1", 65536, "port"},
        {"", 80, "host"},
        {"a..b", 80, "host"},
        {"256.1.1.1", 80, "host"},
        {std::string("127.0.0.1\0evil", 14), 80, "host"},
        {long_label + ".example", 80, "host"},
        {"b\xc3\xbc" "cher.example", 80, "host"},
        {"[::1", 80, "host"},
        {"::1%", 80, "host"},
    };
    int errors = 0, connected = 0;
    for (const row& x : rows) {
        CAPTURE(x.host);
        CAPTURE(x.port);
        tcp s(r, {.host = x.host, .port = x.port, .connected = [&](tcp&) { ++connected; },
                  .error = [&](tcp&, const std::string&, std::error_code) { ++errors; }});
        std::string what;
        try {
            s.connect();
        } catch (const std::invalid_argument& e) {
            what = e.what();
        }
        CHECK(what.find(x.names) != std::string::npos);
        CHECK(s.state() == state::initialized);
        CHECK_FALSE(s.is_connecting());
        CHECK(s.native_handle() == -1);
    }
    pump(r, 20ms);
    CHECK(errors == 0);
    CHECK(connected == 0);

    // Accepted forms: bracketed IPv6, and a %scope.
    int port = 0;
    raw_fd l = raw_listener("::1", 16, port);
    for (const char* host : {"[::1]", "::1%lo"}) {
        CAPTURE(host);
        counts c;
        tcp s(r, c.options(host, port));
        CHECK_NOTHROW(c.connect(s));
        REQUIRE(run_until(r, [&] { return c.connected + c.errors > 0; }));
        CHECK(c.connected == 1);
        raw_fd peer = raw_accept(l.get());
        s.close();
    }
}

TEST_CASE("close(), or dropping the last handle, while a hostname lookup is in flight: no callback afterwards") {
    descriptor_baseline fds;
    {
        reactor r;
        int port = 0;
        raw_fd l = raw_listener("127.0.0.1", 16, port);
        counts c;
        {
            tcp s(r, c.options("localhost", port));
            c.connect(s);
            CHECK(s.is_connecting());
            s.close();
            CHECK(s.state() == state::closed);
            CHECK_FALSE(s.is_connecting());
        }
        counts dropped;
        {
            tcp s(r, dropped.options("localhost", port));
            dropped.connect(s);
        }  // the last handle goes away: a connect in flight keeps its socket alive (API.md)
        std::error_code ec;
        int completions = 0;
        {
            tcp s(r, c.options("localhost", port));
            tisock::spawn(r, connect_expecting(s, ec, completions));
            tisock::spawn(r, close_after(r, s, 0ms));
        }
        REQUIRE(run_until(r, [&] { return completions == 1; }));
        pump(r, 300ms);  // the lookups finish meanwhile; their results must be dropped
        CHECK(completions == 1);
        CHECK(ec == std::errc::operation_canceled);
        CHECK(c.connected == 0);
        CHECK(c.errors == 0);
        CHECK(dropped.connected + dropped.errors == 1);  // it went on, and ended once
    }
    wait_for_descriptors(fds);
    check_nothing_left(fds);
}
