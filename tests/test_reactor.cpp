// tisock::reactor: post (cross-thread, move-only), stop/restart, run/run_for/run_one/poll
// and their return values, timers (order, cancellation, 100,000 of them), exceptions out
// of handlers, destruction with work pending.
//
// Every test is bounded in time: a blocking call either has a timer that ends it or a
// watchdog that aborts the executable. Counts are exact (libuv style).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include <tisock/reactor.hpp>
#include <tisock/task.hpp>

#include "foundation_support.hpp"

using namespace std::chrono_literals;
using tisock::reactor;
using tisock_test::count_throws;
using tisock_test::foreign_coroutine;
using tisock_test::stopwatch;
using tisock_test::test_clock;
using tisock_test::tracked;
using tisock_test::watchdog;

namespace {

// Sleeps `d` on `r`, then appends `id` to `log` (if any).
tisock::task<void> sleeper(reactor& r, std::chrono::nanoseconds d, std::vector<int>* log = nullptr, int id = 0) {
    tracked in_frame;
    co_await r.sleep_for(d);
    if (log != nullptr) log->push_back(id);
}

foreign_coroutine foreign_sleeper(reactor& r, std::chrono::nanoseconds d, int& resumed) {
    tracked in_frame;
    co_await r.sleep_for(d);
    ++resumed;
}

foreign_coroutine foreign_awaiting_task(reactor& r, std::chrono::nanoseconds d, int& resumed) {
    co_await sleeper(r, d);
    ++resumed;
}

// A timer node armed directly through the reactor's internal timer interface, so that
// several timers can share one exact deadline (sleep_for computes now() + d each time).
struct probe_timer : tisock::detail::timer_node {
    int id = 0;
    std::vector<int>* log = nullptr;
    probe_timer() {
        on_expire = [](tisock::detail::timer_node* n) {
            auto* self = static_cast<probe_timer*>(n);
            self->log->push_back(self->id);
        };
    }
};

}  // namespace

TEST_CASE("post from four other threads while running: every handler runs exactly once") {
    watchdog wd{60s, "post from four threads"};
    constexpr int threads = 4;
    constexpr int per_thread = 10'000;
    constexpr int total = threads * per_thread;
    reactor r;
    std::vector<int> calls(total, 0);
    std::array<int, threads> last_seen{};
    last_seen.fill(-1);
    bool per_thread_fifo = true;
    int handler_called = 0;

    // The sleeper keeps run() alive until the last handler stops it, and bounds the test
    // if a handler is lost.
    tisock::spawn(r, sleeper(r, 20s));
    std::atomic<bool> go{false};
    std::vector<std::thread> posters;
    for (int t = 0; t < threads; ++t) {
        posters.emplace_back([&, t] {
            while (!go.load()) std::this_thread::yield();
            for (int i = 0; i < per_thread; ++i) {
                r.post([&, t, i] {
                    ++calls[std::size_t(t * per_thread + i)];
                    if (i <= last_seen[std::size_t(t)]) per_thread_fifo = false;
                    last_seen[std::size_t(t)] = i;
                    if (++handler_called == total) r.stop();
                });
            }
        });
    }
    int go_called = 0;
    r.post([&] {
        ++go_called;
        go = true;  // the posters start only once run() is running
    });

    stopwatch sw;
    std::size_t ran = r.run();
    for (auto& th : posters) th.join();

    CHECK(go_called == 1);
    CHECK(handler_called == total);
    CHECK(ran == std::size_t(total) + 2);  // + the go handler + the sleeper's start
    CHECK(std::all_of(calls.begin(), calls.end(), [](int c) { return c == 1; }));
    CHECK(per_thread_fifo);
    CHECK(r.stopped());
    CHECK(sw.elapsed() < 20s);
}

TEST_CASE("post of a move-only callable") {
    watchdog wd{10s};
    tracked::reset();
    {
        reactor r;
        int handler_called = 0;
        int seen = 0;
        auto p = std::make_unique<int>(42);
        r.post([p = std::move(p), &seen, &handler_called] {
            seen = *p;
            ++handler_called;
        });
        CHECK(r.run() == 1);
        CHECK(handler_called == 1);
        CHECK(seen == 42);

        // A move-only function object (not a lambda), destroyed exactly once after running.
        struct move_only_handler {
            std::unique_ptr<tracked> t = std::make_unique<tracked>();
            int* called;
            move_only_handler(int* c) : called(c) {}
            move_only_handler(move_only_handler&&) = default;
            void operator()() { ++*called; }
        };
        r.post(move_only_handler{&handler_called});
        CHECK(r.run() == 1);
        CHECK(handler_called == 2);
        CHECK(tracked::constructed == 1);
        CHECK(tracked::destroyed == 1);
    }
}

