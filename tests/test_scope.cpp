// Cancellation and structured concurrency (API.md v3), over real reactors and timers: stop
// tokens (which task sees which), sleep_for observing them, request_stop from other threads,
// quiet cancellation, with_stop_token; when_all, when_any, with_timeout, as_result,
// task_group, call_after; the stop scope's hook list; 100,000-wide when_all without stack
// growth; random interleavings of stops and completions.
//
// Every test is bounded (watchdog) and ends with no frame alive (tracked) and no work left
// (run() returns at once).
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include <tisock/reactor.hpp>
#include <tisock/scope.hpp>
#include <tisock/task.hpp>

#include "foundation_support.hpp"

using namespace std::chrono_literals;
using tisock::reactor;
using tisock::task;
using tisock_test::foreign_coroutine;
using tisock_test::stopwatch;
using tisock_test::tracked;
using tisock_test::watchdog;

namespace {

// The code of the std::system_error `f` throws (none: an empty code, and a failed check).
template <class F>
std::error_code system_error_of(F f) {
    try {
        f();
    } catch (const std::system_error& e) {
        return e.code();
    }
    FAIL_CHECK("no std::system_error");
    return {};
}

// True when `r` has no work left: run() returns at once, running nothing.
bool no_work_left(reactor& r) {
    stopwatch t;
    const std::size_t ran = r.run();
    return ran == 0 && t.elapsed() < 1s;
}

task<int> value(int v) { co_return v; }
task<void> nothing() { co_return; }

task<int> sleep_then(reactor& r, std::chrono::nanoseconds d, int v) {
    tracked in_frame;
    co_await r.sleep_for(d);
    co_return v;
}

// Sleeps `d`; counts how it ended.
struct ends {
    int started = 0;
    int completed = 0;
    int cancelled = 0;
    int total() const { return completed + cancelled; }
};
task<void> counted_sleep(reactor& r, std::chrono::nanoseconds d, ends& e) {
    tracked in_frame;
    ++e.started;
    try {
        co_await r.sleep_for(d);
    } catch (const std::system_error& x) {
        if (x.code() == std::errc::operation_canceled) ++e.cancelled;
        throw;
    }
    ++e.completed;
}

task<std::stop_token> token_here() { co_return co_await tisock::get_stop_token(); }
task<bool> can_stop() { co_return (co_await tisock::get_stop_token()).stop_possible(); }

struct test_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

task<int> throws_after(reactor& r, std::chrono::nanoseconds d, const char* what) {
    tracked in_frame;
    if (d.count() > 0) co_await r.sleep_for(d);
    throw test_error(what);
}

}  // namespace

// ---- the stop scope itself ---------------------------------------------------------------

TEST_CASE("stop_scope: hooks are called once, detached before the call; hooks detached or attached during the walk") {
    using tisock::detail::cancel_hook;
    using tisock::detail::stop_scope;
    struct hook : cancel_hook {
        int calls = 0;
        hook* victim = nullptr;      // detached by this one's cancel
        stop_scope* attach_to = nullptr;
        hook* newcomer = nullptr;    // attached by this one's cancel
    };
    stop_scope parent(nullptr);
    stop_scope child(&parent);
    CHECK(child.parent() == &parent);
    hook a, b, c, d, late;
    for (hook* h : {&a, &b, &c, &d}) {
        h->cancel = [](cancel_hook* x) noexcept {
            auto* self = static_cast<hook*>(x);
            CHECK_FALSE(self->attached());
            ++self->calls;
            if (self->victim != nullptr) stop_scope::detach(*self->victim);
            if (self->newcomer != nullptr) self->attach_to->attach(*self->newcomer);
        };
    }
    late.cancel = a.cancel;
    child.attach(a);
    child.attach(b);
    child.attach(c);
    parent.attach(d);
    stop_scope::detach(b);
    stop_scope::detach(b);  // a second detach does nothing
    c.victim = &a;          // c runs first (last attached): a never runs
    d.newcomer = &late;     // attached to the child scope during the parent's walk (d runs
    d.attach_to = &child;   // before the child's link): the child's walk reaches it
    parent.stop();
    CHECK(parent.stopped());
    CHECK(child.stopped());
    CHECK(a.calls == 0);
    CHECK(b.calls == 0);
    CHECK(c.calls == 1);
    CHECK(d.calls == 1);
    CHECK(late.calls == 1);
    CHECK_FALSE(late.attached());
    parent.stop();  // once
    CHECK(c.calls == 1);

    SUBCASE("a scope detaches what is still attached when it goes") {
        hook e;
        e.cancel = a.cancel;
        {
            stop_scope s(nullptr);
            s.attach(e);
            CHECK(e.attached());
        }
        CHECK_FALSE(e.attached());
        stop_scope::detach(e);
    }
    SUBCASE("a scope made under a stopped parent is stopped, and its token too") {
        stop_scope late_child(&parent);
        CHECK(late_child.stopped());
        CHECK(late_child.token().stop_requested());
    }
}

