// Structured concurrency: when_all, when_any, with_timeout, as_result, with_stop_token and
// task_group (API.md v3). Stop tokens and how operations observe them: detail/stop_scope.hpp.
//
// A combinator is a tisock::task: lazy, started when awaited, sharing its awaiter's scope.
// Its arguments live in its frame (an rvalue moved in, an lvalue referenced) and are awaited
// there as named lvalues (g++ 12 copies the operand of `co_await std::forward<A>(a)`). Each
// argument is awaited by a child coroutine (detail::child) whose scope is the combinator's
// own: one detail::stop_scope per combinator, stopped with the parent's (a cancel hook in the
// parent's list, no std::stop_callback) or by the combinator itself.
//
// Starting. The combinator's body resumes each child in turn, directly: the child runs until
// it first suspends or ends, and returns to the body, which then decides whether to start the
// next one (when_any stops starting once one has finished, when_all once one has thrown).
// The stack depth of a start is one child whatever the number of children, and a child's own
// awaits go through the resumer as usual (task.hpp), so a when_all of 100,000 children that
// complete synchronously does not grow the stack. (It grows with the nesting depth of
// combinators started inside one another synchronously, not with their width.)
//
// Finishing. The combinator counts the children running, plus one while it starts them, so
// no child can resume it before it waits. The last child to end hands the combinator over
// to the resumer from its final_suspend (never a direct resume). Children's frames are owned
// by the combinator and destroyed with it.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <array>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <stop_token>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <tisock/detail/awaitable.hpp>
#include <tisock/detail/block_cache.hpp>
#include <tisock/detail/stop_scope.hpp>
#include <tisock/error.hpp>
#include <tisock/reactor.hpp>
#include <tisock/task.hpp>

namespace tisock {

// co_await as_result(a): a std::system_error thrown by `a` becomes `ec`; `value` is then
// value-initialized.
template <class T>
struct result {
    std::error_code ec;
    T value;
};
template <>
struct result<void> {
    std::error_code ec;
};

class task_group;

namespace detail {

class children;

// The value a kept argument of type K (T& or T) gives, as held in tuples and variants.
template <class K>
using value_of = stored_t<await_result_t<std::remove_reference_t<K>&>>;

// The promise of the coroutines the combinators and task_group run their children in: lazy,
// keeps the exception, and reports its end through Promise::on_end(handle), from its final
// suspension (where it may be destroyed).
template <class Promise>
struct child_promise_base : recycled_allocation, scoped_promise {
    std::exception_ptr error;

    std::suspend_always initial_suspend() const noexcept { return {}; }
    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<Promise> h) const noexcept { Promise::on_end(h); }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() noexcept { error = std::current_exception(); }
};

// One child of a combinator: awaits one argument under the combinator's scope and records
// how it ended. Owned (frame included) by the combinator.
class child {
public:
    struct promise_type : child_promise_base<promise_type> {
        children* owner = nullptr;
        std::size_t index = 0;

        child get_return_object() noexcept { return child{std::coroutine_handle<promise_type>::from_promise(*this)}; }
        static void on_end(std::coroutine_handle<promise_type> h) noexcept;
    };

    child() noexcept = default;
    child(child&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
    child& operator=(child&& other) noexcept {
        if (this != &other) {
            if (handle_) handle_.destroy();
            handle_ = std::exchange(other.handle_, {});
        }
        return *this;
    }
    ~child() {
        if (handle_) handle_.destroy();
    }

    promise_type& promise() const noexcept { return handle_.promise(); }
    std::coroutine_handle<promise_type> handle() const noexcept { return handle_; }

private:
    explicit child(std::coroutine_handle<promise_type> h) noexcept : handle_(h) {}
    std::coroutine_handle<promise_type> handle_;
};

// Awaits `a` and stores its result in `slot` (an optional of its value_of, or discard).
template <class A, class Slot>
child run_child(A& a, Slot& slot) {
    if constexpr (std::is_void_v<await_result_t<A&>>) {
        co_await a;
        slot.emplace();
    } else {
        slot.emplace(co_await a);
    }
}

// A slot for results nobody reads (when_all of task<void>).
struct discard {
    void emplace() const noexcept {}
};

// The children of one combinator (see the top of this file).
class children {
public:
    static constexpr std::size_t none = std::size_t(-1);
    // When the combinator stops the children itself: when one throws (when_all), when one
    // ends (when_any), or never (with_timeout: its timer does).
    enum class stop_when { failed, finished, never };

