// tisock::reactor - the event loop: readiness (epoll/kqueue), timers, posted handlers.
//
// One reactor is driven by one thread. Only post() and stop() may be called from other
// threads. Handlers run inside run()/run_for()/run_one()/poll(); an exception thrown by a
// handler propagates out of that call and the reactor stays usable.
#pragma once

#include "detail/require_cxx20.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/backend.hpp"
#include "detail/descriptor.hpp"
#include "detail/operation.hpp"
#include "detail/timer_heap.hpp"
#include "error.hpp"

namespace tisock {

class reactor;

namespace detail {

// Anything that must be torn down when its reactor is destroyed with work pending:
// coroutine frames started by spawn/sync_wait, and sockets with operations in flight.
struct reactor_member {
    reactor_member* prev = nullptr;
    reactor_member* next = nullptr;
    void (*abandon)(reactor_member* self) = nullptr;  // destroy without running anything
};

class member_list {
public:
    bool empty() const noexcept { return head_ == nullptr; }
    reactor_member* front() const noexcept { return head_; }
    void push(reactor_member* m) noexcept {
        m->prev = nullptr;
        m->next = head_;
        if (head_ != nullptr) head_->prev = m;
        head_ = m;
    }
    void remove(reactor_member* m) noexcept {
        (m->prev != nullptr ? m->prev->next : head_) = m->next;
        if (m->next != nullptr) m->next->prev = m->prev;
        m->prev = m->next = nullptr;
    }

private:
    reactor_member* head_ = nullptr;
};

template <class F>
struct posted_handler final : operation {
    F f;
    explicit posted_handler(F&& fn) : f(std::move(fn)) { invoke = &run_or_destroy; }
    static void run_or_destroy(operation* op, bool run) {
        std::unique_ptr<posted_handler> self(static_cast<posted_handler*>(op));
        if (run) self->f();
    }
};

inline thread_local reactor* running_reactor = nullptr;

}  // namespace detail

class reactor {
public:
    reactor() = default;
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;

    // Destroys pending work without running it: coroutine frames started by spawn/sync_wait
    // (and the tasks they await), pending callbacks, queued handlers; closes sockets.
    ~reactor() {
        destroying_ = true;
        destroy_queue(ready_);  // deferred completions first: their owners are torn down next
        // Members unlink themselves when abandoned; abandoning one may release others.
        while (!roots_.empty()) abandon(roots_);
        while (!members_.empty()) abandon(members_);
        // Abandoned sockets have canceled their resolver jobs, so nothing is posted anymore.
        {
            std::lock_guard lock(post_mutex_);
            ready_.append(posted_);
            posted_count_.store(0, std::memory_order_relaxed);
        }
        destroy_queue(ready_);
        timers_.clear();
        for (detail::descriptor_state* d : descriptor_pool_) delete d;
    }

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

    bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }
    void restart() noexcept { stopped_.store(false, std::memory_order_release); }

