// tisock::task<T> - a lazy coroutine, plus spawn() and sync_wait() to run tasks on a reactor.
//
// No stack growth. Awaiting a task starts it; a finishing task resumes its awaiter. Done by
// direct resume() calls, or by symmetric transfer (whose tail call g++ 12 does not guarantee
// at -O0 or under ASan), each start and each completion would run inside the frames of the
// previous one, and 1,000,000 sequential awaits or 100,000 nested tasks would overflow the
// stack. So a task never resumes another directly: it hands the coroutine to run next over
// to this thread's resumer loop (detail::resumer) and suspends, and the loop resumes what it
// is handed, one after the other, from the same stack depth.
//
// - resumer::hand_over(suspending, next), from an await_suspend, and hand_over_final, from a
//   final_suspend: if the loop active on this thread is the one running `suspending`, `next`
//   is queued and `suspending` returns to the loop. Otherwise (the first await under a root;
//   a task the reactor resumed after real I/O, now completing a chain of awaiters; a
//   coroutine resumed by hand inside a task, e.g. by a nested reactor run) the call becomes
//   the loop until nothing is left: one loop on the stack per such entry, not one per task.
// - Awaiting a task hands the task over; a finishing task hands its awaiter over. When what
//   comes next, and last, is the coroutine whose await_suspend runs the loop, hand_over
//   returns false and that coroutine goes on by itself (no resume from its own await_suspend).
// - Once hand_over returned true, or hand_over_final returned, the caller's coroutine may
//   have run on, finished and been destroyed: nothing of its frame or awaiter is touched.
// - The queue is intrusive (a detail::resumption in the task's promise): no allocation. An
//   entry waits only while the coroutine that queued it returns to the loop; nothing else
//   runs in between, so a queued handle is never a destroyed frame (no reactor destructor
//   can run then). A combinator that queues several at once must keep that true.
// - The per-thread pointer is read inside a function that is never inlined: clang 14 may
//   keep a thread_local's address across a suspension of a coroutine that then resumes on
//   another thread.
// - resume() of a coroutine the loop runs must not throw: tasks store their exception (a
//   spawned task terminates at its end), sync_wait's root catches everything. A foreign
//   coroutine whose unhandled_exception rethrows, resumed by the loop inside a task's
//   (noexcept) final_suspend, calls std::terminate. Any exception leaving a loop restores the
//   per-thread pointer.
//
// Sticky tasks: a task records the loop its awaiter awaited from (detail::current_loop(), a
// per-thread read out of line). If it finishes on another loop (after resume_on), its
// awaiter is posted back there instead of handed to this thread's resumer; a spawned or
// sync_wait root likewise ends on its own reactor. Same loop: one pointer compare more.
//
// Stop tokens: a promise points at the stop scope its task runs under (its awaiter's, copied
// when it starts; detail/stop_scope.hpp), so sharing a token costs a pointer copy.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <coroutine>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include <tisock/detail/awaitable.hpp>
#include <tisock/detail/block_cache.hpp>
#include <tisock/detail/stop_scope.hpp>
#include <tisock/error.hpp>
#include <tisock/reactor.hpp>

namespace tisock {

template <class T = void>
class task;

void spawn(reactor& r, task<void> t, std::stop_token st = {});

namespace detail {

// A coroutine handed over to the resumer, linked into its queue without allocating: it lives
// in the promise of the task that hands it over.
struct resumption {
    std::coroutine_handle<> handle;
    resumption* next = nullptr;
};

// The per-thread loop that resumes handed-over coroutines (see the comment at the top).
class resumer {
public:
    // `suspending` is in its await_suspend and wants `next.handle` to run. Returns false if
    // `suspending` must go on at once (await_suspend returns false); after true, it may be
    // gone.
    static bool hand_over(std::coroutine_handle<> suspending, resumption& next) {
        return hand_over(suspending, next, suspending);
    }