    children(stop_scope* parent, stop_when rule) noexcept : scope(parent), rule_(rule) {}
    children(const children&) = delete;
    children& operator=(const children&) = delete;

    stop_scope scope;  // the children's

    // Whether the next child may start.
    bool may_start() const noexcept {
        switch (rule_) {
            case stop_when::failed: return first_failed_ == none;
            case stop_when::finished: return first_done_ == none;
            case stop_when::never: break;
        }
        return true;
    }

    // Starts `c` as child `index`, kept in `slot`: it runs until it first suspends or ends.
    void start(child& slot, child c, std::size_t index) {
        slot = std::move(c);
        child::promise_type& p = slot.promise();
        p.owner = this;
        p.index = index;
        p.scope = &scope;
        ++running_;
        slot.handle().resume();
    }

    // co_await kids.all_finished(): every child started has ended.
    struct all_finished_awaiter {
        children& self;
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) noexcept {
            if (--self.running_ == 0) return false;
            self.waiter_.handle = h;
            return true;
        }
        void await_resume() const noexcept {}
    };
    all_finished_awaiter all_finished() noexcept { return {*this}; }

    std::size_t first_done() const noexcept { return first_done_; }
    std::size_t first_failed() const noexcept { return first_failed_; }

    // From a child's final_suspend. `h` may be destroyed once this returns.
    void on_end(std::coroutine_handle<> h, std::size_t index, bool failed) noexcept {
        if (first_done_ == none) first_done_ = index;
        if (failed && first_failed_ == none) first_failed_ = index;
        const bool stop_now = (rule_ == stop_when::finished && first_done_ == index) ||
                              (rule_ == stop_when::failed && failed && first_failed_ == index);
        if (stop_now) scope.stop();
        if (--running_ == 0) resumer::hand_over_final(h, waiter_);
    }

private:
    stop_when rule_;
    std::size_t running_ = 1;  // + 1 until the combinator waits: no child resumes it before
    std::size_t first_done_ = none;
    std::size_t first_failed_ = none;
    resumption waiter_;  // the combinator, handed over by the last child
};

inline void child::promise_type::on_end(std::coroutine_handle<promise_type> h) noexcept {
    promise_type& p = h.promise();
    p.owner->on_end(h, p.index, p.error != nullptr);
}

// Rethrows the exception of child `i`, if it threw.
inline void rethrow_if_failed(const child& c) {
    if (c.promise().error) std::rethrow_exception(c.promise().error);
}

// Starts children over `args` (a tuple of references) in argument order, as long as `kids`
// lets them start.
template <class Refs, class Slots, std::size_t N, std::size_t... I>
void start_each(children& kids, std::array<child, N>& frames, Refs& args, Slots& slots, std::index_sequence<I...>) {
    ((kids.may_start() ? kids.start(frames[I], run_child(std::get<I>(args), std::get<I>(slots)), I) : void()), ...);
}

template <class Task, class Slot>
void start_each(children& kids, std::vector<child>& frames, std::vector<Task>& tasks, Slot&& slot_of) {
    for (std::size_t i = 0; i < tasks.size() && kids.may_start(); ++i) {
        kids.start(frames[i], run_child(tasks[i], slot_of(i)), i);
    }
}

// The children of a variadic combinator, their result slots and frames (destroyed in the
// reverse order: frames first, the scope last).
template <class... K>
struct variadic_children {
    children kids;
    std::tuple<std::optional<value_of<K>>...> slots;
    std::array<child, sizeof...(K)> frames;

    variadic_children(stop_scope* parent, children::stop_when rule) noexcept : kids(parent, rule) {}
    void start(K&... args) {
        std::tuple<std::remove_reference_t<K>&...> refs(args...);
        start_each(kids, frames, refs, slots, std::index_sequence_for<K...>{});
    }
};

template <class... K>
task<std::tuple<value_of<K>...>> when_all_of(K... args) {
    variadic_children<K...> c(co_await current_scope{}, children::stop_when::failed);
    c.start(args...);
    co_await c.kids.all_finished();
    if (c.kids.first_failed() != children::none) rethrow_if_failed(c.frames[c.kids.first_failed()]);
    co_return std::apply([](auto&... s) { return std::tuple<value_of<K>...>(std::move(*s)...); }, c.slots);
}

template <class... K>
task<std::variant<value_of<K>...>> when_any_of(K... args) {
    variadic_children<K...> c(co_await current_scope{}, children::stop_when::finished);
    c.start(args...);
    co_await c.kids.all_finished();
    const std::size_t winner = c.kids.first_done();
    rethrow_if_failed(c.frames[winner]);
    std::optional<std::variant<value_of<K>...>> out;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((I == winner ? (out.emplace(std::in_place_index<I>, std::move(*std::get<I>(c.slots))), void()) : void()), ...);
    }(std::index_sequence_for<K...>{});
    co_return std::move(*out);
}