// ---- tokens ------------------------------------------------------------------------------

TEST_CASE("tokens: none by default; the root's is the one given; awaited tasks share it; combinator children get their own") {
    watchdog wd{10s};
    reactor r;
    CHECK_FALSE(tisock::sync_wait(r, token_here()).stop_possible());
    std::stop_source src;
    struct body {
        static task<void> run(reactor& r, std::stop_source& src) {
            std::stop_token mine = co_await tisock::get_stop_token();
            CHECK(mine == src.get_token());
            CHECK(co_await token_here() == mine);  // a task awaited directly shares it
            auto [a, b] = co_await tisock::when_all(token_here(), token_here());
            CHECK(a == b);  // one token for all children of one combinator
            CHECK(a != mine);
            auto [possible] = co_await tisock::when_all(can_stop());
            CHECK(possible);  // (a itself cannot stop any more: its combinator is gone)
            // Shielded: no token at all.
            std::stop_token shielded = co_await tisock::with_stop_token({}, token_here());
            CHECK_FALSE(shielded.stop_possible());
            std::stop_source other;
            CHECK(co_await tisock::with_stop_token(other.get_token(), token_here()) == other.get_token());
            (void)r;
        }
    };
    tisock::sync_wait(r, body::run(r, src), src.get_token());
    CHECK(no_work_left(r));
    SUBCASE("a foreign coroutine type has no token") {
        std::stop_token seen{std::stop_source{}.get_token()};
        struct foreign {
            static foreign_coroutine run(std::stop_token& out) { out = co_await tisock::get_stop_token(); }
        };
        foreign_coroutine c = foreign::run(seen);
        CHECK(c.done());
        CHECK_FALSE(seen.stop_possible());
    }
}

TEST_CASE("a combinator's children's token stops when the parent's does, from the run loop") {
    watchdog wd{10s};
    reactor r;
    std::stop_source src;
    bool child_saw_stop = false;
    struct body {
        static task<void> child(reactor& r, std::stop_source& src, bool& saw) {
            std::stop_token t = co_await tisock::get_stop_token();
            src.request_stop();
            CHECK_FALSE(t.stop_requested());  // not inside request_stop: from the run loop
            try {
                co_await r.sleep_for(20s);
            } catch (const std::system_error&) {
                saw = t.stop_requested();
                throw;
            }
        }
    };
    stopwatch sw;
    auto all = tisock::when_all(body::child(r, src, child_saw_stop), r.sleep_for(20s));
    CHECK_THROWS_AS(tisock::sync_wait(r, std::move(all), src.get_token()), std::system_error);
    CHECK(child_saw_stop);
    CHECK(sw.elapsed() < 5s);
    CHECK(no_work_left(r));
}

// ---- sleep_for ---------------------------------------------------------------------------

TEST_CASE("sleep_for observes the token: stopped while waiting, its timer is removed and it throws operation_canceled") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    std::stop_source src;
    ends e;
    tisock::spawn(r, counted_sleep(r, 20s, e), src.get_token());
    r.call_after(5ms, [&] { src.request_stop(); });
    stopwatch sw;
    r.run();  // returns: the timer is gone, the task ended quietly
    CHECK(sw.elapsed() < 5s);
    CHECK(e.cancelled == 1);
    CHECK(e.completed == 0);
    CHECK(tracked::alive() == 0);

    SUBCASE("sync_wait rethrows the cancellation") {
        std::stop_source s2;
        r.call_after(5ms, [&] { s2.request_stop(); });
        CHECK(system_error_of([&] { tisock::sync_wait(r, sleep_then(r, 20s, 1), s2.get_token()); }) ==
              std::errc::operation_canceled);
        CHECK(no_work_left(r));
    }
}

TEST_CASE("sleep_for under a token stopped before it starts fails from the reactor without waiting, for any duration") {
    watchdog wd{10s};
    reactor r;
    std::stop_source src;
    src.request_stop();
    for (auto d : {std::chrono::nanoseconds(20s), std::chrono::nanoseconds(0), std::chrono::nanoseconds(-1)}) {
        struct body {
            static task<int> run(reactor& r, std::chrono::nanoseconds d) {
                try {
                    co_await r.sleep_for(20s);  // the stop is processed while this waits
                } catch (const std::system_error&) {
                }
                co_await r.sleep_for(d);  // already stopped: does not start
                co_return 1;
            }
        };
        stopwatch sw;
        CHECK_THROWS_AS(tisock::sync_wait(r, body::run(r, d), src.get_token()), std::system_error);
        CHECK(sw.elapsed() < 5s);
    }
    CHECK(no_work_left(r));
}

TEST_CASE("sleep_for without a token, or with one never stopped, sleeps as before") {
    watchdog wd{10s};
    reactor r;
    std::stop_source src;
    stopwatch sw;
    CHECK(tisock::sync_wait(r, sleep_then(r, 20ms, 3), src.get_token()) == 3);
    tisock::sync_wait(r, r.sleep_for(0ms), src.get_token());
    CHECK(sw.elapsed() >= 20ms);
    CHECK(no_work_left(r));
}

