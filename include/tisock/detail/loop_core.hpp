// The event loop's core: readiness (epoll/kqueue), timers, the ready queue, handlers
// posted from other threads, and the registry of what must be torn down with the loop.
// tisock::reactor (reactor.hpp) is its public face and derives from it privately; the
// socket and task layers reach the internal interface below through reactor_access.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include <tisock/error.hpp>
#include <tisock/detail/backend.hpp>
#include <tisock/detail/descriptor.hpp>
#include <tisock/detail/operation.hpp>
#include <tisock/detail/timer_heap.hpp>

namespace tisock {
class reactor;
}  // namespace tisock

namespace tisock::detail {


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

class loop_core;
inline thread_local loop_core* running_loop = nullptr;

class loop_core {
public:
    loop_core(const loop_core&) = delete;
    loop_core& operator=(const loop_core&) = delete;

    bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }

    // ---- The internal interface of the operation, socket and task layers ----------------

    // Whether this reactor is running on the calling thread.
    // (One thread drives a reactor, so any run*() in progress is on the caller's thread, even
    // when another reactor runs further down the stack.)
    bool running_in_this_thread() const noexcept { return run_depth_ > 0; }
    bool destroying() const noexcept { return destroying_; }

    void add_work() noexcept { ++work_; }
    void remove_work() noexcept { --work_; }

    // Runs `op` from the run loop, after what is already queued (never inside the caller).
    void defer(operation* op) noexcept { ready_.push(op); }
    bool cancel_deferred(operation* op) noexcept { return ready_.remove(op); }

    // Thread-safe: queues `op` to run from the run loop (reactor::post without the
    // allocation; a stop relayed from another thread). The wake-up is written under the
    // lock: once the reactor has taken the operation, the poster is done with the reactor,
    // so running it may destroy the reactor (a resolver worker's delivery ends a connect,
    // then its reactor) without racing that write.
    void post_operation(operation* op) {
        const bool wake = running_loop != this;
        std::lock_guard lock(post_mutex_);
        posted_.push(op);
        posted_count_.fetch_add(1, std::memory_order_relaxed);
        if (wake) backend_.wake();
    }

    // Runs a callable from the run loop (reactor thread only; allocates).
    template <class F>
    void defer_call(F&& f) {
        ready_.push(new posted_handler<std::decay_t<F>>(std::decay_t<F>(std::forward<F>(f))));
    }

    // Timers count as work while armed.
    void schedule_timer(timer_node* t, clock::time_point deadline) {
        t->deadline = deadline;
        timers_.insert(t);
        ++work_;
    }
    void cancel_timer(timer_node* t) noexcept {
        if (!t->armed()) return;
        timers_.erase(t);
        --work_;
    }

