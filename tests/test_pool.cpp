// tisock::reactor_pool and resume_on: ping-pong between two reactors without leak or stack
// growth, sticky task completion, resume_on counting as the other reactor's work, the stop
// token after resume_on, the pool's run/stop from another thread, next() from several
// threads, a handler's exception stopping the pool, spawn from another thread.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

#include <tisock/reactor.hpp>
#include <tisock/reactor_pool.hpp>
#include <tisock/resume_on.hpp>
#include <tisock/task.hpp>

#include "foundation_support.hpp"

using namespace std::chrono_literals;
using tisock::reactor;
using tisock::reactor_pool;
using tisock::resume_on;
using tisock::task;
using tisock_test::tracked;
using tisock_test::watchdog;

namespace {

// Out of line: clang 14 may keep get_id()'s thread_local across a suspension of a coroutine
// that resumed on another thread.
[[gnu::noinline]] std::thread::id this_thread_id() { return std::this_thread::get_id(); }

// Waits (bounded by the test's watchdog) until `flag` is set.
void wait_for(const std::atomic<bool>& flag) {
    while (!flag.load(std::memory_order_acquire)) std::this_thread::sleep_for(1ms);
}

// Lowest and highest stack address sampled on one thread.
struct stack_span {
    std::uintptr_t low = UINTPTR_MAX;
    std::uintptr_t high = 0;
    [[gnu::noinline]] void sample() noexcept {
        char probe = 0;
        auto a = reinterpret_cast<std::uintptr_t>(&probe);
        low = std::min(low, a);
        high = std::max(high, a);
    }
};

task<int> ping_pong(reactor& a, reactor& b, int rounds, stack_span& on_a, stack_span& on_b) {
    tracked in_frame;
    int count = 0;
    for (int i = 0; i < rounds; ++i) {
        co_await resume_on(b);
        on_b.sample();
        co_await resume_on(a);
        on_a.sample();
        ++count;
    }
    co_return count;
}

}  // namespace