TEST_CASE("request_stop from another thread: the stop reaches the reactor thread, 1,000 times racing completions") {
    watchdog wd{60s};
    tracked::reset();
    std::mt19937 rng(7);
    int completed = 0;
    int cancelled = 0;
    for (int i = 0; i < 1000; ++i) {
        reactor r;
        std::stop_source src;
        ends e;
        const auto sleep = std::chrono::microseconds(rng() % 300);
        const auto delay = std::chrono::microseconds(rng() % 300);
        tisock::spawn(r, counted_sleep(r, sleep, e), src.get_token());
        std::thread stopper([&] {
            std::this_thread::sleep_for(delay);
            src.request_stop();
        });
        r.run();
        stopper.join();
        REQUIRE(e.total() == 1);  // exactly once, whichever won
        completed += e.completed;
        cancelled += e.cancelled;
        r.run();  // the relay, if it was posted after the task ended
        REQUIRE(no_work_left(r));
    }
    MESSAGE("completed " << completed << ", cancelled " << cancelled);
    CHECK(tracked::alive() == 0);
}

// One reactor, one stopping thread: each round spawns a task whose short sleep races a
// request_stop made on the other thread at a random moment (before the task starts, while it
// sleeps, after it ended). Exactly one ending per round, and the stop never outlives its
// round's state.
TEST_CASE("request_stop from another thread, 100,000 rounds racing completions on one reactor") {
    watchdog wd{240s};
    tracked::reset();
    reactor r;
    constexpr int rounds = 100'000;
    std::atomic<std::stop_source*> target{nullptr};
    std::atomic<int> finished_with{0};  // rounds whose source the stopper is done with
    std::atomic<bool> quit{false};
    std::thread stopper([&] {
        std::mt19937 rng(11);
        int round = 0;
        while (!quit.load(std::memory_order_acquire)) {
            std::stop_source* src = target.exchange(nullptr, std::memory_order_acq_rel);
            if (src == nullptr) {
                std::this_thread::yield();
                continue;
            }
            for (auto spin = static_cast<unsigned>(rng() % 2000); spin > 0; --spin) std::atomic_signal_fence(std::memory_order_seq_cst);
            src->request_stop();
            finished_with.store(++round, std::memory_order_release);
        }
    });
    std::mt19937 rng(5);
    int cancelled = 0;
    for (int i = 0; i < rounds; ++i) {
        std::stop_source src;
        ends e;
        tisock::spawn(r, counted_sleep(r, std::chrono::microseconds(rng() % 20), e), src.get_token());
        target.store(&src, std::memory_order_release);
        r.run();
        while (finished_with.load(std::memory_order_acquire) != i + 1) std::this_thread::yield();
        r.run();  // a stop relayed after the task ended
        if (e.total() != 1) REQUIRE(e.total() == 1);
        cancelled += e.cancelled;
    }
    quit.store(true, std::memory_order_release);
    stopper.join();
    MESSAGE("cancelled in " << cancelled << " of " << rounds << " rounds");
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));
}

TEST_CASE("with_stop_token: {} shields cleanup from the task's stop; another token replaces it") {
    watchdog wd{10s};
    reactor r;
    std::stop_source src;
    int cleaned = 0;
    struct body {
        static task<void> run(reactor& r, int& cleaned) {
            try {
                co_await r.sleep_for(20s);
            } catch (const std::system_error&) {
            }
            co_await tisock::with_stop_token({}, r.sleep_for(5ms));  // cleanup after the stop
            ++cleaned;
            std::stop_source own;
            own.request_stop();
            CHECK_THROWS_AS(co_await tisock::with_stop_token(own.get_token(), r.sleep_for(20s)), std::system_error);
            CHECK_THROWS_AS(co_await r.sleep_for(1ms), std::system_error);  // the task's own token again
            ++cleaned;
        }
    };
    r.call_after(5ms, [&] { src.request_stop(); });
    tisock::spawn(r, body::run(r, cleaned), src.get_token());
    stopwatch sw;
    r.run();
    CHECK(cleaned == 2);
    CHECK(sw.elapsed() < 5s);
    CHECK(no_work_left(r));
}

// ---- when_all ----------------------------------------------------------------------------

TEST_CASE("when_all: results in a tuple (void as monostate, T& as reference_wrapper), children started in argument order") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    static int global = 3;
    std::vector<int> started;
    struct body {
        static task<int&> ref() { co_return global; }
        static task<std::string> text(std::vector<int>& log, int id) {
            log.push_back(id);
            co_return "x";
        }
        static task<int> slow(reactor& r, std::vector<int>& log, int id) {
            log.push_back(id);
            co_await r.sleep_for(5ms);
            co_return id;
        }
    };
    auto all = tisock::when_all(body::slow(r, started, 0), body::text(started, 1), nothing(), r.sleep_for(1ms),
                                body::ref(), body::slow(r, started, 5));
    static_assert(std::is_same_v<decltype(tisock::sync_wait(r, std::move(all))),
                                 std::tuple<int, std::string, std::monostate, std::monostate,
                                            std::reference_wrapper<int>, int>>);
    CHECK(started.empty());  // stored: nothing starts before it is awaited
    auto [a, b, c, d, e, f] = tisock::sync_wait(r, std::move(all));
    CHECK(started == std::vector<int>{0, 1, 5});
    CHECK(a == 0);
    CHECK(b == "x");
    CHECK(&e.get() == &global);
    CHECK(f == 5);
    (void)c, (void)d;
    CHECK(tisock::sync_wait(r, tisock::when_all()) == std::tuple<>{});
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));
}