    // Registers `fd` with the backend, once for its life. Returns nullptr and sets `error`
    // on failure (the descriptor is not closed).
    descriptor_state* open_descriptor(int fd, int& error) {
        if (free_descriptors_ == nullptr) [[unlikely]] add_descriptor_chunk();
        descriptor_state* d = free_descriptors_;
        free_descriptors_ = d->next;
        *d = descriptor_state{};
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
    void close_descriptor(descriptor_state* d) noexcept {
        backend_.deregister_descriptor(*d);
        (void)sys::close(d->fd);
        retire(d);
    }
    // Takes the descriptor out of the backend, open, and retires its state; returns it.
    int release_descriptor(descriptor_state* d) noexcept {
        const int fd = d->fd;
        backend_.remove_descriptor(*d);
        retire(d);
        return fd;
    }

    void add_member(reactor_member* m) noexcept { members_.push(m); }
    void remove_member(reactor_member* m) noexcept { members_.remove(m); }
    void add_root(reactor_member* m) noexcept {
        roots_.push(m);
        ++work_;
    }
    void remove_root(reactor_member* m) noexcept {
        roots_.remove(m);
        --work_;
    }

protected:
    loop_core() = default;
    ~loop_core() {
        destroying_ = true;
        // Deferred and posted completions first: their owners are torn down next (a task
        // finishing on another reactor posts its awaiter's resumption from its own frame).
        take_posted();
        destroy_queue(ready_);
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
    }

    void retire(descriptor_state* d) noexcept {
        d->fd = -1;
        d->reader = d->writer = nullptr;
        d->next = retired_descriptors_;
        retired_descriptors_ = d;
    }

    static void destroy_queue(op_queue& q) {
        while (operation* op = q.pop()) op->invoke(op, false);
    }
    static void abandon(member_list& list) {
        reactor_member* m = list.front();
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
        while (descriptor_state* d = retired_descriptors_) {
            retired_descriptors_ = d->next;
            d->next = free_descriptors_;
            free_descriptors_ = d;
        }
    }

    // Descriptor states are allocated descriptor_chunk at a time (no allocation header
    // and no pool pointer per connection) and never freed before the loop.
    static constexpr std::size_t descriptor_chunk = 64;
    [[gnu::noinline]] void add_descriptor_chunk() {
        auto chunk = std::make_unique<descriptor_state[]>(descriptor_chunk);
        descriptor_chunks_.push_back(std::move(chunk));  // (frees the chunk if it throws)
        descriptor_state* states = descriptor_chunks_.back().get();
        for (std::size_t i = descriptor_chunk; i-- > 0;) {
            states[i].next = free_descriptors_;
            free_descriptors_ = &states[i];
        }
    }

    // Dispatches the current event batch: all of it, or (run_one) up to the first handler.
    // Each event has a read half and a write half. The cursor advances before a handler
    // runs, so an exception leaves the batch consistent and the next run*() goes on from
    // there. Returns the number of handlers run.
    std::size_t dispatch_events(bool one) {
        std::size_t ran = 0;
        while (cursor_ < event_count_ && !stopped()) {
            const ready_event e = backend_.event(cursor_);
            descriptor_state* d = e.d;
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
                    if (io_waiter* w = d->reader) {
                        w->on_ready(w);
                        if (++ran, one) return ran;
                    }
                }
            }
            write_half_ = false;
            ++cursor_;
            if (e.writable && d->fd >= 0) {  // the read half may have closed it
                d->write_ready = true;
                if (io_waiter* w = d->writer) {
                    w->on_ready(w);
                    if (++ran, one) return ran;
                }
            }
        }
        return ran;
    }

    // Milliseconds epoll/kqueue may sleep: until the next timer or `limit`, rounded up so
    // that we never wake just before a deadline and spin.
    int wait_timeout(clock::time_point limit, bool may_block) const {
        if (!may_block) return 0;
        clock::time_point until = limit;
        if (const timer_node* t = timers_.top(); t != nullptr && t->deadline < until) until = t->deadline;
        if (until == clock::time_point::max()) return -1;
        auto now = clock::now();
        if (until <= now) return 0;
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
        return ms > 1'000'000 ? 1'000'000 : int(ms);
    }

    // The one run loop behind run/run_for/run_one/poll.
    std::size_t run_until(clock::time_point limit, bool one, bool may_block) {
        // A nested run*() from one of this reactor's own handlers would take over the event
        // batch the outer call is walking (skipping or replaying events): refused.
        if (run_depth_ > 0) throw state_error("tisock::reactor: run*()/poll() called from inside one of its own handlers");
        struct scope {
            loop_core* self;
            loop_core* saved = running_loop;
            explicit scope(loop_core* r) : self(r) {
                running_loop = r;
                ++r->run_depth_;
            }
            ~scope() {
                --self->run_depth_;
                running_loop = saved;
            }
        } running(this);

        // run_for's bound is checked after every handler; run() and run_one() never read the
        // clock for it.
        const bool bounded = may_block && limit != clock::time_point::max();
        std::size_t count = 0;
        bool polled = false;
        for (;;) {
            if (stopped()) return count;
            if (cursor_ < event_count_) {
                count += dispatch_events(one);
                if ((one && count > 0) || (bounded && clock::now() >= limit)) return count;
                continue;
            }
            recycle_retired();
            if (!timers_.empty()) {
                timer_node* t = timers_.top();
                if (t->deadline <= clock::now()) {
                    cancel_timer(t);
                    t->on_expire(t);
                    if (++count, one || (bounded && clock::now() >= limit)) return count;
                    continue;
                }
            }
            take_posted();
            if (ready_budget_left_ > 0) {
                if (operation* op = ready_.pop()) {
                    --ready_budget_left_;
                    op->invoke(op, true);
                    if (++count, one || (bounded && clock::now() >= limit)) return count;
                    continue;
                }
            }
            if (!has_work()) return count;
            const bool more_ready = !ready_.empty();
            if (polled) return count;  // poll(): one look at the backend
            if (!more_ready && bounded && clock::now() >= limit) return count;
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

    backend backend_;
    std::size_t event_count_ = 0;
    std::size_t cursor_ = 0;
    bool write_half_ = false;

    timer_heap timers_;
    op_queue ready_;
    std::size_t work_ = 0;

    std::mutex post_mutex_;
    op_queue posted_;
    std::atomic<std::size_t> posted_count_{0};
    std::atomic<bool> stopped_{false};

    std::vector<std::unique_ptr<descriptor_state[]>> descriptor_chunks_;
    descriptor_state* free_descriptors_ = nullptr;
    descriptor_state* retired_descriptors_ = nullptr;

    member_list roots_;
    member_list members_;
    int run_depth_ = 0;
    bool destroying_ = false;
};

// The one door to a reactor's internals.
struct reactor_access {
    static loop_core& core(reactor& r) noexcept;
};

}  // namespace tisock::detail
