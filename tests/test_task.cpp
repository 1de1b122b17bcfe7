// tisock::task<T>, spawn and sync_wait: values, move-only values, references, exceptions
// through nested awaits, quiet cancellation of spawned tasks, sync_wait of any awaitable,
// 1,000,000 sequential synchronous awaits and 100,000 nested tasks
// without stack growth, reactor destruction with suspended coroutines, foreign coroutine
// types.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <tisock/reactor.hpp>
#include <tisock/task.hpp>

#include "foundation_support.hpp"

using namespace std::chrono_literals;
using tisock::reactor;
using tisock::task;
using tisock_test::count_throws;
using tisock_test::foreign_coroutine;
using tisock_test::stopwatch;
using tisock_test::tracked;
using tisock_test::watchdog;

static_assert(sizeof(task<int>) == sizeof(void*), "task<int> is one coroutine handle");
static_assert(sizeof(task<void>) == sizeof(void*));
static_assert(!std::is_copy_constructible_v<task<int>>);
static_assert(std::is_nothrow_move_constructible_v<task<int>>);

namespace {

// Resumes the awaiting coroutine from a posted handler: a suspension that is not a timer.
struct yield_to {
    reactor& r;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const {
        r.post([h] { h.resume(); });
    }
    void await_resume() const noexcept {}
};

// Suspends and registers nothing: nobody will ever resume it.
struct suspend_forever {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    void await_resume() const noexcept {}
};

task<int> ready_value(int v) { co_return v; }
task<void> ready_void() { co_return; }

task<int> add_one(task<int> t) { co_return co_await std::move(t) + 1; }

task<std::unique_ptr<int>> make_unique_value(int v) { co_return std::make_unique<int>(v); }

int global_int = 5;
task<int&> ref_to_global() { co_return global_int; }

const std::string& long_lived_string() {
    static const std::string s = "a string that outlives every task";
    return s;
}
task<const std::string&> ref_to_string() { co_return long_lived_string(); }

struct test_error : std::runtime_error {
    int depth;
    test_error(const char* what, int d) : std::runtime_error(what), depth(d) {}
};

task<int> throws_at(int depth) {
    tracked in_frame;
    if (depth == 0) throw test_error("bottom", 0);
    co_return co_await throws_at(depth - 1) + 1;
}

task<int> throws_after_suspending(reactor& r) {
    tracked in_frame;
    co_await r.sleep_for(1ms);
    throw test_error("after sleep", 0);
}

task<int> catches(task<int> t) {
    try {
        co_return co_await std::move(t);
    } catch (const test_error& e) {
        co_return -100 - e.depth;
    }
}

task<int> sleep_then(reactor& r, std::chrono::milliseconds d, int v) {
    tracked in_frame;
    co_await r.sleep_for(d);
    co_return v;
}

// Records the lowest and highest stack addresses seen, to measure stack growth directly
// rather than waiting for an overflow.
struct stack_span {
    std::uintptr_t low = UINTPTR_MAX;
    std::uintptr_t high = 0;
    void sample() noexcept {
        char probe = 0;
        auto a = reinterpret_cast<std::uintptr_t>(&probe);
        low = std::min(low, a);
        high = std::max(high, a);
    }
    std::uintptr_t spread() const noexcept { return high - low; }
};
stack_span stack;

task<int> ready_sampled(int v) {
    stack.sample();
    co_return v;
}
task<int> ready_nested(int v) { co_return co_await ready_sampled(v); }

task<long long> sum_ready(int n) {
    long long s = 0;
    for (int i = 0; i < n; ++i) s += co_await ready_sampled(i);
    co_return s;
}
task<long long> sum_ready_nested(int n) {
    long long s = 0;
    for (int i = 0; i < n; ++i) s += co_await ready_nested(i);
    co_return s;
}
task<int> count_ready_void(int n) {
    int c = 0;
    for (int i = 0; i < n; ++i) {
        co_await ready_void();
        ++c;
    }
    co_return c;
}

task<int> yield_value(reactor& r, int v) {
    co_await yield_to{r};
    stack.sample();
    co_return v;
}
task<long long> sum_yielding(reactor& r, int n) {
    long long s = 0;
    for (int i = 0; i < n; ++i) s += co_await yield_value(r, i);
    co_return s;
}

// How the innermost task of a nested chain ends.
enum class innermost { returns, throws, sleeps };

// A chain of `depth` nested tasks, each awaiting the next; samples the stack on the way down
// and on the way up.
task<int> nested(reactor& r, int depth, innermost end) {
    tracked in_frame;
    stack.sample();
    if (depth == 0) {
        if (end == innermost::throws) throw test_error("innermost", 0);
        if (end == innermost::sleeps) co_await r.sleep_for(1ms);
        co_return 0;
    }
    int below = co_await nested(r, depth - 1, end);
    stack.sample();
    co_return below + 1;
}

// Runs a chain of `depth` nested tasks to its end on `r`; returns the stack spread it used.
std::uintptr_t nested_chain_stack(reactor& r, int depth, innermost end) {
    tracked::reset();
    stack = {};
    if (end == innermost::throws) {
        CHECK_THROWS_WITH_AS(tisock::sync_wait(r, nested(r, depth, end)), "innermost", test_error);
    } else {
        CHECK(tisock::sync_wait(r, nested(r, depth, end)) == depth);
    }
    CHECK(tracked::constructed == depth + 1);
    CHECK(tracked::alive() == 0);
    return stack.spread();
}

// Each level awaits a loop of `sequential` ready tasks (itself a task) before the next level
// and `sequential` more after it; every 25,000th level first yields to the reactor, a real
// suspension in the middle of the chain. Each level adds sequential * (sequential - 1).
task<long long> nested_and_sequential(reactor& r, int depth, int sequential) {
    long long sum = co_await sum_ready(sequential);
    if (depth % 25'000 == 0) co_await yield_to{r};
    if (depth > 0) sum += co_await nested_and_sequential(r, depth - 1, sequential);
    for (int i = 0; i < sequential; ++i) sum += co_await ready_sampled(i);
    co_return sum;
}

task<void> set_flag(bool& flag) {
    flag = true;
    co_return;
}

task<void> layered(reactor& r, int depth, int& resumed) {
    tracked in_frame;
    if (depth == 0) {
        co_await r.sleep_for(20s);
    } else {
        co_await layered(r, depth - 1, resumed);
    }
    ++resumed;
}

task<void> waits_on_yield(reactor& r, int& resumed) {
    tracked in_frame;
    co_await yield_to{r};
    co_await r.sleep_for(20s);
    ++resumed;
}

}  // namespace

TEST_CASE("task<int> is the size of a pointer") {
    MESSAGE("sizeof(tisock::task<int>) = " << sizeof(task<int>) << ", sizeof(void*) = " << sizeof(void*));
    CHECK(sizeof(task<int>) == sizeof(void*));
}

TEST_CASE("values") {
    watchdog wd{10s};
    reactor r;
    CHECK(tisock::sync_wait(r, ready_value(42)) == 42);
    CHECK(tisock::sync_wait(r, add_one(add_one(ready_value(40)))) == 42);
    tisock::sync_wait(r, ready_void());
    CHECK(tisock::sync_wait(r, sleep_then(r, 5ms, 7)) == 7);
    CHECK(r.run() == 0);  // nothing left behind
}

TEST_CASE("move-only values") {
    watchdog wd{10s};
    reactor r;
    std::unique_ptr<int> p = tisock::sync_wait(r, make_unique_value(9));
    REQUIRE(p != nullptr);
    CHECK(*p == 9);
    struct body {
        static task<int> run() {
            std::unique_ptr<int> q = co_await make_unique_value(3);
            co_return *q * 2;
        }
    };
    CHECK(tisock::sync_wait(r, body::run()) == 6);
}

TEST_CASE("references") {
    watchdog wd{10s};
    reactor r;
    int& ref = tisock::sync_wait(r, ref_to_global());
    CHECK(&ref == &global_int);
    const std::string& s = tisock::sync_wait(r, ref_to_string());
    CHECK(&s == &long_lived_string());
    struct body {
        static task<int> run() {
            int& a = co_await ref_to_global();
            a = 11;
            const std::string& b = co_await ref_to_string();
            co_return int(b.size());
        }
    };
    CHECK(tisock::sync_wait(r, body::run()) == int(long_lived_string().size()));
    CHECK(global_int == 11);
}

TEST_CASE("exceptions propagate through nested awaits") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    CHECK_THROWS_WITH_AS(tisock::sync_wait(r, throws_at(5)), "bottom", test_error);
    CHECK(tracked::constructed == 6);
    CHECK(tracked::alive() == 0);
    CHECK(tisock::sync_wait(r, catches(throws_at(3))) == -100);
    CHECK_THROWS_WITH_AS(tisock::sync_wait(r, add_one(throws_after_suspending(r))), "after sleep", test_error);
    CHECK(tisock::sync_wait(r, catches(add_one(throws_after_suspending(r)))) == -100);
    CHECK(tracked::alive() == 0);
    CHECK(r.run() == 0);
}

