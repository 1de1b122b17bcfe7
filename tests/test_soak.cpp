// Soak: connection churn in both styles, and a slow client beside fast ones.
//
// The churn alternates clean closes and resets (SO_LINGER 0), and asserts that the open
// descriptor count is the same afterwards and that the resident set did not grow (measured
// after a warm-up, so allocator pools and the reactor's descriptor pool are already at
// size). The server closes first on clean cycles, so no client port lingers in TIME_WAIT
// and 100,000 cycles fit in the ephemeral range.
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "support.hpp"

using namespace tisock;
using namespace tisock_test;
using namespace std::chrono_literals;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

// Sanitizers make each cycle ~10x slower and keep freed memory in quarantine: fewer cycles,
// and no RSS assertion (the quarantine is not a leak; LeakSanitizer checks leaks instead).
constexpr int cycles_per_style = sanitized ? 5'000 : 50'000;
constexpr int parallel_clients = 8;

long resident_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
}

void set_reset_on_close(const tcp& s) {
    linger l{1, 0};
    REQUIRE(::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0);
}

// ---- coroutine style ---------------------------------------------------------------------

task<void> echo_and_close(tcp peer) {
    std::byte buf[64];
    std::size_t n = 0;
    try {
        n = co_await peer.async_read(buf);
        if (n > 0) co_await peer.async_write(std::span<const std::byte>(buf, n));
    } catch (const std::system_error&) {
        // the client reset: expected on half of the cycles
    }
    if (peer.state() == state::connected) peer.close();  // server closes first: no client TIME_WAIT
}

task<void> accept_loop(tcp listener, int expected) {
    for (int i = 0; i < expected; ++i) spawn(listener.get_reactor(), echo_and_close(co_await listener.async_accept()));
}

task<void> churn_client(reactor& r, int port, int cycles, int& completed) {
    for (int i = 0; i < cycles; ++i) {
        tcp s{r, {.host = "127.0.0.1", .port = port}};
        co_await s.async_connect();
        const char msg[] = "0123456789abcdef";
        co_await s.async_write(std::as_bytes(std::span(msg, 16)));
        std::byte buf[16];
        std::size_t got = 0;
        while (got < 16) {
            std::size_t n = co_await s.async_read(std::span(buf).subspan(got));
            REQUIRE(n > 0);
            got += n;
        }
        if (i % 2 == 1) set_reset_on_close(s);
        s.close();
        ++completed;
    }
}

void coroutine_churn(reactor& r, tcp& listener, int cycles) {
    int completed = 0;
    outcome server, clients[parallel_clients];
    start(r, accept_loop(listener, cycles), server);
    for (outcome& o : clients) start(r, churn_client(r, listener.port(), cycles / parallel_clients, completed), o);
    REQUIRE(run_until(r, [&] { return server.done && completed == cycles; }, 600s));
    for (outcome& o : clients) {
        REQUIRE(o.done);
        CHECK_MESSAGE(!o.error, o.what());
    }
    CHECK_MESSAGE(!server.error, server.what());
    REQUIRE(run_until(r, [&] { return reactor_is_idle(r); }, 10s));
}

// ---- callback style ----------------------------------------------------------------------

struct callback_churn {
    reactor& r;
    tcp listener;
    int remaining;
    int total;
    int accepted = 0;
    int completed = 0;
    int errors = 0;
    buffer message = buffer::from_string("0123456789abcdef");

    callback_churn(reactor& reactor_, tcp l, int cycles)
        : r(reactor_), listener(std::move(l)), remaining(cycles), total(cycles) {
        listener.set_accepted([this](tcp& self, tcp in) {
            auto into = std::make_shared<buffer>(64);
            in.read(*into, [into](const io_event& e) {
                if (e.bytes_processed <= 0) {
                    if (e.source.state() == state::connected) e.source.close();
                    return;
                }
                e.source.write(into->clone(0, std::size_t(e.bytes_processed)), [](const io_event& w) {
                    if (w.source.state() == state::connected) w.source.close();
                });
            });
            if (++accepted < total) self.accept();  // re-armed until every client is in
        });
        listener.accept();
    }

    void next_cycle() {
        if (remaining == 0) return;
        bool reset = --remaining % 2 == 1;
        tcp s{r, {.host = "127.0.0.1", .port = listener.port()}};
        s.set_error([this](tcp&, const std::string&, std::error_code) { ++errors; });
        s.set_connected([this, reset](tcp& c) {
            c.write(message, [](const io_event&) {});
            auto into = std::make_shared<buffer>(16);
            c.read(*into, [this, into, reset](const io_event& e) {
                if (e.bytes_processed <= 0) ++errors;
                if (reset) set_reset_on_close(e.source);
                e.source.close();
                ++completed;
                next_cycle();
            });
        });
        s.connect();
    }
};