TEST_CASE("when_all: lvalues are referenced, rvalues moved in; the result may be stored and awaited later") {
    watchdog wd{10s};
    reactor r;
    task<int> lvalue = value(2);
    auto sleep = r.sleep_for(1ms);
    auto later = tisock::when_all(lvalue, sleep, value(3));
    auto [x, unused, y] = tisock::sync_wait(r, later);  // awaited as an lvalue
    CHECK(x == 2);
    CHECK(y == 3);
    (void)unused;
    CHECK(no_work_left(r));
}

TEST_CASE("when_all: the first exception (in time) stops the others, unstarted children never start, all are awaited") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    ends e;
    bool shielded_done = false;
    bool never = false;
    struct body {
        static task<void> shielded(reactor& r, bool& done) {
            try {
                co_await r.sleep_for(20s);
            } catch (const std::system_error&) {
            }
            co_await tisock::with_stop_token({}, r.sleep_for(20ms));  // keeps running after the stop
            done = true;
        }
        static task<void> after_stop_throws(reactor& r) {
            try {
                co_await r.sleep_for(20s);
            } catch (const std::system_error&) {
                throw test_error("second");  // a child that throws after the stop
            }
        }
        static task<void> flag(bool& f) {
            f = true;
            co_return;
        }
        static task<void> check_all_done(reactor& r, ends& e, bool& shielded_done, bool& never) {
            try {
                co_await tisock::when_all(counted_sleep(r, 20s, e), shielded(r, shielded_done),
                                          after_stop_throws(r), throws_after(r, 5ms, "first"),
                                          throws_after(r, 0ms, "at start"), flag(never));
                FAIL("no exception");
            } catch (const test_error& x) {
                CHECK(std::string(x.what()) == "at start");  // first in time
            }
            CHECK(shielded_done);  // awaited to its end
            CHECK(e.cancelled == 1);
        }
    };
    stopwatch sw;
    tisock::sync_wait(r, body::check_all_done(r, e, shielded_done, never));
    CHECK(sw.elapsed() < 5s);
    CHECK_FALSE(never);  // after the child that threw at start: not started
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));

    SUBCASE("the first exception after suspensions") {
        struct more {
            static task<void> run(reactor& r) {
                try {
                    co_await tisock::when_all(throws_after(r, 10ms, "late"), throws_after(r, 2ms, "early"),
                                              sleep_then(r, 20s, 0));
                } catch (const test_error& x) {
                    CHECK(std::string(x.what()) == "early");
                }
            }
        };
        tisock::sync_wait(r, more::run(r));
        CHECK(no_work_left(r));
    }
}

TEST_CASE("when_all of vectors: values in order; task<void>; empty vectors complete at once") {
    watchdog wd{10s};
    reactor r;
    std::vector<task<int>> ts;
    for (int i = 0; i < 10; ++i) ts.push_back(i % 2 ? value(i) : sleep_then(r, std::chrono::milliseconds(10 - i), i));
    std::vector<int> got = tisock::sync_wait(r, tisock::when_all(std::move(ts)));
    CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    int count = 0;
    struct body {
        static task<void> add(int& c) {
            ++c;
            co_return;
        }
    };
    std::vector<task<void>> vs;
    for (int i = 0; i < 5; ++i) vs.push_back(body::add(count));
    tisock::sync_wait(r, tisock::when_all(std::move(vs)));
    CHECK(count == 5);
    CHECK(tisock::sync_wait(r, tisock::when_all(std::vector<task<int>>{})).empty());
    tisock::sync_wait(r, tisock::when_all(std::vector<task<void>>{}));
    std::vector<task<int>> failing;
    failing.push_back(sleep_then(r, 20s, 1));
    failing.push_back(throws_after(r, 1ms, "v"));
    CHECK_THROWS_AS(tisock::sync_wait(r, tisock::when_all(std::move(failing))), test_error);
    CHECK(no_work_left(r));
}

namespace {
std::uintptr_t stack_low = UINTPTR_MAX;
std::uintptr_t stack_high = 0;
void sample_stack() {
    char probe = 0;
    auto a = reinterpret_cast<std::uintptr_t>(&probe);
    stack_low = std::min(stack_low, a);
    stack_high = std::max(stack_high, a);
}
task<int> ready_sampled(int v) {
    sample_stack();
    co_return v;
}
task<void> ready_void_sampled() {
    sample_stack();
    co_return;
}
}  // namespace