TEST_CASE("nested awaits") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    struct body {
        static task<int> depth(reactor& r, int n) {
            if (n == 0) co_return co_await sleep_then(r, 1ms, 0);
            co_return co_await depth(r, n - 1) + 1;
        }
        static task<int> depth_ready(int n) {
            if (n == 0) co_return 0;
            co_return co_await depth_ready(n - 1) + 1;
        }
    };
    CHECK(tisock::sync_wait(r, body::depth(r, 1000)) == 1000);
    CHECK(tisock::sync_wait(r, body::depth_ready(1000)) == 1000);
    CHECK(tracked::constructed == 1);
    CHECK(tracked::alive() == 0);
}

TEST_CASE("1,000,000 sequential awaits of ready tasks do not grow the stack") {
    watchdog wd{120s};
    reactor r;
    constexpr int n = 1'000'000;
    constexpr long long expected = static_cast<long long>(n) * (n - 1) / 2;
    stack = {};
    CHECK(tisock::sync_wait(r, sum_ready(n)) == expected);
    MESSAGE("stack spread over 1,000,000 awaits: " << stack.spread() << " bytes");
    CHECK(stack.spread() < 64 * 1024);

    stack = {};
    CHECK(tisock::sync_wait(r, sum_ready_nested(n)) == expected);
    CHECK(stack.spread() < 64 * 1024);

    CHECK(tisock::sync_wait(r, count_ready_void(n)) == n);
}