// with_timeout's timer: at its deadline it stops the children (from the run loop).
class timeout_timer : timer_node {
public:
    explicit timeout_timer(children& kids) noexcept : kids_(kids) {}
    timeout_timer(const timeout_timer&) = delete;
    timeout_timer& operator=(const timeout_timer&) = delete;
    ~timeout_timer() {
        if (armed()) loop_->cancel_timer(this);
    }

    void start(std::chrono::milliseconds d) {
        if (d.count() <= 0) {
            expire();
            return;
        }
        loop_ = current_loop();
        if (loop_ == nullptr) throw state_error("tisock::with_timeout: no reactor runs on this thread");
        on_expire = [](timer_node* t) { static_cast<timeout_timer*>(t)->expire(); };
        loop_->schedule_timer(this, clock::now() + d);
    }
    bool fired() const noexcept { return fired_; }

private:
    void expire() noexcept {
        fired_ = true;
        kids_.scope.stop();
    }

    children& kids_;
    loop_core* loop_ = nullptr;
    bool fired_ = false;
};

template <class K>
task<returned_t<await_result_t<std::remove_reference_t<K>&>>> with_timeout_of(std::chrono::milliseconds d, K arg) {
    using R = await_result_t<std::remove_reference_t<K>&>;
    children kids(co_await current_scope{}, children::stop_when::never);
    std::optional<value_of<K>> slot;
    timeout_timer timer(kids);
    timer.start(d);
    child frame;
    kids.start(frame, run_child(arg, slot), 0);
    co_await kids.all_finished();
    if (const std::exception_ptr& e = frame.promise().error) {
        if (timer.fired() && is_cancellation(e)) throw std::system_error(std::make_error_code(std::errc::timed_out));
        std::rethrow_exception(e);
    }
    if constexpr (std::is_reference_v<R>) {
        co_return slot->get();
    } else if constexpr (!std::is_void_v<R>) {
        co_return std::move(*slot);
    }
}

template <class K>
using result_of = result<std::conditional_t<std::is_void_v<await_result_t<std::remove_reference_t<K>&>>, void,
                                            value_of<K>>>;

template <class K>
task<result_of<K>> as_result_of(K arg) {
    using R = await_result_t<std::remove_reference_t<K>&>;
    std::error_code ec;
    try {
        if constexpr (std::is_void_v<R>) {
            co_await arg;
            co_return result_of<K>{};
        } else {
            static_assert(std::is_default_constructible_v<value_of<K>>,
                          "tisock::as_result: the result type must be default-constructible (it is value-initialized on error)");
            co_return result_of<K>{{}, value_of<K>(co_await arg)};
        }
    } catch (const std::system_error& e) {
        ec = e.code();
    }
    if constexpr (std::is_void_v<R>) {
        co_return result_of<K>{ec};
    } else {
        co_return result_of<K>{ec, value_of<K>{}};
    }
}

// Sets the stop scope of the awaiting tisock coroutine (with_stop_token). Never suspends.
struct replace_scope {
    stop_scope* scope;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) const noexcept {
        h.promise().scope = scope;
        return false;
    }
    void await_resume() const noexcept {}
};

template <class K>
task<returned_t<await_result_t<std::remove_reference_t<K>&>>> with_stop_token_of(std::stop_token st, K arg) {
    std::optional<stop_scope> own;  // a scope observing st; none shields
    if (st.stop_possible()) {
        loop_core* loop = current_loop();
        if (loop == nullptr) throw state_error("tisock::with_stop_token: no reactor runs on this thread");
        own.emplace(std::move(st), *loop);
    }
    co_await replace_scope{own ? &*own : nullptr};
    co_return co_await arg;
}

// A task_group's child: a root of the reactor (work; destroyed with it if unfinished) that
// awaits the spawned task under the group's scope, and reports its end to the group.
struct group_child {
    struct promise_type : child_promise_base<promise_type> {
        task_group* group = nullptr;  // nullptr once unlinked
        promise_type* prev = nullptr;
        promise_type* next = nullptr;
        root_link root;