TEST_CASE("when_all of 100,000 tasks that complete synchronously does not grow the stack") {
    watchdog wd{120s};
    reactor r;
    constexpr int n = 100'000;
    std::vector<task<int>> ts;
    ts.reserve(n);
    for (int i = 0; i < n; ++i) ts.push_back(ready_sampled(i));
    stack_low = UINTPTR_MAX;
    stack_high = 0;
    std::vector<int> got = tisock::sync_wait(r, tisock::when_all(std::move(ts)));
    REQUIRE(got.size() == std::size_t(n));
    CHECK(got[n - 1] == n - 1);
    MESSAGE("stack spread over 100,000 children: " << stack_high - stack_low << " bytes");
    CHECK(stack_high - stack_low < 64 * 1024);

    std::vector<task<void>> vs;
    vs.reserve(n);
    for (int i = 0; i < n; ++i) vs.push_back(ready_void_sampled());
    stack_low = UINTPTR_MAX;
    stack_high = 0;
    tisock::sync_wait(r, tisock::when_all(std::move(vs)));
    CHECK(stack_high - stack_low < 64 * 1024);
    CHECK(no_work_left(r));
}

// ---- when_any ----------------------------------------------------------------------------

TEST_CASE("when_any: the first to finish wins; the others are stopped and awaited; the winner's value") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    ends e;
    stopwatch sw;
    auto first = tisock::sync_wait(r, tisock::when_any(counted_sleep(r, 20s, e), sleep_then(r, 5ms, 7)));
    static_assert(std::is_same_v<decltype(first), std::variant<std::monostate, int>>);
    CHECK(first.index() == 1);
    CHECK(std::get<1>(first) == 7);
    CHECK(e.cancelled == 1);  // awaited to its end
    CHECK(sw.elapsed() < 5s);
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));
}

TEST_CASE("when_any: ties go to the lowest index; children after one that finished while being started never start") {
    watchdog wd{10s};
    reactor r;
    bool third = false;
    struct body {
        static task<int> flag(bool& f) {
            f = true;
            co_return 3;
        }
    };
    auto w = tisock::sync_wait(r, tisock::when_any(sleep_then(r, 20s, 0), value(1), value(2), body::flag(third)));
    CHECK(w.index() == 1);
    CHECK(std::get<1>(w) == 1);
    CHECK_FALSE(third);
    CHECK(no_work_left(r));
}

TEST_CASE("when_any: the winner's exception is rethrown after the losers end; a loser's exception is discarded") {
    watchdog wd{10s};
    reactor r;
    struct body {
        static task<int> loser_throws(reactor& r) {
            try {
                co_await r.sleep_for(20s);
            } catch (const std::system_error&) {
            }
            throw test_error("loser");
        }
    };
    CHECK_THROWS_WITH_AS(tisock::sync_wait(r, tisock::when_any(throws_after(r, 2ms, "winner"), sleep_then(r, 20s, 0))),
                         "winner", test_error);
    auto w = tisock::sync_wait(r, tisock::when_any(body::loser_throws(r), sleep_then(r, 2ms, 5)));
    CHECK(w.index() == 1);
    CHECK(no_work_left(r));
}

TEST_CASE("a stop of the parent reaches every child of nested combinators; the spawned root ends quietly") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    std::stop_source src;
    ends e;
    struct body {
        static task<void> run(reactor& r, ends& e) {
            co_await tisock::when_all(counted_sleep(r, 20s, e),
                                      tisock::when_any(counted_sleep(r, 20s, e), counted_sleep(r, 30s, e)),
                                      tisock::with_timeout(20s, counted_sleep(r, 20s, e)));
        }
    };
    tisock::spawn(r, body::run(r, e), src.get_token());
    r.call_after(5ms, [&] { src.request_stop(); });
    stopwatch sw;
    r.run();
    CHECK(sw.elapsed() < 5s);
    CHECK(e.cancelled == 4);
    CHECK(tracked::alive() == 0);
}

TEST_CASE("a stop requested while a child's completion is on its way: the completion stands, each child ends once") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    std::stop_source src;
    ends e;
    struct body {
        static task<int> winner(reactor& r, std::stop_source& src) {
            co_await r.sleep_for(2ms);
            src.request_stop();  // relayed: processed after this child has finished
            co_return 5;
        }
        static task<void> run(reactor& r, std::stop_source& src, ends& e, int& got) {
            auto w = co_await tisock::when_any(winner(r, src), counted_sleep(r, 20s, e));
            got = std::get<0>(w);
            CHECK(e.cancelled == 1);  // by when_any; the parent's stop found nothing left to cancel
            CHECK((co_await tisock::get_stop_token()).stop_requested());
            co_await r.sleep_for(20s);  // the stop has been processed: cancelled
            got = -1;
        }
    };
    int got = 0;
    tisock::spawn(r, body::run(r, src, e, got), src.get_token());
    stopwatch sw;
    r.run();
    CHECK(sw.elapsed() < 5s);
    CHECK(got == 5);
    CHECK(e.total() == 1);
    CHECK(tracked::alive() == 0);
}