    // As hand_over, from a final_suspend: `finished` never comes next, and its frame may be
    // destroyed (its address reused by a new frame) while the loop runs.
    static void hand_over_final(std::coroutine_handle<> finished, resumption& next) {
        (void)hand_over(finished, next, std::coroutine_handle<>{});
    }

    resumer(const resumer&) = delete;
    resumer& operator=(const resumer&) = delete;

private:
    // Never inlined: the thread_local must not be read inside a coroutine's body.
    [[gnu::noinline]] static bool hand_over(std::coroutine_handle<> suspending, resumption& next,
                                            std::coroutine_handle<> host) {
        if (resumer* active = current_; active != nullptr && active->running_ == suspending) {
            active->push(next);
            return true;
        }
        resumer loop(host);
        loop.push(next);
        return loop.run();
    }

    explicit resumer(std::coroutine_handle<> host) noexcept : host_(host), outer_(current_) { current_ = this; }
    ~resumer() { current_ = outer_; }

    void push(resumption& r) noexcept {
        r.next = nullptr;
        (tail_ != nullptr ? tail_->next : head_) = &r;
        tail_ = &r;
    }

    // Resumes queued coroutines until none is left. False when the host came last: it goes
    // on by itself instead of being resumed from inside its await_suspend.
    bool run() {
        while (resumption* r = head_) {
            head_ = r->next;
            if (head_ == nullptr) tail_ = nullptr;
            std::coroutine_handle<> h = r->handle;  // `r` may die with the frame it lives in
            if (h == host_ && head_ == nullptr) return false;
            running_ = h;
            h.resume();
        }
        return true;
    }

    static inline thread_local resumer* current_ = nullptr;

    std::coroutine_handle<> host_;     // whose await_suspend runs this loop (none: a final_suspend)
    std::coroutine_handle<> running_;  // the coroutine this loop resumed last
    resumer* outer_;                   // the loop this one interrupts, if any
    resumption* head_ = nullptr;
    resumption* tail_ = nullptr;
};

// What makes a coroutine a root of a reactor: a member of its root list (counted as work,
// destroyed with the reactor if unfinished), started from the run loop. A spawned task
// and sync_wait's wrapper coroutine each hold one.
struct root_link : reactor_member, operation {
    reactor* owner = nullptr;  // null until start()
    std::coroutine_handle<> self;

    void start(reactor& r, std::coroutine_handle<> coroutine) {
        owner = &r;
        self = coroutine;
        abandon = [](reactor_member* m) { static_cast<root_link*>(m)->self.destroy(); };
        invoke = [](operation* op, bool run) {
            if (run) static_cast<root_link*>(op)->self.resume();
        };
        loop_core& loop = reactor_access::core(r);
        loop.add_root(this);
        loop.defer(this);
    }
    // spawn() from another thread: the start is posted (queued, it counts as work) and the
    // task becomes a root when it starts; destroyed unstarted if the reactor goes first.
    void post_start(reactor& r, std::coroutine_handle<> coroutine) {
        owner = &r;
        self = coroutine;
        abandon = [](reactor_member* m) { static_cast<root_link*>(m)->self.destroy(); };
        invoke = [](operation* op, bool run) {
            auto* link = static_cast<root_link*>(op);
            if (!run) return link->self.destroy();
            reactor_access::core(*link->owner).add_root(link);
            link->self.resume();
        };
        reactor_access::core(r).post_operation(this);
    }
    // Runs `ending` (which calls finish()) where the root started: at once on its reactor's
    // thread, otherwise from a handler posted to it (it stays that reactor's work meanwhile).
    // `ending` ignores run == false: the reactor is being destroyed and abandons the root.
    void end(operation::invoke_fn ending) {
        invoke = ending;
        loop_core& home = reactor_access::core(*owner);
        if (current_loop() == &home) return ending(this, true);
        home.post_operation(this);
    }
    // The coroutine finished: no longer a root.
    void finish() noexcept { reactor_access::core(*owner).remove_root(this); }
    // Never finished (sync_wait leaving early): off the root list and the ready queue.
    void withdraw() noexcept {
        loop_core& loop = reactor_access::core(*owner);
        loop.remove_root(this);
        loop.cancel_deferred(this);
    }
};

// Coroutine frames of tasks and roots come from the per-thread block caches: a server's
// per-connection frames are reused by the next connection instead of going back to malloc.
// `scope` (scoped_promise) is the stop scope the task runs under: its awaiter's, set when it
// starts; a spawned task's own (it owns it) when spawned with a token.
class task_promise_base : public recycled_allocation, public scoped_promise {
public:
    task_promise_base() noexcept = default;
    task_promise_base(const task_promise_base&) = delete;
    task_promise_base& operator=(const task_promise_base&) = delete;
    ~task_promise_base() {
        if (root_.owner != nullptr) delete scope;
    }