        promise_type() noexcept = default;
        promise_type(const promise_type&) = delete;
        promise_type& operator=(const promise_type&) = delete;
        ~promise_type();  // unlinks from the group (a frame destroyed with the reactor)

        group_child get_return_object() noexcept {
            return group_child{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        static void on_end(std::coroutine_handle<promise_type> h) noexcept;
    };
    std::coroutine_handle<promise_type> handle;
};

inline group_child run_group_child(task<void> t) { co_await t; }

// co_await group.join().
class join_awaiter : cancel_hook {
public:
    explicit join_awaiter(task_group& g) noexcept : group_(&g) {}
    join_awaiter(join_awaiter&& other) noexcept : cancel_hook(), group_(other.group_) {}
    join_awaiter& operator=(join_awaiter&&) = delete;
    ~join_awaiter();

    bool await_ready() const noexcept;
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        begin(h, scope_of(h));
        return true;
    }
    void await_resume() const;

private:
    friend class tisock::task_group;
    void begin(std::coroutine_handle<> h, stop_scope* joiner_scope);

    task_group* group_;
    resumption resume_;
    bool waiting_ = false;  // registered as the group's joiner (group_ is only touched then)
};

}  // namespace detail

// co_await when_all(a, b, ...): every argument's result, in a tuple, once all have ended.
template <class... A>
auto when_all(A&&... awaitables) {
    return detail::when_all_of<detail::kept_t<A>...>(std::forward<A>(awaitables)...);
}

// co_await when_all(tasks): their values, in order.
template <class T>
    requires(!std::is_void_v<T>)
task<std::vector<detail::stored_t<T>>> when_all(std::vector<task<T>> tasks) {
    detail::children kids(co_await detail::current_scope{}, detail::children::stop_when::failed);
    std::vector<std::optional<detail::stored_t<T>>> slots(tasks.size());
    std::vector<detail::child> frames(tasks.size());
    detail::start_each(kids, frames, tasks, [&](std::size_t i) -> auto& { return slots[i]; });
    co_await kids.all_finished();
    if (kids.first_failed() != detail::children::none) detail::rethrow_if_failed(frames[kids.first_failed()]);
    std::vector<detail::stored_t<T>> values;
    values.reserve(slots.size());
    for (auto& s : slots) values.push_back(std::move(*s));
    co_return values;
}

inline task<void> when_all(std::vector<task<void>> tasks) {
    detail::children kids(co_await detail::current_scope{}, detail::children::stop_when::failed);
    std::vector<detail::child> frames(tasks.size());
    detail::discard nothing;
    detail::start_each(kids, frames, tasks, [&](std::size_t) -> auto& { return nothing; });
    co_await kids.all_finished();
    if (kids.first_failed() != detail::children::none) detail::rethrow_if_failed(frames[kids.first_failed()]);
}

// co_await when_any(a, b, ...): the first to end wins (variant index); the rest are stopped
// and awaited.
template <class... A>
auto when_any(A&&... awaitables) {
    static_assert(sizeof...(A) > 0, "tisock::when_any needs at least one awaitable");
    return detail::when_any_of<detail::kept_t<A>...>(std::forward<A>(awaitables)...);
}

// co_await with_timeout(d, a): a's result; at `d`, a is stopped and awaited, and a
// cancellation becomes std::errc::timed_out.
template <class A>
auto with_timeout(std::chrono::milliseconds d, A&& awaitable) {
    return detail::with_timeout_of<detail::kept_t<A>>(d, std::forward<A>(awaitable));
}

// co_await as_result(a): a result<R> instead of a std::system_error.
template <class A>
auto as_result(A&& awaitable) {
    return detail::as_result_of<detail::kept_t<A>>(std::forward<A>(awaitable));
}

// co_await with_stop_token(st, a): `a` observes `st` instead of the task's token; an empty
// token shields it (cleanup I/O after a stop).
template <class A>
auto with_stop_token(std::stop_token st, A&& awaitable) {
    return detail::with_stop_token_of<detail::kept_t<A>>(std::move(st), std::forward<A>(awaitable));
}

// A scope for spawned children: they run as roots of the reactor under one stop scope, and
// join() waits for them all. Reactor thread only, except request_stop and stop_requested.
class task_group {
public:
    explicit task_group(reactor& r) : task_group(r, std::stop_token{}) {}
    // Children also stop when `parent` does.
    task_group(reactor& r, std::stop_token parent)
        : reactor_(r), scope_(detail::stop_scope::own_source, detail::reactor_access::core(r), parent) {}
    task_group(const task_group&) = delete;
    task_group& operator=(const task_group&) = delete;