// ---- with_timeout ------------------------------------------------------------------------

TEST_CASE("with_timeout: the value if in time; at d, stop and await to the end, cancellation becomes timed_out") {
    watchdog wd{10s};
    reactor r;
    CHECK(tisock::sync_wait(r, tisock::with_timeout(5s, sleep_then(r, 1ms, 4))) == 4);
    stopwatch sw;
    CHECK(system_error_of([&] { tisock::sync_wait(r, tisock::with_timeout(10ms, r.sleep_for(20s))); }) ==
          std::errc::timed_out);
    CHECK(sw.elapsed() >= 10ms);
    CHECK(sw.elapsed() < 5s);

    SUBCASE("an operation that ignores the stop gives its own outcome") {
        struct body {
            static task<int> stubborn(reactor& r) {
                co_await tisock::with_stop_token({}, r.sleep_for(30ms));
                co_return 9;
            }
        };
        CHECK(tisock::sync_wait(r, tisock::with_timeout(1ms, body::stubborn(r))) == 9);
        CHECK_THROWS_WITH_AS(tisock::sync_wait(r, tisock::with_timeout(50ms, throws_after(r, 1ms, "own"))), "own",
                             test_error);
    }
    SUBCASE("d <= 0: stop before it starts") {
        for (auto d : {0ms, -5ms}) {
            CHECK_THROWS_AS(tisock::sync_wait(r, tisock::with_timeout(d, r.sleep_for(20s))), std::system_error);
            CHECK(tisock::sync_wait(r, tisock::with_timeout(d, value(1))) == 1);
        }
    }
    SUBCASE("a cancellation from the parent stays operation_canceled") {
        std::stop_source src;
        r.call_after(2ms, [&] { src.request_stop(); });
        CHECK(system_error_of([&] {
                  tisock::sync_wait(r, tisock::with_timeout(10s, r.sleep_for(20s)), src.get_token());
              }) == std::errc::operation_canceled);
    }
    CHECK(no_work_left(r));
}

// ---- as_result ---------------------------------------------------------------------------

TEST_CASE("as_result: system_error becomes ec (value value-initialized); other exceptions propagate") {
    watchdog wd{10s};
    reactor r;
    auto [ec, v] = tisock::sync_wait(r, tisock::as_result(value(5)));
    CHECK_FALSE(ec);
    CHECK(v == 5);
    struct body {
        static task<int> fails() {
            throw std::system_error(std::make_error_code(std::errc::connection_reset));
            co_return 1;
        }
        static task<void> misused() {
            throw tisock::state_error("misuse");
            co_return;
        }
    };
    tisock::result<int> bad = tisock::sync_wait(r, tisock::as_result(body::fails()));
    CHECK(bad.ec == std::errc::connection_reset);
    CHECK(bad.value == 0);
    tisock::result<void> t = tisock::sync_wait(r, tisock::as_result(tisock::with_timeout(1ms, r.sleep_for(20s))));
    CHECK(t.ec == std::errc::timed_out);
    CHECK_THROWS_AS(tisock::sync_wait(r, tisock::as_result(body::misused())), tisock::state_error);
    CHECK(no_work_left(r));
}

// ---- task_group --------------------------------------------------------------------------

TEST_CASE("task_group: children start from the run loop; join waits until size() is 0") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    int done = 0;
    struct body {
        static task<void> child(reactor& r, std::chrono::milliseconds d, int& done) {
            tracked in_frame;
            co_await r.sleep_for(d);
            ++done;
        }
        static task<void> run(reactor& r, int& done) {
            tisock::task_group g(r);
            co_await g.join();  // no children: at once
            for (int i = 0; i < 5; ++i) g.spawn(child(r, std::chrono::milliseconds(i * 2), done));
            CHECK(g.size() == 5);
            CHECK(done == 0);  // not started inside spawn()
            CHECK(tracked::constructed == 0);
            co_await g.join();
            CHECK(g.size() == 0);
            CHECK(done == 5);
        }
    };
    tisock::sync_wait(r, body::run(r, done));
    CHECK(done == 5);
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));
}

TEST_CASE("task_group: the first exception stops the others and is rethrown by join, once; later ones are discarded") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    ends e;
    struct body {
        static task<void> fails(reactor& r, std::chrono::milliseconds d, const char* what) {
            (void)co_await throws_after(r, d, what);
        }
        static task<void> loud(reactor& r) {
            try {
                co_await r.sleep_for(20s);
            } catch (const std::system_error&) {
            }
            throw test_error("after the stop");
        }
        static task<void> run(reactor& r, ends& e) {
            tisock::task_group g(r);
            g.spawn(counted_sleep(r, 20s, e));
            g.spawn(fails(r, 2ms, "first"));
            g.spawn(fails(r, 10ms, "second"));
            g.spawn(loud(r));
            g.spawn(counted_sleep(r, 20s, e));
            CHECK_THROWS_WITH_AS(co_await g.join(), "first", test_error);
            CHECK(g.stop_requested());
            CHECK(e.cancelled == 2);  // quiet: not recorded
            co_await g.join();        // cleared
            g.spawn(counted_sleep(r, 20s, e));  // stopped group: later children stop too
            co_await g.join();
            CHECK(e.cancelled == 3);
        }
    };
    stopwatch sw;
    tisock::sync_wait(r, body::run(r, e));
    CHECK(sw.elapsed() < 5s);
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));
}