TEST_CASE("resume_on ping-pong between two reactors 100,000 times: no leak, no stack growth") {
    watchdog guard(120s, "ping-pong");
    tracked::reset();
    reactor_pool pool(2);
    stack_span on_a, on_b;
    int count = 0;
    std::thread::id home;
    auto root = [&]() -> task<void> {
        count = co_await ping_pong(pool[0], pool[1], 100'000, on_a, on_b);
        home = this_thread_id();
        pool.stop();
    };
    tisock::spawn(pool[0], root());
    pool.run();
    CHECK(count == 100'000);
    CHECK(home == std::this_thread::get_id());  // reactor 0 runs on the caller's thread
    CHECK(tracked::alive() == 0);
    CHECK(on_a.high - on_a.low < 16 * 1024);
    CHECK(on_b.high - on_b.low < 16 * 1024);
}

namespace {

task<std::thread::id> hop(reactor& other) {
    co_await resume_on(other);
    co_return this_thread_id();
}

// Hops to `other` and finishes there, after a nested task that hops back and forth.
task<std::thread::id> hop_nested(reactor& here, reactor& other) {
    co_await resume_on(other);
    (void)co_await hop(here);
    co_return this_thread_id();  // sticky: back on `other`
}

}  // namespace

TEST_CASE("a task finishing on another reactor resumes its awaiter on the awaiter's reactor") {
    watchdog guard(30s, "sticky");
    reactor_pool pool(2);
    std::thread::id t0, t1, before, in_hop, after, nested, after_nested;
    std::atomic<bool> done{false};
    pool[0].post([&] { t0 = this_thread_id(); });
    pool[1].post([&] { t1 = this_thread_id(); });
    auto root = [&]() -> task<void> {
        before = this_thread_id();
        in_hop = co_await hop(pool[1]);
        after = this_thread_id();
        nested = co_await hop_nested(pool[0], pool[1]);
        after_nested = this_thread_id();
        done = true;
        pool.stop();
    };
    tisock::spawn(pool[0], root());
    pool.run();
    REQUIRE(done);
    CHECK(t0 != t1);
    CHECK(before == t0);
    CHECK(in_hop == t1);
    CHECK(after == t0);
    CHECK(nested == t1);
    CHECK(after_nested == t0);
}

TEST_CASE("sync_wait's task finishes where it started after resume_on") {
    watchdog guard(30s, "sync_wait sticky");
    reactor_pool other(1);
    std::thread runner([&] { other.run(); });
    reactor r;
    auto t = [&]() -> task<std::thread::id> {
        std::thread::id there = co_await hop(other[0]);
        CHECK(there != this_thread_id());
        co_return this_thread_id();
    };
    CHECK(tisock::sync_wait(r, t()) == std::this_thread::get_id());
    other.stop();
    runner.join();
}

TEST_CASE("a coroutine resumed on another reactor counts as its work until it resumes") {
    watchdog guard(30s, "work counting");
    reactor a, b;
    bool on_b = false, finished = false;
    auto t = [&]() -> task<void> {
        co_await resume_on(b);
        on_b = true;
        co_await b.sleep_for(20ms);  // b's own work from here on
    };
    auto root = [&]() -> task<void> {
        co_await t();
        finished = true;
    };
    tisock::spawn(a, root());
    CHECK(a.run_one() == 1);  // starts the root: posted to b, suspended
    CHECK_FALSE(on_b);
    CHECK(b.run() >= 2);      // does not return before the coroutine resumed and slept
    CHECK(on_b);
    CHECK_FALSE(finished);    // its awaiter goes on on a, posted there: a's work
    CHECK(a.run() >= 1);
    CHECK(finished);
}

TEST_CASE("the stop token keeps working after resume_on") {
    watchdog guard(30s, "token");
    reactor_pool pool(2);
    std::thread runner([&] { pool.run(); });
    std::stop_source source;
    std::atomic<bool> got{false}, saw_stop{false}, done{false};
    auto t = [&]() -> task<void> {
        co_await resume_on(pool[1]);
        std::stop_token token = co_await tisock::get_stop_token();
        CHECK(token.stop_possible());
        got = true;
        while (!token.stop_requested()) std::this_thread::sleep_for(1ms);
        saw_stop = true;
        co_await resume_on(pool[0]);
        done = true;
    };
    tisock::spawn(pool[0], t(), source.get_token());  // from a thread not running it
    wait_for(got);
    source.request_stop();
    wait_for(done);
    CHECK(saw_stop);
    pool.stop();
    runner.join();
}

TEST_CASE("reactor_pool runs without work until stopped from another thread") {
    watchdog guard(30s, "pool run/stop");
    reactor_pool pool(3);
    CHECK(pool.size() == 3);
    CHECK(reactor_pool(0).size() == 1);
    std::atomic<bool> returned{false};
    std::thread runner([&] {
        pool.run();
        returned = true;
    });
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(returned);
    std::atomic<int> ran{0};
    std::vector<std::thread::id> ids(pool.size());
    for (std::size_t i = 0; i < pool.size(); ++i) {
        pool[i].post([&, i] {
            ids[i] = this_thread_id();
            ++ran;
        });
    }
    while (ran.load() < 3) std::this_thread::sleep_for(1ms);
    pool.stop();
    runner.join();
    CHECK(returned);
    CHECK(ids[0] != ids[1]);
    CHECK(ids[1] != ids[2]);
    CHECK(ids[0] != ids[2]);
}

TEST_CASE("reactor_pool::next() is round robin from several threads") {
    watchdog guard(30s, "next");
    reactor_pool pool(4);
    constexpr int per_thread = 1000;
    std::vector<std::vector<int>> counts(4, std::vector<int>(pool.size()));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                reactor& r = pool.next();
                for (std::size_t k = 0; k < pool.size(); ++k) {
                    if (&pool[k] == &r) ++counts[t][k];
                }
            }
        });
    }
    for (std::thread& th : threads) th.join();
    for (std::size_t k = 0; k < pool.size(); ++k) {
        int total = 0;
        for (auto& c : counts) total += c[k];
        CHECK(total == per_thread);  // 4 threads x 1000 calls over 4 reactors
    }
}

TEST_CASE("an exception from one reactor's handler stops the pool and run() rethrows it") {
    watchdog guard(30s, "exception");
    reactor_pool pool(3);
    pool[2].post([] { throw std::runtime_error("boom"); });
    CHECK_THROWS_WITH_AS(pool.run(), "boom", std::runtime_error);
    // Stopped, joined and reset: it runs again.
    std::atomic<bool> ran{false};
    pool[1].post([&] {
        ran = true;
        pool.stop();
    });
    pool.run();
    CHECK(ran);
}

TEST_CASE("spawn onto a pool reactor from another thread") {
    watchdog guard(30s, "spawn");
    reactor_pool pool(2);
    std::thread runner([&] { pool.run(); });
    std::thread::id handler_thread, task_thread;
    std::atomic<bool> done{false};
    pool[1].post([&] { handler_thread = this_thread_id(); });
    auto t = [&]() -> task<void> {
        co_await pool[1].sleep_for(1ms);
        task_thread = this_thread_id();
        done = true;
    };
    for (int i = 0; i < 100; ++i) tisock::spawn(pool[1], [](reactor& r) -> task<void> { co_await r.sleep_for(0ms); }(pool[1]));
    tisock::spawn(pool[1], t());
    wait_for(done);
    pool.stop();
    runner.join();
    CHECK(task_thread == handler_thread);
    CHECK(task_thread != std::this_thread::get_id());
}

TEST_CASE("a spawn posted from another thread is destroyed unstarted with its reactor") {
    watchdog guard(30s, "posted spawn");
    tracked::reset();
    bool started = false;
    auto t = [&]() -> task<void> {
        tracked in_frame;
        started = true;
        co_return;
    };
    {
        reactor r;
        std::thread([&] { tisock::spawn(r, t()); }).join();
        CHECK(tracked::alive() == 0);  // the frame exists, its body has not started
    }
    CHECK_FALSE(started);
    CHECK(tracked::alive() == 0);
}