    // Destroys, without resuming them, the frames of unfinished children.
    ~task_group() {
        while (detail::group_child::promise_type* c = head_) {
            unlink(*c);
            c->root.withdraw();
            std::coroutine_handle<detail::group_child::promise_type>::from_promise(*c).destroy();
        }
    }

    // Starts `t` from the run loop, as a child.
    void spawn(task<void> t) {
        if (!t.valid()) throw state_error("tisock::task_group::spawn of an empty task");
        detail::group_child c = detail::run_group_child(std::move(t));
        detail::group_child::promise_type& p = c.handle.promise();
        p.scope = &scope_;
        p.group = this;
        p.next = head_;
        if (head_ != nullptr) head_->prev = &p;
        head_ = &p;
        ++size_;
        p.root.start(reactor_, c.handle);
    }

    void request_stop() noexcept { scope_.request_stop(); }
    bool stop_requested() const noexcept { return scope_.stop_requested(); }
    std::size_t size() const noexcept { return size_; }

    // co_await join(): size() reached 0; rethrows (and clears) the first exception.
    [[nodiscard]] detail::join_awaiter join() noexcept { return detail::join_awaiter{*this}; }

private:
    friend struct detail::group_child::promise_type;
    friend class detail::join_awaiter;

    void unlink(detail::group_child::promise_type& c) noexcept {
        (c.prev != nullptr ? c.prev->next : head_) = c.next;
        if (c.next != nullptr) c.next->prev = c.prev;
        c.prev = c.next = nullptr;
        c.group = nullptr;
        --size_;
    }

    // A child ended (its frame is gone) with `error`; `finished` is its handle.
    void on_end(std::coroutine_handle<> finished, std::exception_ptr error) noexcept {
        const bool quiet = detail::is_cancellation(error) && stop_requested();
        if (error && !quiet && !error_) {
            error_ = std::move(error);
            scope_.stop();
        }
        if (size_ == 0 && joiner_ != nullptr) {
            detail::join_awaiter* j = std::exchange(joiner_, nullptr);
            j->waiting_ = false;
            detail::stop_scope::detach(*j);
            detail::resumer::hand_over_final(finished, j->resume_);
        }
    }

    reactor& reactor_;
    detail::stop_scope scope_;
    detail::group_child::promise_type* head_ = nullptr;
    std::size_t size_ = 0;
    std::exception_ptr error_;
    detail::join_awaiter* joiner_ = nullptr;
};

namespace detail {

inline group_child::promise_type::~promise_type() {
    if (group != nullptr) group->unlink(*this);
}

inline void group_child::promise_type::on_end(std::coroutine_handle<promise_type> h) noexcept {
    promise_type& p = h.promise();
    task_group* g = p.group;
    p.root.finish();
    g->unlink(p);
    std::exception_ptr error = std::move(p.error);
    h.destroy();  // the frame (and the task it awaited) is gone before the group hears of it
    g->on_end(h, std::move(error));
}

inline join_awaiter::~join_awaiter() {
    stop_scope::detach(*this);
    if (waiting_) group_->joiner_ = nullptr;  // its coroutine destroyed while it waited
}

inline bool join_awaiter::await_ready() const noexcept { return group_->size_ == 0; }

inline void join_awaiter::begin(std::coroutine_handle<> h, stop_scope* joiner_scope) {
    task_group& g = *group_;
    if (g.joiner_ != nullptr) throw state_error("tisock::task_group::join: another join() is waiting");
    for (stop_scope* s = joiner_scope; s != nullptr; s = s->parent()) {
        if (s == &g.scope_) throw state_error("tisock::task_group::join from one of the group's own children");
    }
    g.joiner_ = this;
    waiting_ = true;
    resume_.handle = h;
    if (joiner_scope == nullptr) return;
    // The stop of the task awaiting join() stops the children.
    if (joiner_scope->stopped()) {
        g.scope_.stop();
        return;
    }
    cancel = [](cancel_hook* hook) noexcept { static_cast<join_awaiter*>(hook)->group_->scope_.stop(); };
    joiner_scope->attach(*this);
}

inline void join_awaiter::await_resume() const {
    if (group_->error_) std::rethrow_exception(std::exchange(group_->error_, nullptr));
}

}  // namespace detail

}  // namespace tisock