void run_callback_churn(reactor& r, tcp& listener, int cycles) {
    callback_churn churn(r, listener, cycles);
    for (int i = 0; i < parallel_clients; ++i) churn.next_cycle();
    REQUIRE(run_until(r, [&] { return churn.completed == cycles; }, 600s));
    CHECK(churn.errors == 0);
    listener.set_accepted({});
}

}  // namespace

TEST_CASE("soak: connect/write/read/close churn in both styles leaks no descriptor and no memory") {
    reactor r;
    tcp listener = make_listener(r, "127.0.0.1", {.listen_queue_size = 256});
    descriptor_baseline fds;

    // Warm-up, so that pools and caches reach their steady size before the RSS baseline.
    coroutine_churn(r, listener, 2'000);
    run_callback_churn(r, listener, 2'000);
    const long rss_before = resident_kib();

    coroutine_churn(r, listener, cycles_per_style);
    run_callback_churn(r, listener, cycles_per_style);

    REQUIRE(run_until(r, [&] { return fds.leaked() == 0; }, 10s));
    const long rss_after = resident_kib();
    MESSAGE("cycles: " << 2 * cycles_per_style << ", RSS " << rss_before << " KiB -> " << rss_after << " KiB");
    if (!sanitized) CHECK(rss_after - rss_before < 4 * 1024);  // flat: well under 100 bytes per cycle
    listener.close();
}

TEST_CASE("soak: a client sending one byte every 100 ms does not starve fast clients") {
    reactor r;
    tcp listener = make_listener(r, "127.0.0.1");
    std::size_t slow_bytes = 0;
    int fast_round_trips = 0;
    bool slow_done = false;

    // Server: echo everything, byte-count the slow client (the first connection).
    auto serve = [](tcp listener_, std::size_t& slow_bytes_, int count) -> task<void> {
        for (int i = 0; i < count; ++i) {
            tcp peer = co_await listener_.async_accept();
            spawn(listener_.get_reactor(), [](tcp p, std::size_t* counter) -> task<void> {
                std::byte buf[256];
                while (std::size_t n = co_await p.async_read(buf)) {
                    if (counter != nullptr) *counter += n;
                    co_await p.async_write(std::span<const std::byte>(buf, n));
                }
                p.close();
            }(peer, i == 0 ? &slow_bytes_ : nullptr));
        }
    };
    constexpr int fast_clients = 8;
    outcome server;
    start(r, serve(listener, slow_bytes, 1 + fast_clients), server);

    auto slow = [](reactor& rr, int port, bool& done) -> task<void> {
        tcp s{rr, {.host = "127.0.0.1", .port = port}};
        co_await s.async_connect();
        std::byte one[1] = {std::byte{'x'}};
        for (int i = 0; i < 10; ++i) {
            co_await s.async_write(one);
            co_await rr.sleep_for(100ms);
        }
        co_await s.async_shutdown();
        std::byte buf[16];
        while (co_await s.async_read(buf) > 0) {
        }
        s.close();
        done = true;
    };
    outcome slow_outcome;
    start(r, slow(r, listener.port(), slow_done), slow_outcome);

    auto fast = [](reactor& rr, int port, int& trips, bool& stop) -> task<void> {
        tcp s{rr, {.host = "127.0.0.1", .port = port}};
        co_await s.async_connect();
        std::byte msg[32] = {};
        while (!stop) {
            co_await s.async_write(msg);
            std::size_t got = 0;
            while (got < sizeof msg) got += co_await s.async_read(std::span(msg).subspan(got));
            ++trips;
        }
        s.close();
    };
    outcome fast_outcomes[fast_clients];
    for (outcome& o : fast_outcomes) start(r, fast(r, listener.port(), fast_round_trips, slow_done), o);

    stopwatch t;
    REQUIRE(run_until(r, [&] { return slow_outcome.done; }, 20s));
    CHECK_MESSAGE(!slow_outcome.error, slow_outcome.what());
    CHECK(t.elapsed() >= 1000ms);  // ten pauses of 100 ms: the slow client was really slow
    CHECK(slow_bytes == 10);
    REQUIRE(run_until(r, [&] {
        for (outcome& o : fast_outcomes)
            if (!o.done) return false;
        return true;
    }));
    // Over a second, the fast clients kept going the whole time: thousands of round trips,
    // not a handful squeezed between the slow client's bytes.
    MESSAGE("fast round trips while the slow client dripped: " << fast_round_trips);
    CHECK(fast_round_trips > 1'000);
    listener.close();
    REQUIRE(run_until(r, [&] { return server.done || reactor_is_idle(r); }, 10s));
}