    // Thread-safe. Queues any callable (move-only included) to run on the reactor thread.
    template <class F>
    void post(F&& f) {
        using handler = detail::posted_handler<std::decay_t<F>>;
        auto* op = new handler(std::decay_t<F>(std::forward<F>(f)));
        {
            std::lock_guard lock(post_mutex_);
            posted_.push(op);
            posted_count_.fetch_add(1, std::memory_order_relaxed);
        }
        if (detail::running_reactor != this) backend_.wake();
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

    // ---- Internal interface of the operation and socket layers (not part of the API) ----

    // Whether this reactor is running on the calling thread.
    // (One thread drives a reactor, so any run*() in progress is on the caller's thread, even
    // when another reactor runs further down the stack.)
    bool running_in_this_thread() const noexcept { return run_depth_ > 0; }
    bool destroying() const noexcept { return destroying_; }

    void add_work() noexcept { ++work_; }
    void remove_work() noexcept { --work_; }

    // Runs `op` from the run loop, after what is already queued (never inside the caller).
    void defer(detail::operation* op) noexcept { ready_.push(op); }
    bool cancel_deferred(detail::operation* op) noexcept { return ready_.remove(op); }

    // Runs a callable from the run loop (reactor thread only; allocates).
    template <class F>
    void defer_call(F&& f) {
        ready_.push(new detail::posted_handler<std::decay_t<F>>(std::decay_t<F>(std::forward<F>(f))));
    }

    // Timers count as work while armed.
    void schedule_timer(detail::timer_node* t, detail::clock::time_point deadline) {
        t->deadline = deadline;
        timers_.insert(t);
        ++work_;
    }
    void cancel_timer(detail::timer_node* t) noexcept {
        if (!t->armed()) return;
        timers_.erase(t);
        --work_;
    }

    // Registers `fd` with the backend, once for its life. Returns nullptr and sets `error`
    // on failure (the descriptor is not closed).
    detail::descriptor_state* open_descriptor(int fd, int& error) {
        detail::descriptor_state* d = free_descriptors_;
        if (d != nullptr) {
            free_descriptors_ = d->next;
        } else {
            // Room first, so that push_back cannot throw after the new. Doubling: growing
            // by one would move the whole pool at every new peak (quadratic in connections).
            if (descriptor_pool_.size() == descriptor_pool_.capacity()) {
                descriptor_pool_.reserve(std::max<std::size_t>(64, 2 * descriptor_pool_.capacity()));
            }
            d = new detail::descriptor_state;
            descriptor_pool_.push_back(d);
        }
        *d = detail::descriptor_state{};
        d->fd = fd;
        d->write_ready = true;  // a new socket can take bytes; EAGAIN corrects this
        error = backend_.register_descriptor(*d);
        if (error != 0) {
            d->fd = -1;
            d->next = free_descriptors_;
            free_descriptors_ = d;
            return nullptr;
        }
        return d;
    }

    // Closes the descriptor and retires its state. Events already collected for it in the
    // current batch see fd == -1; the state is reused only after the batch.
    void close_descriptor(detail::descriptor_state* d) noexcept {
        backend_.deregister_descriptor(*d);
        (void)detail::sys::close(d->fd);
        d->fd = -1;
        d->reader = d->writer = nullptr;
        d->next = retired_descriptors_;
        retired_descriptors_ = d;
    }

    void add_member(detail::reactor_member* m) noexcept { members_.push(m); }
    void remove_member(detail::reactor_member* m) noexcept { members_.remove(m); }
    void add_root(detail::reactor_member* m) noexcept {
        roots_.push(m);
        ++work_;
    }
    void remove_root(detail::reactor_member* m) noexcept {
        roots_.remove(m);
        --work_;
    }

private:
    static void destroy_queue(detail::op_queue& q) {
        while (detail::operation* op = q.pop()) op->invoke(op, false);
    }
    static void abandon(detail::member_list& list) {
        detail::reactor_member* m = list.front();
        list.remove(m);
        m->abandon(m);
    }

    bool has_work() const noexcept {
        return work_ > 0 || !ready_.empty() || posted_count_.load(std::memory_order_relaxed) > 0 ||
               cursor_ < event_count_;
    }

    void take_posted() {
        if (posted_count_.load(std::memory_order_relaxed) == 0) return;
        std::lock_guard lock(post_mutex_);
        ready_.append(posted_);
        posted_count_.store(0, std::memory_order_relaxed);
    }

    void recycle_retired() noexcept {
        while (detail::descriptor_state* d = retired_descriptors_) {
            retired_descriptors_ = d->next;
            d->next = free_descriptors_;
            free_descriptors_ = d;
        }
    }

    // Dispatches the current event batch: all of it, or (run_one) up to the first handler.
    // Each event has a read half and a write half. The cursor advances before a handler
    // runs, so an exception leaves the batch consistent and the next run*() goes on from
    // there. Returns the number of handlers run.
    std::size_t dispatch_events(bool one) {
        std::size_t ran = 0;
        while (cursor_ < event_count_ && !stopped()) {
            const detail::ready_event e = backend_.event(cursor_);
            detail::descriptor_state* d = e.d;
            if (d == nullptr || d->fd < 0) {  // a wake-up, or a descriptor closed in this batch
                ++cursor_;
                write_half_ = false;
                continue;
            }
            if (!write_half_) {
                write_half_ = true;
                d->hung_up |= e.hung_up;
                if (e.readable) {
                    d->read_ready = true;
                    if (detail::io_waiter* w = d->reader) {
                        w->on_ready(w);
                        if (++ran, one) return ran;
                    }
                }
            }
            write_half_ = false;
            ++cursor_;
            if (e.writable && d->fd >= 0) {  // the read half may have closed it
                d->write_ready = true;
                if (detail::io_waiter* w = d->writer) {
                    w->on_ready(w);
                    if (++ran, one) return ran;
                }
            }
        }
        return ran;
    }

    // Milliseconds epoll/kqueue may sleep: until the next timer or `limit`, rounded up so
    // that we never wake just before a deadline and spin.
    int wait_timeout(detail::clock::time_point limit, bool may_block) const {
        if (!may_block) return 0;
        detail::clock::time_point until = limit;
        if (const detail::timer_node* t = timers_.top(); t != nullptr && t->deadline < until) until = t->deadline;
        if (until == detail::clock::time_point::max()) return -1;
        auto now = detail::clock::now();
        if (until <= now) return 0;
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
        return ms > 1'000'000 ? 1'000'000 : int(ms);
    }

    // The one run loop behind run/run_for/run_one/poll.
    std::size_t run_until(detail::clock::time_point limit, bool one, bool may_block) {
        // A nested run*() from one of this reactor's own handlers would take over the event
        // batch the outer call is walking (skipping or replaying events): refused.
        if (run_depth_ > 0) throw state_error("tisock::reactor: run*()/poll() called from inside one of its own handlers");
        struct scope {
            reactor* self;
            reactor* saved = detail::running_reactor;
            explicit scope(reactor* r) : self(r) {
                detail::running_reactor = r;
                ++r->run_depth_;
            }
            ~scope() {
                --self->run_depth_;
                detail::running_reactor = saved;
            }
        } running(this);

        // run_for's bound is checked after every handler; run() and run_one() never read the
        // clock for it.
        const bool bounded = may_block && limit != detail::clock::time_point::max();
        std::size_t count = 0;
        bool polled = false;
        for (;;) {
            if (stopped()) return count;
            if (cursor_ < event_count_) {
                count += dispatch_events(one);
                if ((one && count > 0) || (bounded && detail::clock::now() >= limit)) return count;
                continue;
            }
            recycle_retired();
            if (!timers_.empty()) {
                detail::timer_node* t = timers_.top();
                if (t->deadline <= detail::clock::now()) {
                    cancel_timer(t);
                    t->on_expire(t);
                    if (++count, one || (bounded && detail::clock::now() >= limit)) return count;
                    continue;
                }
            }
            take_posted();
            if (ready_budget_left_ > 0) {
                if (detail::operation* op = ready_.pop()) {
                    --ready_budget_left_;
                    op->invoke(op, true);
                    if (++count, one || (bounded && detail::clock::now() >= limit)) return count;
                    continue;
                }
            }
            if (!has_work()) return count;
            const bool more_ready = !ready_.empty();
            if (polled) return count;  // poll(): one look at the backend
            if (!more_ready && bounded && detail::clock::now() >= limit) return count;
            polled = !may_block;
            event_count_ = backend_.wait(more_ready ? 0 : wait_timeout(limit, may_block));
            cursor_ = 0;
            ready_budget_left_ = ready_budget;
        }
    }

    // Queued handlers run at most `ready_budget` at a time between two looks at the
    // backend, so that handlers that keep queueing work cannot starve I/O. The count is the
    // reactor's, not the call's: run_one() (and so sync_wait) and run_for() calls that each
    // return before the budget is spent must not restart it, or I/O would wait forever.
    static constexpr std::size_t ready_budget = 64;
    std::size_t ready_budget_left_ = ready_budget;

    detail::backend backend_;
    std::size_t event_count_ = 0;
    std::size_t cursor_ = 0;
    bool write_half_ = false;

    detail::timer_heap timers_;
    detail::op_queue ready_;
    std::size_t work_ = 0;

    std::mutex post_mutex_;
    detail::op_queue posted_;
    std::atomic<std::size_t> posted_count_{0};
    std::atomic<bool> stopped_{false};

    std::vector<detail::descriptor_state*> descriptor_pool_;
    detail::descriptor_state* free_descriptors_ = nullptr;
    detail::descriptor_state* retired_descriptors_ = nullptr;

    detail::member_list roots_;
    detail::member_list members_;
    int run_depth_ = 0;
    bool destroying_ = false;
};

}  // namespace tisock