    std::suspend_always initial_suspend() const noexcept { return {}; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <class Promise>
        void await_suspend(std::coroutine_handle<Promise> h) const noexcept {
            task_promise_base& p = h.promise();
            if (p.root_.owner != nullptr) {  // spawned: nobody awaits it, it ends itself
                p.root_.end(&end_detached<Promise>);
                return;
            }
            // Sticky: the awaiter goes on on the reactor it awaited from. Still there (the
            // common case), the resumer takes it; after a resume_on, a posted handler does
            // (root_, unused by an awaited task, is the operation).
            if (p.home_ != nullptr && p.home_ != current_loop()) [[unlikely]] {
                p.root_.self = p.continuation_;
                p.root_.invoke = [](operation* op, bool run) {
                    if (run) static_cast<root_link*>(op)->self.resume();
                };
                p.home_->post_operation(&p.root_);  // `h` may be destroyed by now
                return;
            }
            p.resumption_.handle = p.continuation_;
            resumer::hand_over_final(h, p.resumption_);  // `h` may be destroyed by now
        }
        // A spawned task's end, on its reactor's thread.
        template <class Promise>
        static void end_detached(operation* op, bool run) noexcept {
            if (!run) return;
            auto h = std::coroutine_handle<Promise>::from_address(static_cast<root_link*>(op)->self.address());
            task_promise_base& p = h.promise();
            p.root_.finish();
            // An exception escaped a spawned task: rethrown here, inside a noexcept function,
            // std::terminate reports it ("terminate called after throwing..."). A
            // cancellation under a stopped token ends it quietly.
            if (p.exception_ && !p.cancelled_quietly()) std::rethrow_exception(p.exception_);
            h.destroy();
        }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }

    void unhandled_exception() noexcept { exception_ = std::current_exception(); }

    // Starts the task on behalf of `awaiter`; the result is await_suspend's (see hand_over).
    bool start(std::coroutine_handle<> self, std::coroutine_handle<> awaiter) {
        continuation_ = awaiter;
        home_ = current_loop();
        resumption_.handle = self;
        return resumer::hand_over(awaiter, resumption_);
    }

    // spawn(): the task becomes a root of `r` (counted as work, destroyed with the reactor
    // if unfinished) and starts from the run loop. It owns itself: no wrapper coroutine.
    // From a thread not running `r`, the start is posted.
    void start_detached(reactor& r, std::coroutine_handle<> self) {
        if (current_loop() == &reactor_access::core(r)) {
            root_.start(r, self);
        } else {
            root_.post_start(r, self);
        }
    }

protected:
    bool cancelled_quietly() const noexcept {
        return scope != nullptr && scope->stop_requested() && is_cancellation(exception_);
    }
    void rethrow_if_failed() const {
        if (exception_) std::rethrow_exception(exception_);
    }

private:
    resumption resumption_;  // queues this task's start, later its awaiter's resumption
    std::coroutine_handle<> continuation_;
    loop_core* home_ = nullptr;  // the loop the awaiter ran on when it awaited (none: no loop)
    std::exception_ptr exception_;
    root_link root_;  // started by spawn() only
};

template <class T>
class task_promise final : public task_promise_base {
public:
    task_promise() noexcept {}
    task_promise(const task_promise&) = delete;
    ~task_promise() {
        if (has_value_) value_.~T();
    }
    task<T> get_return_object() noexcept;