TEST_CASE("100,000 sequential awaits of tasks that suspend do not grow the stack") {
    watchdog wd{120s};
    reactor r;
    constexpr int n = 100'000;
    stack = {};
    CHECK(tisock::sync_wait(r, sum_yielding(r, n)) == static_cast<long long>(n) * (n - 1) / 2);
    CHECK(stack.spread() < 64 * 1024);
}

// The stack may not grow with the depth of a chain of nested tasks: `spread_at(depth)` runs
// one and returns the stack spread it used, compared between depth 1,000 and depth 100,000
// (at -O0 or under ASan a frame set per level is hundreds of bytes).
template <class SpreadAt>
void check_stack_does_not_grow_with_depth(SpreadAt spread_at) {
    std::uintptr_t shallow = spread_at(1'000);
    std::uintptr_t deep = spread_at(100'000);
    MESSAGE("stack spread: " << shallow << " bytes at depth 1,000, " << deep << " bytes at depth 100,000");
    CHECK(deep <= shallow + 4096);
    CHECK(deep < 64 * 1024);
}

TEST_CASE("100,000 nested tasks do not grow the stack") {
    watchdog wd{120s};
    reactor r;
    innermost end = innermost::returns;
    SUBCASE("the innermost task returns at once") { end = innermost::returns; }
    SUBCASE("the innermost task throws: the exception goes through every level") { end = innermost::throws; }
    SUBCASE("the innermost task sleeps: the reactor completes the whole chain") { end = innermost::sleeps; }
    check_stack_does_not_grow_with_depth([&](int depth) { return nested_chain_stack(r, depth, end); });
    CHECK(r.run() == 0);
}

TEST_CASE("100,000 nested tasks with sequential awaits and suspensions at some levels do not grow the stack") {
    watchdog wd{120s};
    reactor r;
    constexpr int sequential = 5;
    check_stack_does_not_grow_with_depth([&](int depth) {
        stack = {};
        CHECK(tisock::sync_wait(r, nested_and_sequential(r, depth, sequential)) ==
              (depth + 1LL) * sequential * (sequential - 1));
        return stack.spread();
    });
}

// A chain suspended while one thread drives the reactor is completed by another thread:
// the per-thread state behind the no-stack-growth guarantee must be this thread's.
TEST_CASE("a nested chain started on one thread completes on another") {
    watchdog wd{60s};
    tracked::reset();
    reactor r;
    int result = 0;
    struct body {
        static task<void> run(reactor& r, int& out) {
            out = co_await nested(r, 1000, innermost::sleeps);
            out += co_await nested(r, 1000, innermost::returns);
        }
    };
    tisock::spawn(r, body::run(r, result));
    std::size_t started = 0;
    std::size_t finished = 0;
    std::thread([&] { started = r.run_one(); }).join();  // down the chain to the timer
    CHECK(started == 1);
    CHECK(tracked::alive() == 1001);
    std::thread([&] { finished = r.run(); }).join();
    CHECK(finished == 1);  // the timer
    CHECK(result == 2000);
    CHECK(tracked::alive() == 0);
}

TEST_CASE("spawn starts the task from the run loop, not inside spawn()") {
    watchdog wd{10s};
    reactor r;
    bool started = false;
    tisock::spawn(r, set_flag(started));
    CHECK_FALSE(started);
    CHECK(r.run() == 1);
    CHECK(started);

    SUBCASE("spawn from inside a running task") {
        bool child = false;
        bool child_seen_inside = true;
        struct body {
            static task<void> run(reactor& r, bool& child, bool& seen) {
                tisock::spawn(r, set_flag(child));
                seen = child;
                co_return;
            }
        };
        tisock::spawn(r, body::run(r, child, child_seen_inside));
        CHECK(r.run() == 2);
        CHECK_FALSE(child_seen_inside);
        CHECK(child);
    }
}

TEST_CASE("spawn of an empty task throws state_error and leaves the reactor without work") {
    watchdog wd{10s};
    reactor r;
    bool flag = false;
    task<void> t = set_flag(flag);
    task<void> moved = std::move(t);
    CHECK_THROWS_AS(tisock::spawn(r, std::move(t)), tisock::state_error);
    CHECK(r.poll() == 0);
    CHECK(r.run() == 0);  // nothing counted as work: returns at once
}

TEST_CASE("a spawned task ends itself: its frame is freed when it finishes, after nested awaits and suspensions") {
    watchdog wd{10s};
    reactor r;
    tracked::reset();
    struct body {
        static task<int> inner(reactor& r) {
            co_await r.sleep_for(1ms);
            co_return 7;
        }
        static task<void> run(reactor& r, int& got) {
            tracked in_frame;
            got = co_await inner(r);
            got += co_await inner(r);
        }
    };
    int got = 0;
    tisock::spawn(r, body::run(r, got));
    CHECK(tracked::constructed == 0);  // not started inside spawn()
    r.run();
    CHECK(got == 14);
    CHECK(tracked::constructed == 1);
    CHECK(tracked::alive() == 0);  // the frame was destroyed at its end
}

TEST_CASE("an exception escaping a spawned task calls std::terminate") {
    watchdog wd{10s};
    const int status = tisock_test::in_child_process([] {
        reactor r;
        struct body {
            static task<void> run() {
                throw std::runtime_error("escapes");
                co_return;
            }
        };
        tisock::spawn(r, body::run());
        r.run();  // terminate aborts: the child never exits by itself
    });
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
}

// ---- quiet cancellation ------------------------------------------------------------------

TEST_CASE("quiet cancellation: operation_canceled escaping a spawned task whose token is stopped ends it quietly") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    std::stop_source src;
    src.request_stop();
    struct body {
        static task<void> run() {
            tracked in_frame;
            throw std::system_error(std::make_error_code(std::errc::operation_canceled));
            co_return;
        }
    };
    tisock::spawn(r, body::run(), src.get_token());
    r.run();
    CHECK(tracked::constructed == 1);
    CHECK(tracked::alive() == 0);
}

namespace {
// Spawns, in a child process, a task that throws std::system_error(`code`) under a token
// (stopped first if `stop`); returns whether the process was killed by a signal (terminate).
bool spawned_throw_terminates(std::errc code, bool stop) {
    int status = tisock_test::in_child_process([&] {
        reactor r;
        std::stop_source src;
        if (stop) src.request_stop();
        struct body {
            static task<void> run(std::errc c) {
                throw std::system_error(std::make_error_code(c));
                co_return;
            }
        };
        tisock::spawn(r, body::run(code), src.get_token());
        r.run();
    });
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}
}  // namespace

TEST_CASE("every other exception escaping a spawned task still calls std::terminate") {
    watchdog wd{20s};
    CHECK(spawned_throw_terminates(std::errc::operation_canceled, false));  // a token not stopped
    CHECK(spawned_throw_terminates(std::errc::timed_out, true));            // another error
    CHECK_FALSE(spawned_throw_terminates(std::errc::operation_canceled, true));
}

// ---- sync_wait of any awaitable ----------------------------------------------------------

TEST_CASE("sync_wait of any awaitable, rvalue or lvalue") {
    watchdog wd{10s};
    reactor r;
    stopwatch sw;
    tisock::sync_wait(r, r.sleep_for(5ms));
    CHECK(sw.elapsed() >= 5ms);
    auto s = r.sleep_for(1ms);
    tisock::sync_wait(r, s);
    task<int> t = ready_value(4);
    CHECK(tisock::sync_wait(r, t) == 4);
    static_assert(std::is_same_v<decltype(tisock::sync_wait(r, ready_value(1))), int>);
    static_assert(std::is_void_v<decltype(tisock::sync_wait(r, r.sleep_for(1ms)))>);
    struct immovable {  // awaited where it is: sync_wait moves nothing
        int v;
        immovable(int x) : v(x) {}
        immovable(immovable&&) = delete;
        bool await_ready() const noexcept { return true; }
        void await_suspend(std::coroutine_handle<>) const noexcept {}
        int await_resume() const noexcept { return v; }
    };
    CHECK(tisock::sync_wait(r, immovable(6)) == 6);
    CHECK(r.run() == 0);
}

TEST_CASE("sync_wait: values and exceptions") {
    watchdog wd{10s};
    reactor r;
    CHECK(tisock::sync_wait(r, sleep_then(r, 10ms, 3)) == 3);
    CHECK_THROWS_AS(tisock::sync_wait(r, throws_at(0)), test_error);
    CHECK(tisock::sync_wait(r, ready_value(1)) == 1);  // still usable
    SUBCASE("co_await on an empty task throws state_error") {
        struct body {
            static task<int> run() {
                task<int> empty;
                co_return co_await empty;
            }
        };
        CHECK_THROWS_AS(tisock::sync_wait(r, body::run()), tisock::state_error);
    }
}

TEST_CASE("sync_wait from inside a running reactor throws state_error") {
    watchdog wd{10s};
    reactor r;
    int threw = 0;
    r.post([&] { count_throws<tisock::state_error>(threw, [&] { (void)tisock::sync_wait(r, ready_value(1)); }); });
    struct body {
        static task<void> run(reactor& r, int& threw) {
            count_throws<tisock::state_error>(threw, [&] { (void)tisock::sync_wait(r, ready_value(1)); });
            co_return;
        }
    };
    tisock::spawn(r, body::run(r, threw));
    CHECK(r.run() == 2);
    CHECK(threw == 2);
}

// r1 runs a handler that sync_waits on r2, whose task sync_waits on r1: r1 is running on
// this thread (further up the stack), so this is the same self-deadlock / re-entrancy and
// must throw. reactor::running_in_this_thread() only compares the thread's *innermost*
// running reactor, so it misses r1 here and r1's run loop is re-entered.
TEST_CASE("sync_wait on a reactor running further up the stack throws state_error") {
    watchdog wd{10s};
    reactor r1;
    reactor r2;
    int threw = 0;
    int inner_ran = 0;
    struct body {
        static task<void> counting(int& ran) {
            ++ran;
            co_return;
        }
        static task<void> on_r2(reactor& r1, int& threw, int& ran) {
            count_throws<tisock::state_error>(threw, [&] { tisock::sync_wait(r1, counting(ran)); });
            co_return;
        }
    };
    r1.post([&] { tisock::sync_wait(r2, body::on_r2(r1, threw, inner_ran)); });
    CHECK(r1.run() == 1);
    CHECK(threw == 1);
    CHECK(inner_ran == 0);
}

TEST_CASE("sync_wait on a stopped reactor throws state_error and destroys the task") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    r.stop();
    CHECK_THROWS_AS(tisock::sync_wait(r, sleep_then(r, 1ms, 1)), tisock::state_error);
    CHECK(tracked::alive() == 0);
    r.restart();
    CHECK(tisock::sync_wait(r, sleep_then(r, 1ms, 1)) == 1);

    SUBCASE("stopped from another thread while the task waits") {
        std::thread stopper([&] {
            std::this_thread::sleep_for(100ms);
            r.stop();
        });
        stopwatch sw;
        CHECK_THROWS_AS(tisock::sync_wait(r, sleep_then(r, 20s, 1)), tisock::state_error);
        stopper.join();
        CHECK(sw.elapsed() < 5s);
        CHECK(tracked::alive() == 0);
        r.restart();
        CHECK(r.run() == 0);  // the task's timer went with it
    }
}