TEST_CASE("task_group: a cancellation without a stop is an error like any other") {
    watchdog wd{10s};
    reactor r;
    struct body {
        static task<void> cancelled() {
            throw std::system_error(std::make_error_code(std::errc::operation_canceled));
            co_return;
        }
        static task<void> run(reactor& r) {
            tisock::task_group g(r);
            g.spawn(cancelled());
            CHECK_THROWS_AS(co_await g.join(), std::system_error);
        }
    };
    tisock::sync_wait(r, body::run(r));
    CHECK(no_work_left(r));
}

TEST_CASE("task_group: stopped by request_stop from another thread, by the parent token, by the stop of the task awaiting join") {
    watchdog wd{20s};
    tracked::reset();
    reactor r;
    ends e;
    struct body {
        static task<void> join_all(tisock::task_group& g) { co_await g.join(); }
    };
    SUBCASE("request_stop from another thread") {
        tisock::task_group g(r);
        for (int i = 0; i < 3; ++i) g.spawn(counted_sleep(r, 20s, e));
        std::thread t([&] {
            std::this_thread::sleep_for(5ms);
            g.request_stop();
        });
        tisock::sync_wait(r, body::join_all(g));
        t.join();
        CHECK(g.stop_requested());
        CHECK(e.cancelled == 3);
    }
    SUBCASE("the parent token") {
        std::stop_source parent;
        tisock::task_group g(r, parent.get_token());
        for (int i = 0; i < 3; ++i) g.spawn(counted_sleep(r, 20s, e));
        r.call_after(5ms, [&] { parent.request_stop(); });
        tisock::sync_wait(r, body::join_all(g));
        CHECK(g.stop_requested());
        CHECK(e.cancelled == 3);
    }
    SUBCASE("the stop of the joiner's token: join still waits for the children to end") {
        std::stop_source joiner;
        tisock::task_group g(r);
        for (int i = 0; i < 3; ++i) g.spawn(counted_sleep(r, 20s, e));
        r.call_after(5ms, [&] { joiner.request_stop(); });
        tisock::sync_wait(r, body::join_all(g), joiner.get_token());
        CHECK(g.size() == 0);
        CHECK(e.cancelled == 3);
    }
    CHECK(tracked::alive() == 0);
    CHECK(no_work_left(r));
}

TEST_CASE("task_group: a second concurrent join, or a join from its own child, throws state_error") {
    watchdog wd{10s};
    reactor r;
    int refused = 0;
    struct body {
        static task<void> joins_own_group(tisock::task_group& g, int& refused) {
            try {
                co_await g.join();
            } catch (const tisock::state_error&) {
                ++refused;
            }
        }
        static task<void> second_join(reactor& r, tisock::task_group& g, int& refused) {
            co_await r.sleep_for(1ms);
            try {
                co_await g.join();
            } catch (const tisock::state_error&) {
                ++refused;
            }
        }
        static task<void> run(reactor& r, int& refused) {
            tisock::task_group g(r);
            g.spawn(joins_own_group(g, refused));
            g.spawn(sleep_void(r));
            co_await tisock::when_all(g.join(), second_join(r, g, refused));
        }
        static task<void> sleep_void(reactor& r) { co_await r.sleep_for(10ms); }
    };
    tisock::sync_wait(r, body::run(r, refused));
    CHECK(refused == 2);
    CHECK(no_work_left(r));
}

TEST_CASE("task_group destructor destroys unfinished children without resuming them; so does the reactor's") {
    watchdog wd{10s};
    tracked::reset();
    ends e;
    {
        reactor r;
        {
            tisock::task_group g(r);
            g.spawn(counted_sleep(r, 20s, e));  // never started
            g.spawn(counted_sleep(r, 20s, e));
            r.run_one();
            r.run_one();
            CHECK(tracked::alive() == 2);
            g.spawn(counted_sleep(r, 20s, e));  // not started either
            CHECK(g.size() == 3);
        }
        CHECK(tracked::alive() == 0);
        CHECK(no_work_left(r));
    }
    {
        auto r = std::make_unique<reactor>();
        tisock::task_group g(*r);
        g.spawn(counted_sleep(*r, 20s, e));
        g.spawn(counted_sleep(*r, 20s, e));
        r->poll();
        CHECK(tracked::alive() == 2);
        r.reset();
        CHECK(g.size() == 0);
        CHECK(tracked::alive() == 0);
    }
    CHECK(e.total() == 0);
}

