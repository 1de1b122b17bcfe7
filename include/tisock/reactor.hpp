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
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <tisock/detail/loop_core.hpp>
#include <tisock/detail/stop_scope.hpp>
#include <tisock/error.hpp>

namespace tisock {

namespace detail {

// A call_after timer. The reactor holds a reference while it is pending (`self`), each
// timer_handle another: a handle may outlive the run, the cancel and the reactor.
struct callback_timer : timer_node, reactor_member {
    loop_core* loop = nullptr;
    std::shared_ptr<callback_timer> self;
    void (*run)(callback_timer* self) = nullptr;

    bool cancel() noexcept {
        if (!armed()) return false;  // ran, cancelled, or its reactor is gone
        loop->cancel_timer(this);
        loop->remove_member(this);
        self.reset();  // the caller's handle still holds it
        return true;
    }
};

template <class F>
struct callback_timer_for final : callback_timer {
    F f;
    explicit callback_timer_for(F&& fn) : f(std::move(fn)) {
        run = [](callback_timer* t) { static_cast<callback_timer_for*>(t)->f(); };
    }
};

}  // namespace detail

// Refers to a call_after timer (or to none, default-constructed). Copies refer to the same
// timer. Reactor thread only.
class timer_handle {
public:
    timer_handle() noexcept = default;
    // True if the timer was still pending: it will not run.
    bool cancel() noexcept { return timer_ != nullptr && timer_->cancel(); }

private:
    friend class reactor;
    explicit timer_handle(std::shared_ptr<detail::callback_timer> t) noexcept : timer_(std::move(t)) {}
    std::shared_ptr<detail::callback_timer> timer_;
};

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
        post_operation(new detail::posted_handler<std::decay_t<F>>(std::decay_t<F>(std::forward<F>(f))));
    }

    // co_await r.sleep_for(10ms): resumes the awaiting coroutine after `d` on this reactor.
    // A plain awaiter: works in any coroutine type. Under a tisock task with a stop token it
    // observes the token (detail/stop_scope.hpp): stopped, its timer is removed and it
    // throws std::system_error(operation_canceled) - from the run loop, also when the token
    // was stopped before it started (then for any `d`, 0 included).
    class [[nodiscard]] sleep_awaiter : detail::timer_node, detail::cancel_hook {
    public:
        sleep_awaiter(reactor& r, std::chrono::nanoseconds d) noexcept : reactor_(&r), duration_(d) {}
        // Movable until awaited: combinators store their arguments.
        sleep_awaiter(sleep_awaiter&& other) noexcept : reactor_(other.reactor_), duration_(other.duration_) {}
        sleep_awaiter& operator=(sleep_awaiter&&) = delete;
        ~sleep_awaiter() {
            if (armed()) reactor_->cancel_timer(this);
            detail::stop_scope::detach(*this);
        }
        bool await_ready() const noexcept { return false; }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            waiter_ = h;
            on_expire = [](detail::timer_node* n) {
                auto* self = static_cast<sleep_awaiter*>(n);
                detail::stop_scope::detach(*self);
                self->waiter_.resume();
            };
            detail::stop_scope* stops = detail::scope_of(h);  // (`scope` is the hook's)
            if (stops != nullptr && stops->stopped()) [[unlikely]] {
                canceled_ = true;  // do not start; fail from the run loop
                reactor_->schedule_timer(this, detail::clock::time_point::min());
                return true;
            }
            if (duration_.count() <= 0) return false;
            reactor_->schedule_timer(this, detail::clock::now() + duration_);
            if (stops != nullptr) [[unlikely]] {
                cancel = [](detail::cancel_hook* hook) noexcept {
                    // The timer leaves the heap; the coroutine resumes from the run loop,
                    // never inside the stop's walk. (Re-inserting into the slot the erase
                    // freed cannot allocate.)
                    auto* self = static_cast<sleep_awaiter*>(hook);
                    self->reactor_->cancel_timer(self);
                    self->canceled_ = true;
                    self->reactor_->schedule_timer(self, detail::clock::time_point::min());
                };
                stops->attach(*this);
            }
            return true;
        }
        void await_resume() const {
            if (canceled_) throw std::system_error(std::make_error_code(std::errc::operation_canceled));
        }

    private:
        reactor* reactor_;
        std::chrono::nanoseconds duration_;
        std::coroutine_handle<> waiter_;
        bool canceled_ = false;
    };

    sleep_awaiter sleep_for(std::chrono::nanoseconds d) noexcept { return {*this, d}; }

    // Runs `f` once from the run loop after `d` (never inside this call, even for d <= 0).
    // Work while pending; dropping the handle does not cancel it; an exception from `f`
    // leaves run*(). Reactor thread only (or before it runs).
    template <class F>
    timer_handle call_after(std::chrono::milliseconds d, F&& f);

private:
    friend struct detail::reactor_access;
};

template <class F>
timer_handle reactor::call_after(std::chrono::milliseconds d, F&& f) {
    auto t = std::make_shared<detail::callback_timer_for<std::decay_t<F>>>(std::decay_t<F>(std::forward<F>(f)));
    t->loop = this;
    t->on_expire = [](detail::timer_node* n) {
        auto* c = static_cast<detail::callback_timer*>(n);
        c->loop->remove_member(c);
        std::shared_ptr<detail::callback_timer> keep = std::move(c->self);  // freed after f, even if f throws
        c->run(c);
    };
    t->abandon = [](detail::reactor_member* m) {  // the reactor is destroyed: never runs
        auto* c = static_cast<detail::callback_timer*>(m);
        c->loop->cancel_timer(c);
        c->self.reset();
    };
    schedule_timer(t.get(), detail::clock::now() + d);
    add_member(t.get());
    t->self = t;
    return timer_handle(std::move(t));
}

inline detail::loop_core& detail::reactor_access::core(reactor& r) noexcept { return r; }

}  // namespace tisock
