// The resolver pool (detail/resolver.hpp): hostname connects keep working in a child
// forked after a lookup, lookups in flight at fork() are resolved again in the child, one
// slow name delays no other lookup, cancellation never lets a result reach a closed socket,
// and the pool stays within its bound.
//
// Real lookups are of "localhost" only (/etc/hosts). A slow lookup is the resolve hook of
// detail/sys.hpp (this file is built with TISOCK_FAULT_INJECTION): see slow_lookups. Every
// test is bounded in time; a forked child by alarm(), and its parent waits for it with a bound.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "support.hpp"

using namespace tisock_test;
using tisock::state;
using tisock::tcp;
using tisock::detail::resolver_pool;

namespace {

// "localhost" in capitals: /etc/hosts would answer it too, so even if the hook were not in
// place no lookup of these tests could leave the machine.
constexpr const char* slow_name = "LOCALHOST";

// While one lives, lookups of slow_name take `delay` and then fail with EAI_AGAIN, like a
// DNS server that timed out; other names are resolved as usual. Counts the slow lookups.
class slow_lookups {
public:
    static inline std::atomic<int> started{0};
    static inline std::atomic<int> in_flight{0};
    static inline std::atomic<int> peak{0};  // most in flight at once

    explicit slow_lookups(std::chrono::milliseconds delay) {
        delay_ms.store(int(delay.count()));
        started.store(0);
        peak.store(0);
        tisock::detail::sys::resolve_hook.store(&hook);
    }
    slow_lookups(const slow_lookups&) = delete;
    slow_lookups& operator=(const slow_lookups&) = delete;
    ~slow_lookups() {
        // One still asleep (its socket long closed) would count in the next test.
        CHECK(all_ended(10s));
        tisock::detail::sys::resolve_hook.store(nullptr);
    }

    static bool all_ended(std::chrono::milliseconds limit) {
        return eventually([] { return in_flight.load() == 0; }, limit);
    }

    // Waits (without a reactor: the workers do not need one) until `done()` holds.
    template <class Predicate>
    static bool eventually(Predicate done, std::chrono::milliseconds limit) {
        stopwatch t;
        while (!done()) {
            if (t.elapsed() >= limit) return false;
            std::this_thread::sleep_for(1ms);
        }
        return true;
    }

private:
    static inline std::atomic<int> delay_ms{0};

    static bool hook(const char* host, int& gai_error) {
        if (std::strcmp(host, slow_name) != 0) return false;
        ++started;
        int now = ++in_flight;
        for (int seen = peak.load(); now > seen && !peak.compare_exchange_weak(seen, now);) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
        --in_flight;
        gai_error = EAI_AGAIN;
        return true;
    }
};

const std::error_code lookup_timed_out(EAI_AGAIN, tisock::resolver_category());

template <class Predicate>
bool run_both_until(tisock::reactor& a, tisock::reactor& b, Predicate done, std::chrono::milliseconds limit) {
    stopwatch t;
    while (!done()) {
        if (t.elapsed() >= limit) return false;
        if (a.poll() + b.poll() == 0) std::this_thread::sleep_for(1ms);
    }
    return true;
}

// ---- forked children ---------------------------------------------------------------------

// ThreadSanitizer cannot follow a thread started in a child forked from a threaded process
// (it dies, or with die_after_fork=0 mistakes the new thread for a dead one of the parent),
// and starting threads there is the point of the fork tests: they run without it.
#if defined(__SANITIZE_THREAD__)
constexpr bool thread_sanitizer = true;
#elif defined(__has_feature)
constexpr bool thread_sanitizer = __has_feature(thread_sanitizer);
#else
constexpr bool thread_sanitizer = false;
#endif

// How a child ends (its exit status). Children use no doctest macro: they report this way.
enum child_exit : int { child_ok = 0, child_hung = 2, child_failed = 3, child_threw = 4, child_wrong_workers = 5 };

std::string describe_child_status(int status) {
    if (WIFSIGNALED(status)) {
        return WTERMSIG(status) == SIGALRM ? "the child hung (alarm)" : "the child died of signal " + std::to_string(WTERMSIG(status));
    }
    switch (WEXITSTATUS(status)) {
        case child_ok: return "";
        case child_hung: return "the child's connects did not end in time (no resolver worker?)";
        case child_failed: return "a connect of the child ended with an unexpected error";
        case child_threw: return "the child threw";
        case child_wrong_workers: return "the child's single lookup did not use exactly one new worker";
        default: return "the child exited with status " + std::to_string(WEXITSTATUS(status));
    }
}

// Runs `body` in a forked child that exits with its result and is ended by SIGALRM after
// `limit`; the parent waits a little longer, then kills it. Returns "" or what went wrong.
std::string run_in_child(const std::function<child_exit()>& body, std::chrono::seconds limit = 10s) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::alarm(unsigned(limit.count()));
        int code = child_threw;
        try {
            code = body();
        } catch (...) {
        }
        ::_exit(code);  // no atexit handlers, no doctest teardown in the child
    }
    int status = 0;
    bool ended = slow_lookups::eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, limit + 5s);
    if (!ended) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return "the child did not end even by its alarm";
    }
    return describe_child_status(status);
}