TEST_CASE("destroying a reactor with combinators and stop scopes pending destroys every frame") {
    watchdog wd{10s};
    tracked::reset();
    ends e;
    {
        reactor r;
        std::stop_source src;
        struct body {
            static task<void> run(reactor& r, ends& e) {
                tracked in_frame;
                co_await tisock::when_all(counted_sleep(r, 20s, e),
                                          tisock::when_any(counted_sleep(r, 20s, e), counted_sleep(r, 30s, e)),
                                          tisock::with_timeout(20s, counted_sleep(r, 20s, e)));
            }
        };
        tisock::spawn(r, body::run(r, e), src.get_token());
        r.poll();
        src.request_stop();  // relayed, never processed
        CHECK(tracked::alive() >= 3);
    }
    CHECK(tracked::alive() == 0);
    CHECK(e.started == 4);
    CHECK(e.total() == 0);
}

// ---- call_after --------------------------------------------------------------------------

TEST_CASE("call_after: runs once after d, never inline; work while pending; cancel and its result") {
    watchdog wd{10s};
    tracked::reset();
    reactor r;
    int ran = 0;
    stopwatch sw;
    tisock::timer_handle h = r.call_after(10ms, [&ran, t = tracked{}] { ++ran; });
    auto now = r.call_after(0ms, [&] { ++ran; });
    auto negative = r.call_after(-5ms, [&] { ++ran; });
    CHECK(ran == 0);  // never inline
    tisock::timer_handle copy = h;
    CHECK(r.run() == 3);  // the timer is work: run() waits for it
    CHECK(ran == 3);
    CHECK(sw.elapsed() >= 10ms);
    CHECK_FALSE(h.cancel());  // after it ran
    CHECK_FALSE(copy.cancel());
    CHECK(tracked::alive() == 1);  // h still holds the callable
    h = {};
    copy = {};
    CHECK(tracked::alive() == 0);
    CHECK_FALSE(tisock::timer_handle{}.cancel());

    auto pending = r.call_after(20s, [&] { ++ran; });
    auto same = pending;
    CHECK(same.cancel());
    CHECK_FALSE(pending.cancel());
    CHECK(no_work_left(r));
    (void)now, (void)negative;

    SUBCASE("dropping the handle does not cancel") {
        (void)r.call_after(1ms, [&] { ++ran; });
        r.run();
        CHECK(ran == 4);
    }
    SUBCASE("an exception from f leaves run(); the reactor stays usable") {
        (void)r.call_after(1ms, [] { throw test_error("f"); });
        (void)r.call_after(2ms, [&] { ++ran; });
        CHECK_THROWS_AS(r.run(), test_error);
        r.run();
        CHECK(ran == 4);
    }
    SUBCASE("cancel returns false once the reactor is gone") {
        tisock::timer_handle orphan;
        {
            reactor short_lived;
            orphan = short_lived.call_after(20s, [t = tracked{}] {});
        }
        CHECK_FALSE(orphan.cancel());
        orphan = {};
        CHECK(tracked::alive() == 0);
    }
}

// ---- random interleavings ----------------------------------------------------------------

TEST_CASE("10,000 random interleavings of stops and completions: every child ends exactly once, nothing is left") {
    watchdog wd{120s};
    tracked::reset();
    reactor r;
    std::mt19937 rng(13);
    auto us = [&](int max) { return std::chrono::microseconds(rng() % max); };
    int winners[3] = {0, 0, 0};
    for (int i = 0; i < 10'000; ++i) {
        std::stop_source src;
        ends e;
        tisock::task_group g(r, src.get_token());
        struct body {
            static task<void> round(reactor& r, ends& e, std::chrono::microseconds a, std::chrono::microseconds b,
                                    std::chrono::microseconds c, int* winners) {
                auto w = co_await tisock::as_result(tisock::when_any(counted_sleep(r, a, e), counted_sleep(r, b, e),
                                                                     tisock::with_timeout(1ms, counted_sleep(r, c, e))));
                if (!w.ec) ++winners[w.value.index()];
            }
        };
        g.spawn(body::round(r, e, us(200), us(200), us(200), winners));
        g.spawn(counted_sleep(r, us(200), e));
        const int mode = int(rng() % 3);
        tisock::timer_handle stop;
        if (mode == 0) stop = r.call_after(std::chrono::milliseconds(0), [&] { src.request_stop(); });
        if (mode == 1) stop = r.call_after(std::chrono::milliseconds(0), [&] { g.request_stop(); });
        struct joiner {
            static task<void> run(tisock::task_group& g) { co_await g.join(); }
        };
        tisock::sync_wait(r, joiner::run(g));
        (void)stop.cancel();  // ended before the stop came
        REQUIRE(e.started >= 2);
        REQUIRE(e.total() == e.started);
        REQUIRE(tracked::alive() == 0);
        r.run();  // a stop posted after everything ended
    }
    MESSAGE("winners: " << winners[0] << ", " << winners[1] << ", " << winners[2]);
    CHECK(no_work_left(r));
}