TEST_CASE("stop from another thread wakes a run() blocked on a long timer") {
    watchdog wd{30s};
    reactor r;
    tisock::spawn(r, sleeper(r, 20s));
    stopwatch sw;  // before the stopper starts its 100 ms (after, it measured 99 ms under TSan)
    std::thread stopper([&] {
        std::this_thread::sleep_for(100ms);
        r.stop();
    });
    std::size_t ran = r.run();
    auto elapsed = sw.elapsed();
    stopper.join();
    CHECK(ran == 1);  // the sleeper's start
    CHECK(elapsed >= 100ms);
    CHECK(elapsed < 5s);
    CHECK(r.stopped());
}

TEST_CASE("run returns when the work is exhausted") {
    watchdog wd{10s};
    SUBCASE("nothing to do: returns 0 at once") {
        reactor r;
        stopwatch sw;
        CHECK(r.run() == 0);
        CHECK(r.run_one() == 0);
        CHECK(r.poll() == 0);
        CHECK(sw.elapsed() < 1s);
        CHECK_FALSE(r.stopped());
    }
    SUBCASE("posted handlers") {
        reactor r;
        int handler_called = 0;
        for (int i = 0; i < 3; ++i) r.post([&] { ++handler_called; });
        CHECK(r.run() == 3);
        CHECK(handler_called == 3);
        CHECK(r.run() == 0);
    }
    SUBCASE("a handler that posts another") {
        reactor r;
        int handler_called = 0;
        r.post([&] {
            ++handler_called;
            r.post([&] { ++handler_called; });
        });
        CHECK(r.run() == 2);
        CHECK(handler_called == 2);
    }
    SUBCASE("a timer") {
        reactor r;
        std::vector<int> log;
        tisock::spawn(r, sleeper(r, 30ms, &log, 7));
        stopwatch sw;
        CHECK(r.run() == 2);  // start + expiry
        CHECK(sw.elapsed() >= 30ms);
        CHECK(sw.elapsed() < 5s);
        CHECK(log == std::vector<int>{7});
    }
}

TEST_CASE("run_for honours its bound") {
    watchdog wd{30s};
    reactor r;
    tisock::spawn(r, sleeper(r, 20s));
    stopwatch sw;
    CHECK(r.run_for(100ms) == 1);  // the sleeper's start
    auto elapsed = sw.elapsed();
    CHECK(elapsed >= 100ms);  // strict: never early
    CHECK(elapsed < 3s);      // loose: scheduling noise, sanitizers
    stopwatch sw2;
    CHECK(r.run_for(50ms) == 0);
    CHECK(sw2.elapsed() >= 50ms);
    CHECK(sw2.elapsed() < 3s);

    SUBCASE("returns early when the work is exhausted") {
        reactor r2;
        int handler_called = 0;
        r2.post([&] { ++handler_called; });
        stopwatch sw3;
        CHECK(r2.run_for(10s) == 1);
        CHECK(handler_called == 1);
        CHECK(sw3.elapsed() < 2s);
    }
    SUBCASE("a timer inside the bound fires") {
        reactor r2;
        std::vector<int> log;
        tisock::spawn(r2, sleeper(r2, 20ms, &log, 1));
        CHECK(r2.run_for(5s) == 2);
        CHECK(log == std::vector<int>{1});
    }
}

// run_for(d) is documented to return "after at most ~d". A handler that keeps posting
// another (a coroutine yielding through post, a stream that is always ready) keeps the
// ready queue non-empty, and the run loop only looks at the clock when the queue is empty.
TEST_CASE("run_for honours its bound while handlers keep being posted") {
    watchdog wd{30s};
    reactor r;
    int handler_called = 0;
    auto started = test_clock::now();
    // Stops re-posting after 3 s so that the test ends even when run_for ignores its bound.
    struct reposter {
        reactor* r;
        int* called;
        test_clock::time_point started;
        void operator()() const {
            ++*called;
            if (test_clock::now() - started < 3s) r->post(*this);
        }
    };
    r.post(reposter{&r, &handler_called, started});
    stopwatch sw;
    std::size_t ran = r.run_for(100ms);
    auto elapsed = sw.elapsed();
    CHECK(elapsed >= 100ms);
    CHECK(elapsed < 1500ms);
    CHECK(ran == std::size_t(handler_called));
    r.run();  // drain what is left (bounded by the 3 s above)
}

