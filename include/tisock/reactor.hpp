// tisock::reactor - the event loop: readiness (epoll/kqueue), timers, posted handlers.
//
// One reactor is driven by one thread. Only post() and stop() may be called from other
// threads. Handlers run inside run()/run_for()/run_one()/poll(); an exception thrown by a
// handler propagates out of that call and the reactor stays usable.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include <tisock/detail/loop_core.hpp>
#include <tisock/error.hpp>

namespace tisock {

class reactor : private detail::loop_core {
public:
    reactor() = default;
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;
    // Destroys pending work without running it: coroutine frames started by spawn/sync_wait
    // (and the tasks they await), pending callbacks, queued handlers; closes sockets.
    ~reactor() = default;

    // Runs handlers until stop() is called or no work is left; returns how many ran.
    std::size_t run() { return run_until(detail::clock::time_point::max(), false, true); }

    // As run(), but returns after at most about `d`.
    std::size_t run_for(std::chrono::milliseconds d) {
        return run_until(detail::clock::now() + d, false, true);
    }

    // Runs at most one handler, blocking until one is ready (or stop / no work).
    std::size_t run_one() { return run_until(detail::clock::time_point::max(), true, true); }

    // Runs the handlers that are ready now; never blocks.
    std::size_t poll() { return run_until(detail::clock::time_point::min(), false, false); }

    // Thread-safe, and async-signal-safe with the epoll backend (an atomic store and a
    // write() to the wake-up eventfd), so a SIGTERM handler may call it. run*() return as
    // soon as the handler in progress (if any) returns.
    void stop() noexcept {
        static_assert(std::atomic<bool>::is_always_lock_free, "stop() must stay async-signal-safe");
        stopped_.store(true, std::memory_order_release);
        backend_.wake();
    }

    using loop_core::stopped;
    void restart() noexcept { stopped_.store(false, std::memory_order_release); }

    // Thread-safe. Queues any callable (move-only included) to run on the reactor thread.
    template <class F>
    void post(F&& f) {
        using handler = detail::posted_handler<std::decay_t<F>>;
        auto* op = new handler(std::decay_t<F>(std::forward<F>(f)));
        const bool wake = detail::running_loop != this;
        // The wake-up is written under the lock: once the reactor has taken the handler, the
        // poster is done with the reactor, so running the handler may destroy it (a resolver
        // worker's delivery ends a connect, then its reactor) without racing that write.
        std::lock_guard lock(post_mutex_);
        posted_.push(op);
        posted_count_.fetch_add(1, std::memory_order_relaxed);
        if (wake) backend_.wake();
    }

    // co_await r.sleep_for(10ms): resumes the awaiting coroutine after `d` on this reactor.
    // A plain awaiter: works in any coroutine type.
    class [[nodiscard]] sleep_awaiter : detail::timer_node {
    public:
        sleep_awaiter(reactor& r, std::chrono::nanoseconds d) noexcept : reactor_(&r), duration_(d) {}
        sleep_awaiter(const sleep_awaiter&) = delete;
        sleep_awaiter& operator=(const sleep_awaiter&) = delete;
        ~sleep_awaiter() {
            if (armed()) reactor_->cancel_timer(this);
        }
        bool await_ready() const noexcept { return duration_.count() <= 0; }
        void await_suspend(std::coroutine_handle<> h) {
            waiter_ = h;
            on_expire = [](detail::timer_node* n) { static_cast<sleep_awaiter*>(n)->waiter_.resume(); };
            reactor_->schedule_timer(this, detail::clock::now() + duration_);
        }
        void await_resume() const noexcept {}

    private:
        reactor* reactor_;
        std::chrono::nanoseconds duration_;
        std::coroutine_handle<> waiter_;
    };

    sleep_awaiter sleep_for(std::chrono::nanoseconds d) noexcept { return {*this, d}; }

private:
    friend struct detail::reactor_access;
};

inline detail::loop_core& detail::reactor_access::core(reactor& r) noexcept { return r; }

}  // namespace tisock