    template <class U = T>
        requires std::is_convertible_v<U&&, T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        ::new (static_cast<void*>(std::addressof(value_))) T(std::forward<U>(v));
        has_value_ = true;
    }

    T result() {
        rethrow_if_failed();
        return std::move(value_);
    }

private:
    union {
        T value_;
    };
    bool has_value_ = false;
};

template <class T>
class task_promise<T&> final : public task_promise_base {
public:
    task<T&> get_return_object() noexcept;
    void return_value(T& v) noexcept { value_ = std::addressof(v); }
    T& result() {
        rethrow_if_failed();
        return *value_;
    }

private:
    T* value_ = nullptr;
};

template <>
class task_promise<void> final : public task_promise_base {
public:
    task<void> get_return_object() noexcept;
    void return_void() noexcept {}
    void result() { rethrow_if_failed(); }
};

}  // namespace detail

template <class T>
class [[nodiscard]] task {
public:
    static_assert(!std::is_rvalue_reference_v<T>, "task<T>: T may be void, a value type or an lvalue reference");
    using promise_type = detail::task_promise<T>;
    using handle_type = std::coroutine_handle<promise_type>;

    task() noexcept = default;
    explicit task(handle_type h) noexcept : handle_(h) {}
    task(task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            if (handle_) handle_.destroy();
            handle_ = std::exchange(other.handle_, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() {
        if (handle_) handle_.destroy();
    }

    bool valid() const noexcept { return static_cast<bool>(handle_); }

    class awaiter {
    public:
        explicit awaiter(handle_type h) noexcept : handle_(h) {}
        bool await_ready() const noexcept { return !handle_ || handle_.done(); }
        // The task shares its awaiter's stop scope (none under a foreign coroutine).
        template <class P>
        bool await_suspend(std::coroutine_handle<P> awaiting) {
            handle_.promise().scope = detail::scope_of(awaiting);
            return handle_.promise().start(handle_, awaiting);
        }
        T await_resume() {
            if (!handle_) throw state_error("co_await on an empty tisock::task");
            return handle_.promise().result();
        }

    private:
        handle_type handle_;
    };

    awaiter operator co_await() && noexcept { return awaiter{handle_}; }
    awaiter operator co_await() & noexcept { return awaiter{handle_}; }

private:
    friend void spawn(reactor& r, task<void> t, std::stop_token st);
    handle_type handle_;
};

namespace detail {

template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}
template <class T>
task<T&> task_promise<T&>::get_return_object() noexcept {
    return task<T&>{std::coroutine_handle<task_promise<T&>>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}

// The coroutine at the root of sync_wait(): owned by the reactor (a member of its root
// list, counted as work) until it finishes, so that destroying the reactor destroys it and,
// through the task it awaits, every frame below it. (A spawned task is its own root:
// task_promise_base::start_detached.)
struct root_coroutine {
    struct promise_type : recycled_allocation, scoped_promise {
        root_link root;
        bool* done_flag = nullptr;  // sync_wait's completion flag

        root_coroutine get_return_object() noexcept {
            return root_coroutine{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                h.promise().root.end([](operation* op, bool run) noexcept {
                    if (!run) return;
                    auto finished = std::coroutine_handle<promise_type>::from_address(
                        static_cast<root_link*>(op)->self.address());
                    promise_type& p = finished.promise();
                    p.root.finish();
                    *p.done_flag = true;
                    finished.destroy();
                });
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        // sync_wait's wrapper catches everything itself.
        void unhandled_exception() const noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;

    // Registers the root with `r` and starts it from the run loop.
    void start_on(reactor& r, bool* done_flag) {
        handle.promise().done_flag = done_flag;
        handle.promise().root.start(r, handle);
    }
};


template <class T>
struct sync_wait_result {
    std::exception_ptr error;
    std::conditional_t<std::is_void_v<T>, char, std::conditional_t<std::is_reference_v<T>,
                                                                     std::remove_reference_t<T>*, std::optional<T>>>
        value{};
};

template <class R, class A>
root_coroutine run_for_sync_wait(A& a, sync_wait_result<R>& out) {
    try {
        if constexpr (std::is_void_v<R>) {
            co_await a;
        } else if constexpr (std::is_reference_v<R>) {
            out.value = std::addressof(co_await a);
        } else {
            out.value.emplace(co_await a);
        }
    } catch (...) {
        out.error = std::current_exception();
    }
}

// co_await current_scope{}: the stop scope of the awaiting coroutine (nullptr: none). Never
// suspends. (Trivially destructible: g++ 12 may destroy a co_await operand twice.)
struct current_scope {
    stop_scope* scope = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        scope = scope_of(h);
        return false;
    }
    stop_scope* await_resume() const noexcept { return scope; }
};

// co_await tisock::get_stop_token(): the token of the task (its scope's), or none.
struct stop_token_awaiter : current_scope {
    std::stop_token await_resume() const { return scope != nullptr ? scope->token() : std::stop_token{}; }
};

}  // namespace detail

// Starts `t` on `r` (from the run loop, not inside this call), detached, observing `st`.
// An exception escaping `t` calls std::terminate, except std::system_error with
// operation_canceled once `st` is stopped: that ends `t` quietly.
inline void spawn(reactor& r, task<void> t, std::stop_token st) {
    if (!t.handle_) throw state_error("tisock::spawn of an empty task");
    if (st.stop_possible()) {
        t.handle_.promise().scope = new detail::stop_scope(std::move(st), detail::reactor_access::core(r));
    }
    task<void>::handle_type h = std::exchange(t.handle_, {});
    h.promise().start_detached(r, h);  // from here on the task owns its scope
}

// The current task's stop token (none outside a tisock task or without one).
inline detail::stop_token_awaiter get_stop_token() noexcept { return {}; }

// Runs `r` until `awaitable` (a task or any other awaitable, observing `st`) finishes;
// returns its result or rethrows its exception (a cancellation included). The awaitable is
// awaited where it is (a temporary lives until sync_wait returns): nothing is moved. Throws state_error when called from a handler of `r` itself
// (the classic self-deadlock), or when `r` is stopped before it finishes. If it cannot finish,
// or a handler's exception propagates out (it does, as from run()), the awaitable's coroutine
// is destroyed before sync_wait leaves.
template <class A>
auto sync_wait(reactor& r, A&& awaitable, std::stop_token st = {})
    -> detail::returned_t<detail::await_result_t<std::remove_reference_t<A>&>> {
    using R = detail::returned_t<detail::await_result_t<std::remove_reference_t<A>&>>;
    if (detail::reactor_access::core(r).running_in_this_thread()) {
        throw state_error("tisock::sync_wait called from inside the running reactor");
    }
    std::optional<detail::stop_scope> scope;  // outlives the root
    if (st.stop_possible()) scope.emplace(std::move(st), detail::reactor_access::core(r));
    detail::sync_wait_result<R> result;
    bool done = false;
    detail::root_coroutine root = detail::run_for_sync_wait<R>(awaitable, result);
    root.handle.promise().scope = scope ? &*scope : nullptr;
    root.start_on(r, &done);
    // The root points into this stack frame: it must never outlive the call.
    auto tear_down = [&] {
        root.handle.promise().root.withdraw();
        root.handle.destroy();
    };
    try {
        while (!done) {
            // The root counts as work, so run_one() returns 0 only when stopped.
            if (r.run_one() == 0 && !done) {
                throw state_error("tisock::sync_wait: the reactor was stopped before the task finished");
            }
        }
    } catch (...) {
        if (!done) tear_down();
        throw;
    }
    if (result.error) std::rethrow_exception(result.error);
    if constexpr (std::is_reference_v<R>) {
        return *result.value;
    } else if constexpr (!std::is_void_v<R>) {
        return std::move(*result.value);
    }
}

}  // namespace tisock