// The sync_wait root itself counts as work, so a task that waits on something that will
// never come keeps sync_wait blocked (another thread may still post what it waits for) until
// stop(); then sync_wait throws state_error and the task's frame is destroyed.
TEST_CASE("sync_wait on a task that can never finish blocks until stop(), then throws and destroys it") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    struct body {
        static task<int> run() {
            tracked in_frame;
            co_await suspend_forever{};
            co_return 1;
        }
    };
    std::thread stopper([&] {
        std::this_thread::sleep_for(1s);
        r.stop();
    });
    stopwatch sw;
    CHECK_THROWS_AS(tisock::sync_wait(r, body::run()), tisock::state_error);
    auto elapsed = sw.elapsed();
    stopper.join();
    CHECK(tracked::alive() == 0);
    CHECK(elapsed >= 900ms);
}

// A handler throws while sync_wait drives the reactor: the exception leaves sync_wait, but
// the root coroutine stays registered with pointers into sync_wait's dead stack frame
// (`result` and `done`). The next run of the reactor resumes the task, which then writes
// its result through those pointers (stack corruption). The task must be torn down when
// sync_wait exits by an exception, as it already is when the reactor stops.
TEST_CASE("an exception out of a handler during sync_wait tears the task down") {
    watchdog wd{10s};
    tracked::reset();
    auto r = std::make_unique<reactor>();
    r->post([] { throw std::runtime_error("handler"); });
    CHECK_THROWS_WITH_AS(tisock::sync_wait(*r, sleep_then(*r, 10ms, 1)), "handler", std::runtime_error);
    CHECK(tracked::alive() == 0);  // the task must not outlive sync_wait
    // Do not run *r again: with the bug, that would write into a dead stack frame.
    r.reset();
    CHECK(tracked::alive() == 0);
}