// A reactor, a listener on 127.0.0.1 and a connect to "localhost" on it. No doctest macro:
// also run in a child.
child_exit connect_to_localhost() {
    tisock::reactor r;
    tcp listener(r, {.host = "127.0.0.1", .port = 0});
    listener.listen();
    bool connected = false;
    bool failed = false;
    tcp s(r, {.host = "localhost",
              .port = listener.port(),
              .connected = [&](tcp&) { connected = true; },
              .error = [&](tcp&, const std::string&, std::error_code) { failed = true; }});
    s.connect();
    if (!run_until(r, [&] { return connected || failed; }, 5s)) return child_hung;
    if (connected) s.close();
    listener.close();
    return connected ? child_ok : child_failed;
}

}  // namespace

TEST_CASE("after fork(), a hostname connect in the child completes, the parent having resolved a name before" * doctest::skip(thread_sanitizer)) {
    watchdog wd(30s);
    // The parent's pool has started: the child inherits its state but not its workers.
    REQUIRE(connect_to_localhost() == child_ok);
    std::string failure = run_in_child([] {
        child_exit e = connect_to_localhost();
        // The child starts its own workers, lazily: one for one lookup at a time.
        if (e == child_ok && resolver_pool::workers() != 1) return child_wrong_workers;
        return e;
    });
    CHECK_MESSAGE(failure.empty(), failure);
    CHECK(connect_to_localhost() == child_ok);  // the parent's pool is unharmed
}

TEST_CASE("lookups queued or in flight at fork() are resolved again in the child, for its copy of the reactor" * doctest::skip(thread_sanitizer)) {
    watchdog wd(40s);
    slow_lookups slow(600ms);
    tisock::reactor r;
    int lookups_failed = 0;
    int other_endings = 0;
    auto count = [&](tcp&, const std::string&, std::error_code ec) { ++(ec == lookup_timed_out ? lookups_failed : other_endings); };
    constexpr int lookups = 6;  // more than the pool's workers: some wait in the queue
    std::vector<tcp> sockets;
    for (int i = 0; i < lookups; ++i) {
        sockets.push_back(tcp(r, {.host = slow_name, .port = 9, .error = count}));
        sockets.back().connect();
    }
    // Fork once the workers are busy (not REQUIREd: a pool of one never gets there, and
    // forks with one lookup in flight and the others queued).
    slow_lookups::eventually([] { return slow_lookups::in_flight.load() == int(resolver_pool::max_workers); }, 300ms);
    std::string failure = run_in_child([&] {
        if (!run_until(r, [&] { return lookups_failed + other_endings == lookups; }, 5s)) return child_hung;
        return lookups_failed == lookups ? child_ok : child_failed;
    });
    CHECK_MESSAGE(failure.empty(), failure);
    // The parent's lookups went on meanwhile.
    REQUIRE(run_until(r, [&] { return lookups_failed + other_endings == lookups; }, 5s));
    CHECK(lookups_failed == lookups);
}

