// Heap allocations of the coroutine machinery, counted with a replacement global operator
// new. In its own executable: the replacement is program-wide and would otherwise count
// (and slow down) every other test.
//
// Target (STYLE.md, "the awaiter is the operation"): awaiting a task allocates its frame
// and nothing else; a sleep_for allocates nothing once the timer heap has grown.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <vector>

#include <tisock/reactor.hpp>
#include <tisock/task.hpp>

#include "foundation_support.hpp"

// ---- counted allocation ------------------------------------------------------------------
// The benchmarks' counting replacement of every form of operator new/delete (one copy in
// the tree; it may be included by one translation unit of a binary only).
#include "../benchmarks/alloc_counter.hpp"

using tisock_bench::allocations;

using namespace std::chrono_literals;
using tisock::reactor;
using tisock::task;
using tisock_test::watchdog;

namespace {

constexpr int rounds = 10'000;

task<int> ready_value(int v) { co_return v; }

task<int> sleeps_then(reactor& r, int v) {
    co_await r.sleep_for(1us);
    co_return v;
}

// Returns the allocations made by `rounds` awaits of a ready task, measured inside the
// awaiting coroutine (so sync_wait's own frames are not counted).
task<std::size_t> measure_ready_awaits() {
    (void)co_await ready_value(0);  // warm-up
    long long sum = 0;
    std::size_t before = allocations();
    for (int i = 0; i < rounds; ++i) sum += co_await ready_value(i);
    std::size_t after = allocations();
    if (sum != static_cast<long long>(rounds) * (rounds - 1) / 2) throw std::logic_error("wrong sum");
    co_return after - before;
}

task<std::size_t> measure_sleeps(reactor& r) {
    for (int i = 0; i < 100; ++i) co_await r.sleep_for(1us);  // grows the timer heap
    std::size_t before = allocations();
    for (int i = 0; i < rounds / 10; ++i) co_await r.sleep_for(1us);
    co_return allocations() - before;
}

task<std::size_t> measure_suspending_awaits(reactor& r) {
    (void)co_await sleeps_then(r, 0);
    std::size_t before = allocations();
    for (int i = 0; i < rounds / 10; ++i) (void)co_await sleeps_then(r, i);
    co_return allocations() - before;
}

}  // namespace

TEST_CASE("heap allocations per co_await of a ready task: the frame, nothing else") {
    watchdog wd{60s};
    reactor r;
    std::size_t n = tisock::sync_wait(r, measure_ready_awaits());
    double per_await = double(n) / rounds;
    MESSAGE("allocations per co_await of a ready task (frame included): " << per_await << " (" << n << " over "
                                                                            << rounds << " awaits)");
    // One allocation is the task's own frame (none if the compiler elides it, HALO).
    CHECK(n <= std::size_t(rounds));
}

TEST_CASE("heap allocations per co_await of a task that suspends on a timer: the frame, nothing else") {
    watchdog wd{60s};
    reactor r;
    std::size_t n = tisock::sync_wait(r, measure_suspending_awaits(r));
    MESSAGE("allocations per co_await of a suspending task (frame included): " << double(n) / (rounds / 10));
    CHECK(n <= std::size_t(rounds / 10));
}

TEST_CASE("sleep_for allocates nothing in steady state") {
    watchdog wd{60s};
    reactor r;
    std::size_t n = tisock::sync_wait(r, measure_sleeps(r));
    MESSAGE("allocations per sleep_for: " << double(n) / (rounds / 10));
    CHECK(n == 0);
}

TEST_CASE("post and spawn allocation counts (reported)") {
    watchdog wd{60s};
    reactor r;
    int handler_called = 0;
    std::size_t before = allocations();
    for (int i = 0; i < rounds; ++i) r.post([&handler_called] { ++handler_called; });
    std::size_t posts = allocations() - before;
    CHECK(r.run() == std::size_t(rounds));
    CHECK(handler_called == rounds);
    MESSAGE("allocations per post: " << double(posts) / rounds);
    CHECK(posts <= std::size_t(rounds));  // one node per handler (it type-erases the callable)

    struct body {
        static task<void> run(int& c) {
            ++c;
            co_return;
        }
    };
    before = allocations();
    for (int i = 0; i < 1000; ++i) tisock::spawn(r, body::run(handler_called));
    std::size_t spawns = allocations() - before;
    CHECK(r.run() == 1000);
    MESSAGE("allocations per spawn: " << double(spawns) / 1000 << " (task frame + root frame)");
    CHECK(spawns <= 2000);
}

TEST_CASE("the reactor's descriptor pool grows geometrically: one allocation per new descriptor, not two") {
    // Growing the pool by one element per new peak moved the whole pool every time: 91 % of
    // a server's instructions while 10,000 connections were opened (issue 11, item 8).
    watchdog wd{60s};
    reactor r;
    int seed = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    REQUIRE(seed >= 0);
    constexpr int n = 900;  // below the default RLIMIT_NOFILE of 1024
    std::vector<int> fds;
    fds.reserve(n);
    for (int i = 0; i < n; ++i) fds.push_back(::fcntl(seed, F_DUPFD_CLOEXEC, 0));
    std::vector<tisock::detail::descriptor_state*> states;
    states.reserve(n);
    for (int fd : fds) REQUIRE(fd >= 0);
    std::size_t before = allocations();
    int error = 0;
    for (int fd : fds) states.push_back(tisock::detail::reactor_access::core(r).open_descriptor(fd, error));  // no doctest macro: they allocate
    std::size_t grown = allocations() - before;
    for (auto* d : states) REQUIRE(d != nullptr);
    MESSAGE("allocations for " << n << " new descriptors: " << grown);
#ifndef TISOCK_BACKEND_KQUEUE_EMULATION
    CHECK(grown <= std::size_t(n) + 16);  // a state each, plus log2(n) growths of the pool
#else
    // The test-only kqueue emulation allocates one node per registration of its own.
    CHECK(grown <= 2 * std::size_t(n) + 16);
#endif
    for (auto* d : states) tisock::detail::reactor_access::core(r).close_descriptor(d);
    (void)::close(seed);
}