TEST_CASE("run_one runs exactly one handler") {
    watchdog wd{10s};
    reactor r;
    int handler_called = 0;
    for (int i = 0; i < 3; ++i) r.post([&] { ++handler_called; });
    CHECK(r.run_one() == 1);
    CHECK(handler_called == 1);
    CHECK(r.run_one() == 1);
    CHECK(handler_called == 2);
    CHECK(r.run_one() == 1);
    CHECK(handler_called == 3);
    CHECK(r.run_one() == 0);  // no work left: returns at once

    SUBCASE("blocks for a timer") {
        std::vector<int> log;
        tisock::spawn(r, sleeper(r, 30ms, &log, 1));
        CHECK(r.run_one() == 1);  // the start
        CHECK(log.empty());
        stopwatch sw;
        CHECK(r.run_one() == 1);  // the expiry
        CHECK(sw.elapsed() >= 20ms);
        CHECK(log == std::vector<int>{1});
        CHECK(r.run_one() == 0);
    }
}

TEST_CASE("poll never blocks") {
    watchdog wd{30s};
    reactor r;
    std::vector<int> log;
    tisock::spawn(r, sleeper(r, 20s, &log, 1));
    stopwatch sw;
    CHECK(r.poll() == 1);  // the start; the timer is not due
    CHECK(r.poll() == 0);
    CHECK(sw.elapsed() < 1s);

    int handler_called = 0;
    for (int i = 0; i < 3; ++i) r.post([&] { ++handler_called; });
    CHECK(r.poll() == 3);
    CHECK(handler_called == 3);

    SUBCASE("runs expired timers") {
        reactor r2;
        std::vector<int> log2;
        tisock::spawn(r2, sleeper(r2, 10ms, &log2, 2));
        CHECK(r2.poll() == 1);
        std::this_thread::sleep_for(30ms);
        CHECK(r2.poll() == 1);
        CHECK(log2 == std::vector<int>{2});
        CHECK(r2.run() == 0);
    }
    CHECK(log.empty());
}

TEST_CASE("stopped and restart") {
    watchdog wd{10s};
    reactor r;
    int handler_called = 0;
    CHECK_FALSE(r.stopped());
    r.post([&] { ++handler_called; });
    r.stop();
    CHECK(r.stopped());
    CHECK(r.run() == 0);
    CHECK(r.run_one() == 0);
    CHECK(r.poll() == 0);
    CHECK(r.run_for(10ms) == 0);
    CHECK(handler_called == 0);
    r.restart();
    CHECK_FALSE(r.stopped());
    CHECK(r.run() == 1);
    CHECK(handler_called == 1);

    SUBCASE("stop from inside a handler ends the run after that handler") {
        r.post([&] {
            ++handler_called;
            r.stop();
        });
        r.post([&] { ++handler_called; });
        CHECK(r.run() == 1);
        CHECK(handler_called == 2);
        CHECK(r.stopped());
        r.restart();
        CHECK(r.run() == 1);
        CHECK(handler_called == 3);
    }
}

TEST_CASE("timers fire in deadline order") {
    watchdog wd{10s};
    reactor r;
    std::vector<int> log;
    tisock::spawn(r, sleeper(r, 60ms, &log, 60));
    tisock::spawn(r, sleeper(r, 20ms, &log, 20));
    tisock::spawn(r, sleeper(r, 40ms, &log, 40));
    tisock::spawn(r, sleeper(r, 1ms, &log, 1));
    CHECK(r.run_for(5s) == 8);
    CHECK(log == std::vector<int>{1, 20, 40, 60});
}

TEST_CASE("timers with the same duration fire in the order they were started") {
    watchdog wd{10s};
    reactor r;
    std::vector<int> log;
    for (int i = 0; i < 50; ++i) tisock::spawn(r, sleeper(r, 30ms, &log, i));
    CHECK(r.run_for(5s) == 100);
    std::vector<int> expected(50);
    std::iota(expected.begin(), expected.end(), 0);
    CHECK(log == expected);
}

TEST_CASE("timers with one exact deadline fire FIFO") {
    watchdog wd{10s};
    reactor r;
    std::vector<int> log;
    auto deadline = test_clock::now() + 20ms;
    std::vector<probe_timer> timers(20);
    for (int i = 0; i < 20; ++i) {
        timers[std::size_t(i)].id = i;
        timers[std::size_t(i)].log = &log;
        // Interleave an earlier deadline to disturb the heap between equal ones.
        tisock::detail::reactor_access::core(r).schedule_timer(&timers[std::size_t(i)], i % 4 == 3 ? deadline - 10ms : deadline);
    }
    CHECK(r.run_for(5s) == 20);
    CHECK(log == std::vector<int>{3, 7, 11, 15, 19, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18});
}

