// tisock-micro: what the library's basic operations cost, in ns and allocations per
// operation (harness: micro.hpp, one "micro name=... ns_per_op=... allocs_per_op=..." line
// each). Run a release build, pinned: taskset -c 0 build/benchmarks/tisock-micro
//
//  - co_await of a task that completes at once (and, for reference, the driver's own
//    resume/suspend that every measurement below the first one also pays);
//  - an async_read that suspends and is resumed by the reactor: one side of a loopback
//    connection sends 1 byte, the other co_awaits it (send + epoll_wait + recv + resume);
//  - timers: insert + cancel with an empty heap and with 100,000 timers pending, and a
//    timer that expires through run_one();
//  - post: from a handler on the reactor thread, and a round trip from another thread.
#include "micro.hpp"

#include <sys/socket.h>

#include <tisock/reactor.hpp>
#include <tisock/task.hpp>
#include <tisock/tcp.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

namespace {

using namespace std::chrono_literals;

// A coroutine driven by hand: each resume() runs it to its next `co_await pause{}`. It
// lets one measured operation be "one trip round a loop inside a coroutine" without a
// reactor in between. tisock's awaitables work in any coroutine type.
struct driver {
    struct promise_type {
        driver get_return_object() { return driver{std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_always final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };
    explicit driver(std::coroutine_handle<promise_type> h) : handle(h) {}
    driver(driver&& o) noexcept : handle(std::exchange(o.handle, {})) {}
    driver(const driver&) = delete;
    driver& operator=(const driver&) = delete;
    ~driver() {
        if (handle) handle.destroy();
    }
    void resume() const { handle.resume(); }
    std::coroutine_handle<promise_type> handle;
};
using pause = std::suspend_always;

tisock::task<int> ready_task(int v) { co_return v + 1; }

driver await_ready_tasks(int& sink) {
    for (;;) {
        sink = co_await ready_task(sink);
        co_await pause{};
    }
}

driver just_pause() {
    for (;;) co_await pause{};
}

// ---- co_await ------------------------------------------------------------------------------

void bench_ready_task() {
    int sink = 0;
    driver baseline = just_pause();
    tisock_bench::measure("driver resume+suspend (baseline)", 5'000'000, [&] { baseline.resume(); });
    driver d = await_ready_tasks(sink);
    tisock_bench::measure("co_await ready task<int> (incl. baseline)", 5'000'000, [&] { d.resume(); });
    tisock_bench::do_not_optimize(sink);
}

// ---- a suspended-and-resumed read ----------------------------------------------------------

struct loopback_pair {
    tisock::tcp client;
    tisock::tcp server;
};

tisock::task<tisock::tcp> accept_one(tisock::tcp listener) { co_return co_await listener.async_accept(); }
tisock::task<void> connect(tisock::tcp socket) { co_await socket.async_connect(); }

loopback_pair open_pair(tisock::reactor& r) {
    tisock::tcp listener{r, {.host = "127.0.0.1", .port = 0}};
    listener.listen();
    tisock::tcp client{r, {.host = "127.0.0.1", .port = listener.port()}};
    tisock::sync_wait(r, connect(client));
    tisock::tcp server = tisock::sync_wait(r, accept_one(listener));
    listener.close();
    client.set_no_delay(true);
    return {client, server};
}

driver read_loop(const tisock::tcp& socket, std::uint64_t& reads) {
    // Larger than what arrives: a short read tells the library the socket is drained, so
    // the next read waits for epoll instead of probing with a recv that fails (EAGAIN).
    std::array<std::byte, 64> buf;
    for (;;) {
        if (co_await socket.async_read(buf) == 0) co_return;
        ++reads;
        co_await pause{};
    }
}

void bench_suspended_read() {
    tisock::reactor r;
    loopback_pair p = open_pair(r);
    const int client_fd = p.client.native_handle();
    std::uint64_t reads = 0;
    driver reader = read_loop(p.server, reads);
    // One operation: the reader starts async_read (it suspends: nothing has arrived), the
    // client sends one byte (a raw send(), to keep the writer's cost minimal), and the
    // reactor runs until epoll reports the byte and the read resumes the coroutine.
    tisock_bench::measure("async_read suspended+resumed (send 1 byte, epoll_wait, recv)", 50'000, [&] {
        const std::uint64_t before = reads;
        reader.resume();
        const char byte = 'x';
        if (::send(client_fd, &byte, 1, MSG_NOSIGNAL) != 1) std::terminate();
        while (reads == before) r.run_one();
    });
    p.client.close();
    p.server.close();
}

// ---- timers --------------------------------------------------------------------------------

void arm(tisock::reactor::sleep_awaiter& a) { a.await_suspend(std::noop_coroutine()); }

void bench_timers() {
    tisock::reactor r;
    // One sleep_for awaiter started (inserted in the heap) and destroyed (cancelled), as
    // when a coroutine awaiting it is destroyed.
    tisock_bench::measure("timer insert+cancel (empty heap)", 2'000'000, [&] {
        auto a = r.sleep_for(1s);
        arm(a);
    });

    constexpr std::size_t pending = 100'000;
    auto timers = std::make_unique<std::optional<tisock::reactor::sleep_awaiter>[]>(pending);
    for (std::size_t i = 0; i < pending; ++i) {
        // Spread deadlines (1 h + i us, shuffled a little) so the heap has real depth.
        timers[i].emplace(r, 1h + std::chrono::microseconds((i * 7919) % pending));
        arm(*timers[i]);
    }
    tisock_bench::measure("timer insert+cancel (100k pending)", 2'000'000, [&] {
        auto a = r.sleep_for(1h + 50ms);
        arm(a);
    });
    tisock_bench::measure("timer expiry via run_one (100k pending)", 500'000, [&] {
        auto a = r.sleep_for(1ns);
        arm(a);
        r.run_one();
    });
    const auto start = std::chrono::steady_clock::now();
    timers.reset();  // cancels every one of them, from anywhere in the heap
    const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    std::printf("micro name=\"timer cancel, 100k pending, all of them\" iterations=%zu reps=1 ns_per_op=%.1f\n", pending,
                ns / pending);
}

// ---- post ----------------------------------------------------------------------------------

void bench_post() {
    tisock::reactor r;
    // From the reactor thread: each handler posts the next; run_one() runs one of them.
    std::uint64_t ran = 0;
    struct chain {
        tisock::reactor* r;
        std::uint64_t* ran;
        void operator()() const {
            ++*ran;
            r->post(chain{r, ran});
        }
    };
    r.post(chain{&r, &ran});
    tisock_bench::measure("post from the reactor thread + run", 2'000'000, [&] { r.run_one(); });
    tisock_bench::do_not_optimize(ran);
}

void bench_cross_thread_post() {
    tisock::reactor r;
    // A far timer keeps run() running between posts.
    auto keep_alive = r.sleep_for(24h);
    arm(keep_alive);
    std::thread reactor_thread([&r] { r.run(); });
    std::atomic<std::uint64_t> done{0};
    std::uint64_t sent = 0;
    // One round trip: post, the reactor wakes (eventfd), runs the handler, we see it.
    tisock_bench::measure("post round trip from another thread", 50'000, [&] {
        const std::uint64_t n = ++sent;
        r.post([&done, n] { done.store(n, std::memory_order_release); });
        while (done.load(std::memory_order_acquire) != n) {
        }
    });
    r.stop();
    reactor_thread.join();
}

}  // namespace

int main() {
    bench_ready_task();
    bench_suspended_read();
    bench_timers();
    bench_post();
    bench_cross_thread_post();
    return 0;
}