TEST_CASE("destroying a reactor with suspended coroutines destroys every frame") {
    watchdog wd{10s};
    tracked::reset();
    int resumed = 0;
    int handler_called = 0;
    {
        reactor r;
        for (int i = 0; i < 10; ++i) tisock::spawn(r, layered(r, 2, resumed));     // 3 frames each
        for (int i = 0; i < 5; ++i) tisock::spawn(r, waits_on_yield(r, resumed));  // pending post
        r.post([&, t = tracked{}] { ++handler_called; });
        // 15 starts, then the posted handler; the yields posted by the starts stay queued.
        for (int i = 0; i < 16; ++i) CHECK(r.run_one() == 1);
        CHECK(tracked::alive() == 35);
        CHECK(handler_called == 1);
    }
    CHECK(resumed == 0);
    CHECK(tracked::alive() == 0);
    CHECK(tracked::constructed == tracked::destroyed);

    SUBCASE("a task that is never awaited never runs, and its frame is destroyed") {
        tracked::reset();
        bool ran = false;
        {
            reactor r;
            task<void> t = set_flag(ran);
            task<int> u = sleep_then(r, 1ms, 1);  // lazy: the body (and its tracked) never runs
            task<void> v = set_flag(ran);
            v = set_flag(ran);  // move assignment destroys the previous frame
        }
        CHECK_FALSE(ran);
        CHECK(tracked::constructed == 0);
    }
}

TEST_CASE("a foreign coroutine type awaits sleep_for and tisock tasks") {
    watchdog wd{10s};
    reactor r;
    int resumed = 0;
    struct body {
        static foreign_coroutine run(reactor& r, int& resumed) {
            co_await r.sleep_for(10ms);
            ++resumed;
            int v = co_await sleep_then(r, 5ms, 41);
            resumed += v;
            co_await r.sleep_for(0ms);  // ready at once
            ++resumed;
        }
    };
    stopwatch sw;
    foreign_coroutine c = body::run(r, resumed);
    CHECK_FALSE(c.done());
    CHECK(resumed == 0);
    CHECK(r.run_for(5s) == 2);  // two expiries; nothing else is a handler
    CHECK(c.done());
    CHECK(c.handle.promise().error == nullptr);
    CHECK(resumed == 43);
    CHECK(sw.elapsed() >= 15ms);
}