TEST_CASE("destroying a sleeping coroutine's frame cancels its timer") {
    watchdog wd{30s};
    tracked::reset();
    reactor r;
    int resumed = 0;
    SUBCASE("the awaiter in the coroutine's own frame") {
        foreign_coroutine c = foreign_sleeper(r, 20s, resumed);
        CHECK_FALSE(c.done());
        c.destroy();
        stopwatch sw;
        CHECK(r.run() == 0);  // the timer was the only work: nothing is left
        CHECK(sw.elapsed() < 2s);
    }
    SUBCASE("the awaiter in an awaited task's frame") {
        foreign_coroutine c = foreign_awaiting_task(r, 20s, resumed);
        c.destroy();
        stopwatch sw;
        CHECK(r.run() == 0);
        CHECK(sw.elapsed() < 2s);
    }
    SUBCASE("one of three") {
        foreign_coroutine a = foreign_sleeper(r, 10ms, resumed);
        foreign_coroutine b = foreign_sleeper(r, 20ms, resumed);
        foreign_coroutine c = foreign_sleeper(r, 30ms, resumed);
        b.destroy();
        CHECK(r.run_for(5s) == 2);
        CHECK(a.done());
        CHECK(c.done());
        CHECK(resumed == 2);
    }
}

TEST_CASE("a reactor destroyed with sleepers pending destroys their frames") {
    watchdog wd{30s};
    tracked::reset();
    std::vector<int> log;
    auto r = std::make_unique<reactor>();
    for (int i = 0; i < 5; ++i) tisock::spawn(*r, sleeper(*r, 20s, &log, i));
    CHECK(r->run_for(20ms) == 5);  // the starts
    CHECK(tracked::constructed == 5);
    CHECK(tracked::destroyed == 0);
    r.reset();
    CHECK(tracked::destroyed == 5);
    CHECK(log.empty());

    SUBCASE("spawned but never started") {
        tracked::reset();
        auto r2 = std::make_unique<reactor>();
        for (int i = 0; i < 3; ++i) tisock::spawn(*r2, sleeper(*r2, 20s, &log, i));
        r2.reset();
        CHECK(tracked::constructed == 0);  // lazy: the bodies never ran
        CHECK(log.empty());
    }
    SUBCASE("a foreign coroutine is left alone, and may be destroyed after the reactor") {
        tracked::reset();
        int resumed = 0;
        auto r2 = std::make_unique<reactor>();
        foreign_coroutine c = foreign_sleeper(*r2, 20s, resumed);
        r2.reset();
        CHECK(tracked::alive() == 1);  // not destroyed by the reactor (API.md)
        c.destroy();                   // must not touch the dead reactor (ASan checks)
        CHECK(tracked::alive() == 0);
        CHECK(resumed == 0);
    }
}

TEST_CASE("100,000 timers through the timer heap fire once each, in deadline order, FIFO on ties") {
    watchdog wd{120s};
    constexpr int n = 100'000;
    reactor r;
    std::vector<int> log;
    log.reserve(n);
    std::vector<probe_timer> timers(n);
    auto base = test_clock::now() + 50ms;
    // 5,000 distinct deadlines, 20 timers on each, inserted in scrambled deadline order.
    std::vector<test_clock::time_point> deadline(n);
    for (int i = 0; i < n; ++i) {
        deadline[std::size_t(i)] = base + std::chrono::microseconds((i * 7919L) % 5000 * 10);
        timers[std::size_t(i)].id = i;
        timers[std::size_t(i)].log = &log;
        tisock::detail::reactor_access::core(r).schedule_timer(&timers[std::size_t(i)], deadline[std::size_t(i)]);
    }
    SUBCASE("all of them") {
        std::vector<int> expected(n);
        std::iota(expected.begin(), expected.end(), 0);
        std::stable_sort(expected.begin(), expected.end(),
                         [&](int a, int b) { return deadline[std::size_t(a)] < deadline[std::size_t(b)]; });
        CHECK(r.run_for(60s) == std::size_t(n));
        CHECK(log.size() == std::size_t(n));
        CHECK(log == expected);
    }
    SUBCASE("with every third cancelled before it fires") {
        std::vector<int> expected;
        for (int i = 0; i < n; ++i) {
            if (i % 3 == 0) {
                tisock::detail::reactor_access::core(r).cancel_timer(&timers[std::size_t(i)]);
            } else {
                expected.push_back(i);
            }
        }
        std::stable_sort(expected.begin(), expected.end(),
                         [&](int a, int b) { return deadline[std::size_t(a)] < deadline[std::size_t(b)]; });
        CHECK(r.run_for(60s) == expected.size());
        CHECK(log == expected);
        for (int i = 0; i < n; i += 3) CHECK_FALSE(timers[std::size_t(i)].armed());
    }
}