TEST_CASE("a slow lookup delays no other lookup, from the same reactor or from another") {
    watchdog wd(20s);
    constexpr auto slow_delay = 2000ms;
    slow_lookups slow(slow_delay);
    tisock::reactor r1;
    tisock::reactor r2;
    tcp listener = make_listener(r1, "127.0.0.1");  // the kernel completes the handshakes
    error_log slow_errors;
    tcp slow_socket(r1, {.host = slow_name, .port = listener.port(), .error = slow_errors.callback()});
    stopwatch since_slow;
    slow_socket.connect();
    REQUIRE(slow_lookups::eventually([] { return slow_lookups::started.load() == 1; }, 2s));

    int connected = 0;
    error_log fast_errors;
    tisock::tcp_options fast{.host = "localhost", .port = listener.port(), .connected = [&](tcp&) { ++connected; },
                             .error = fast_errors.callback()};
    tcp same_reactor(r1, fast);
    tcp other_reactor(r2, fast);
    auto fast_start = test_clock::now();
    same_reactor.connect();
    other_reactor.connect();
    REQUIRE(run_both_until(r1, r2, [&] { return connected + fast_errors.count == 2; }, 5s));
    auto fast_took = std::chrono::duration_cast<std::chrono::microseconds>(test_clock::now() - fast_start);
    CHECK_MESSAGE(fast_errors.count == 0, fast_errors.message);
    CHECK(connected == 2);
    CHECK(fast_took < slow_delay / 2);
    CHECK(slow_errors.count == 0);  // still asleep

    REQUIRE(run_until(r1, [&] { return slow_errors.count == 1; }, 5s));
    CHECK(slow_errors.code == lookup_timed_out);
    MESSAGE("two lookups of localhost (and their connects) took " << fast_took.count() << " us while a "
            << slow_delay.count() << " ms lookup ran; it ended after " << since_slow.elapsed().count() << " ms");
    same_reactor.close();
    other_reactor.close();
    listener.close();
}

TEST_CASE_FIXTURE(socket_test, "close() while lookups are in flight on several workers: no result reaches a closed socket") {
    slow_lookups slow(2ms);
    const int port = closed_port("127.0.0.1");  // "localhost" connects are refused at once
    int late = 0;  // callbacks of a socket after its close()
    int closed_while_connecting = 0;
    for (int round = 0; round < 60; ++round) {
        // Half the lookups slow, half real; closed after 0-3 ms: queued, being resolved,
        // posted but not yet run, or over.
        std::vector<tcp> sockets;
        std::vector<std::shared_ptr<bool>> closed;
        for (int i = 0; i < 8; ++i) {
            auto is_closed = std::make_shared<bool>(false);
            closed.push_back(is_closed);
            sockets.push_back(tcp(r, {.host = i % 2 == 0 ? slow_name : "localhost",
                                      .port = port,
                                      .connected = [&late, is_closed](tcp&) { late += *is_closed; },
                                      .error = [&late, is_closed](tcp&, const std::string&, std::error_code) {
                                          late += *is_closed;
                                      }}));
            sockets.back().connect();
        }
        stopwatch t;
        auto wait = std::chrono::milliseconds(round % 4);
        while (t.elapsed() < wait) r.poll();
        for (std::size_t i = 0; i < sockets.size(); ++i) {
            if (!sockets[i].is_connecting()) continue;
            *closed[i] = true;
            sockets[i].close();
            ++closed_while_connecting;
        }
    }  // each round's sockets are freed here: a late result would touch freed memory (ASan)
    REQUIRE(slow_lookups::all_ended(10s));
    run_for_at_least(r, 100ms);
    CHECK(late == 0);
    CHECK(closed_while_connecting > 0);
    MESSAGE(closed_while_connecting << " of 480 connects closed while resolving; " << slow_lookups::started.load()
            << " slow lookups reached the resolver");
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "a connect timeout fires during a slow lookup, whose late result is dropped") {
    slow_lookups slow(1500ms);
    error_log errors;
    tcp s(r, {.host = slow_name, .port = 9, .timeout = 200ms, .error = errors.callback()});
    stopwatch t;
    s.connect();
    REQUIRE(run_until(r, [&] { return errors.count > 0; }, 5s));
    CHECK(t.elapsed() < 1000ms);
    CHECK(errors.code == std::errc::timed_out);
    REQUIRE(slow_lookups::all_ended(5s));
    run_for_at_least(r, 100ms);
    CHECK(errors.count == 1);
    CHECK(s.state() == state::error);
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "twenty slow lookups at once run four at a time, on at most four workers") {
    slow_lookups slow(300ms);
    int lookups_failed = 0;
    std::vector<tcp> sockets;
    for (int i = 0; i < 20; ++i) {
        sockets.push_back(tcp(r, {.host = slow_name, .port = 9, .error = [&](tcp&, const std::string&, std::error_code ec) {
                                      lookups_failed += ec == lookup_timed_out;
                                  }}));
        sockets.back().connect();
    }
    stopwatch t;
    REQUIRE(run_until(r, [&] { return lookups_failed == 20; }, 10s));
    CHECK(slow_lookups::peak.load() == int(resolver_pool::max_workers));
    CHECK(resolver_pool::workers() <= resolver_pool::max_workers);
    MESSAGE("20 lookups of 300 ms took " << t.elapsed().count() << " ms on " << resolver_pool::workers() << " workers");
    check_nothing_left(r, fds);
}