TEST_CASE("100,000 sleep_for timers all fire, none early") {
    watchdog wd{180s};
    constexpr int n = 100'000;
    reactor r;
    std::vector<int> fired(n, 0);
    int early = 0;
    struct body {
        static tisock::task<void> run(reactor& r, int i, std::vector<int>& fired, int& early) {
            auto d = std::chrono::milliseconds((i * 7919L) % 100);
            auto start = test_clock::now();
            co_await r.sleep_for(d);
            if (test_clock::now() - start < d) ++early;
            ++fired[std::size_t(i)];
        }
    };
    for (int i = 0; i < n; ++i) tisock::spawn(r, body::run(r, i, fired, early));
    CHECK(r.run_for(120s) == std::size_t(2 * n) - std::size_t(n / 100));  // d == 0 does not suspend
    CHECK(std::all_of(fired.begin(), fired.end(), [](int f) { return f == 1; }));
    CHECK(early == 0);
    CHECK(r.run() == 0);
}

TEST_CASE("an exception thrown by a posted handler propagates out of run, and the reactor stays usable") {
    watchdog wd{10s};
    reactor r;
    int handler_called = 0;
    r.post([&] { ++handler_called; });
    r.post([&] {
        ++handler_called;
        throw std::runtime_error("boom");
    });
    r.post([&] { ++handler_called; });
    r.post([&] { ++handler_called; });
    CHECK_THROWS_WITH_AS(r.run(), "boom", std::runtime_error);
    CHECK(handler_called == 2);
    CHECK_FALSE(r.stopped());
    CHECK(r.run() == 2);  // the remaining handlers
    CHECK(handler_called == 4);

    SUBCASE("from run_one, run_for and poll too") {
        r.post([] { throw std::logic_error("one"); });
        CHECK_THROWS_AS(r.run_one(), std::logic_error);
        r.post([] { throw std::logic_error("for"); });
        CHECK_THROWS_AS(r.run_for(1s), std::logic_error);
        r.post([] { throw std::logic_error("poll"); });
        r.post([&] { ++handler_called; });
        CHECK_THROWS_AS(r.poll(), std::logic_error);
        CHECK(r.poll() == 1);
        CHECK(handler_called == 5);
    }
    SUBCASE("a throwing handler is destroyed exactly once") {
        tracked::reset();
        r.post([t = tracked{}] { throw std::runtime_error("x"); });
        CHECK_THROWS(r.run());
        CHECK(tracked::alive() == 0);
    }
}

TEST_CASE("return values of run, run_one, run_for and poll count handlers") {
    watchdog wd{10s};
    reactor r;
    for (int i = 0; i < 5; ++i) r.post([] {});
    CHECK(r.poll() == 5);
    for (int i = 0; i < 4; ++i) r.post([] {});
    CHECK(r.run_one() == 1);
    CHECK(r.run_for(1s) == 3);
    for (int i = 0; i < 7; ++i) r.post([] {});
    std::vector<int> log;
    tisock::spawn(r, sleeper(r, 5ms, &log, 1));
    CHECK(r.run() == 9);  // 7 posted + start + expiry
    CHECK(r.run() == 0);
    CHECK(r.poll() == 0);
}

TEST_CASE("pending posted handlers are destroyed, not run, with the reactor") {
    watchdog wd{10s};
    tracked::reset();
    int handler_called = 0;
    {
        reactor r;
        for (int i = 0; i < 3; ++i) r.post([&, t = tracked{}] { ++handler_called; });
        std::thread other([&] { r.post([&, t = tracked{}] { ++handler_called; }); });
        other.join();
    }
    CHECK(handler_called == 0);
    CHECK(tracked::alive() == 0);
}

// A nested run*() from a handler of the same reactor would take over the event batch the
// outer call is walking; it is refused, and the refusal propagates like any handler
// exception, leaving the reactor usable.
TEST_CASE("run*() and poll() from inside one of the reactor's own handlers throw state_error") {
    watchdog wd{10s};
    reactor r;
    int nested_refused = 0;
    r.post([&] {
        count_throws<tisock::state_error>(nested_refused, [&] { r.run(); });
        count_throws<tisock::state_error>(nested_refused, [&] { r.poll(); });
        throw std::runtime_error("out");
    });
    CHECK_THROWS_AS(r.run(), std::runtime_error);
    CHECK(nested_refused == 2);
    int later = 0;
    r.post([&] { ++later; });
    CHECK(r.run() == 1);
    CHECK(later == 1);
}
