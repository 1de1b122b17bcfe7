// The stop scope: what a task's stop token is, as seen from the reactor thread, and how an
// operation suspended under it is cancelled. This is the interface the awaitables use.
//
// One stop_scope exists per root task given a token (spawn, sync_wait), per combinator
// (when_all, when_any, with_timeout: its children's scope), per task_group and per
// with_stop_token with a token. Tasks do not copy tokens: a task's promise points at the
// scope it runs under (a task awaited directly gets its awaiter's pointer; no scope at all
// means "no token"), so sharing a token costs a pointer copy, no atomic operation.
//
// A scope holds:
// - the token its tasks see (get_stop_token): the one given to the root, or a combinator's
//   or group's own std::stop_source (a combinator's is made only if someone asks for it);
// - at most one std::stop_callback (the given token's, or a group's parent token). It only
//   posts an intrusive operation (the relay) to the reactor: a stop takes effect from the
//   run loop, never inside request_stop(), which may run on any thread;
// - stopped(): the stop as the reactor thread has seen it (a plain bool, reactor thread only);
// - an intrusive list of cancel hooks: the operations suspended under the scope now, and
//   the scopes of combinators started under it (a combinator's scope stops with its parent).
//
// When the reactor processes the stop (stop()), it sets stopped(), stops its own source, and
// then takes the hooks off the list one at a time and calls each one's `cancel`: a hook is
// detached before its call, and hooks attached or detached during the walk are handled.
//
// How an awaiter observes the token (reactor::sleep_awaiter is the reference user):
//
//     template <class P>
//     bool await_suspend(std::coroutine_handle<P> h) {
//         detail::stop_scope* scope = detail::scope_of(h);   // nullptr: no token, no cost
//         if (scope != nullptr && scope->stopped()) {
//             // Already stopped: do not start. Complete with operation_canceled from the
//             // reactor (defer the completion; never resume `h` inside await_suspend).
//         } else {
//             start the operation;
//             if (scope != nullptr) { hook_.cancel = &on_cancel; scope->attach(hook_); }
//         }
//         return true;
//     }
//     // When the operation completes by itself (before resuming h):
//     //     detail::stop_scope::detach(hook_);           // no-op if not attached
//     // In the awaiter's destructor (a frame destroyed while suspended):
//     //     detail::stop_scope::detach(hook_);
//     static void on_cancel(detail::cancel_hook* h) noexcept {
//         // Already detached. Withdraw the operation by the after-state rules and arrange
//         // its completion with operation_canceled FROM THE RUN LOOP (a deferred report):
//         // never resume a coroutine inside `cancel` - the walk is still going, and a
//         // resumed coroutine could destroy the scope or other hooks under it.
//     }
//
// - The check needs the awaiting coroutine's handle, so it is made in await_suspend: an
//   awaiter that starts its operation in await_ready must start it in await_suspend instead
//   (after the check), or it would start under a stopped token.
// - Check stopped(), not the token: a stop takes effect when the reactor processes it, and a
//   completion delivered before then stands. An operation started between request_stop()
//   and that processing attaches and is cancelled by the walk.
// - Combinators store their arguments: an awaiter must be move-constructible until it is
//   first awaited (a moved-into awaiter has attached nothing yet).
// - scope_of(h) works for every coroutine type: tisock's own promises derive from
//   scoped_promise; any other type (a foreign coroutine) has no token and gets nullptr, at
//   compile time.
// - attach and detach are O(1), allocate nothing and use no atomic. A scope detaches
//   whatever is still attached when it is destroyed, so a later detach is a no-op.
// - Everything here runs on the reactor thread, except the stop callback (any thread).
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <atomic>
#include <coroutine>
#include <optional>
#include <stop_token>
#include <type_traits>

#include <tisock/detail/loop_core.hpp>
#include <tisock/detail/operation.hpp>

namespace tisock::detail {

class stop_scope;

// An operation (or a child scope) that a stop must reach. Lives in the awaiter.
// Only `scope` needs a value before attach() (which sets the links); `cancel` is set by
// the awaiter before it attaches: an operation that never waits under a scope (the common
// case) pays one store.
struct cancel_hook {
    void (*cancel)(cancel_hook* self) noexcept;
    cancel_hook* prev;
    cancel_hook* next;
    stop_scope* scope = nullptr;  // attached to; nullptr when detached

    bool attached() const noexcept { return scope != nullptr; }
};

// Base of every tisock promise type: the scope its coroutine runs under (nullptr: no token).
struct scoped_promise {
    stop_scope* scope = nullptr;
};

// The scope of the coroutine `h`: nullptr for coroutine types that are not tisock's.
template <class P>
stop_scope* scope_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (std::is_base_of_v<scoped_promise, P>) {
        return h.promise().scope;
    } else {
        (void)h;
        return nullptr;
    }
}

// The loop running on this thread (nullptr outside run*()). Never inlined: clang 14 may keep
// a thread_local's address across a suspension of a coroutine resumed on another thread.
[[gnu::noinline]] inline loop_core* current_loop() noexcept { return running_loop; }

class stop_scope {
public:
    struct own_source_t {};
    static constexpr own_source_t own_source{};

    // A combinator's scope: its own token (made on demand), stopped with `parent` (if any).
    explicit stop_scope(stop_scope* parent) noexcept : parent_(parent) {
        if (parent == nullptr) return;
        if (parent->stopped()) {
            stopped_ = true;
        } else {
            parent->attach(link_);
        }
    }

    // A root's scope (spawn, sync_wait, with_stop_token): observes `token`, whose stop is
    // relayed to `loop`. `token` must be able to stop (stop_possible()).
    stop_scope(std::stop_token token, loop_core& loop) : token_(std::move(token)), relay_(new relay(this, loop)) {
        callback_.emplace(token_, stop_callback_fn{this});  // runs at once if already stopped
    }

    // A task_group's scope: its own source (stopped from any thread by request_stop), also
    // stopped by `parent` if it can stop.
    stop_scope(own_source_t, loop_core& loop, const std::stop_token& parent)
        : source_(), token_(source_.get_token()), relay_(new relay(this, loop)) {
        if (parent.stop_possible()) callback_.emplace(parent, stop_callback_fn{this});
    }

    stop_scope(const stop_scope&) = delete;
    stop_scope& operator=(const stop_scope&) = delete;

    ~stop_scope() {
        callback_.reset();  // waits for a callback running on another thread, if any
        if (relay_ != nullptr) {
            // Posted and not yet run (or destroyed with the reactor's queue): the queue owns
            // it and frees it. Otherwise it is ours.
            if (relay_->posted.load(std::memory_order_acquire) && !relay_->done) {
                relay_->target = nullptr;
            } else {
                delete relay_;
            }
        }
        detach(link_);
        while (cancel_hook* h = head_) detach(*h);
    }

    // ---- reactor thread ----------------------------------------------------------------

    // The stop as the reactor has processed it.
    bool stopped() const noexcept { return stopped_; }

    // The token the scope's tasks see.
    std::stop_token token() {
        if (token_.stop_possible()) return token_;
        // A combinator's own source, made when first asked for.
        if (!source_.stop_possible()) {
            source_ = std::stop_source();
            if (stopped_) source_.request_stop();
        }
        return source_.get_token();
    }

    // The scope this one stops with (a combinator's parent), if any.
    stop_scope* parent() const noexcept { return parent_; }

    void attach(cancel_hook& h) noexcept {
        h.scope = this;
        h.prev = nullptr;
        h.next = head_;
        if (head_ != nullptr) head_->prev = &h;
        head_ = &h;
    }

    static void detach(cancel_hook& h) noexcept {
        stop_scope* s = h.scope;
        if (s == nullptr) return;
        (h.prev != nullptr ? h.prev->next : s->head_) = h.next;
        if (h.next != nullptr) h.next->prev = h.prev;
        h.prev = h.next = nullptr;
        h.scope = nullptr;
    }

    // Processes the stop: every operation and child scope under this one is cancelled.
    void stop() noexcept {
        if (stopped_) return;
        stopped_ = true;
        if (source_.stop_possible()) source_.request_stop();
        while (cancel_hook* h = head_) {
            detach(*h);
            h->cancel(h);
        }
    }

    // ---- any thread --------------------------------------------------------------------

    // A group's request_stop(): its own token at once, the hooks from the run loop.
    void request_stop() noexcept {
        source_.request_stop();
        relay_->post();
    }
    // A root's or a group's token (a combinator's scope: always false).
    bool stop_requested() const noexcept { return token_.stop_requested(); }

private:
    // Carries a stop requested on any thread to the reactor thread. Posted at most once.
    // While posted, the reactor's queue owns it; once it ran (or the queue was destroyed) it
    // is the scope's again - unless the scope went first, and then it frees itself.
    struct relay final : operation {
        stop_scope* target;  // reactor thread only; nullptr once the scope is gone
        loop_core* loop;
        std::atomic<bool> posted{false};
        bool done = false;  // reactor thread only

        relay(stop_scope* s, loop_core& l) noexcept : target(s), loop(&l) {
            invoke = [](operation* op, bool run) {
                auto* self = static_cast<relay*>(op);
                stop_scope* scope = self->target;
                if (scope == nullptr) {
                    delete self;
                    return;
                }
                self->done = true;
                if (run) scope->stop();
            };
        }
        void post() noexcept {
            if (!posted.exchange(true, std::memory_order_acq_rel)) loop->post_operation(this);
        }
    };

    struct stop_callback_fn {
        stop_scope* self;
        void operator()() const noexcept {
            if (self->source_.stop_possible()) self->source_.request_stop();
            self->relay_->post();
        }
    };

    // This scope as a hook in its parent's list.
    struct parent_link : cancel_hook {
        stop_scope* self;
        explicit parent_link(stop_scope* s) noexcept : self(s) {
            cancel = [](cancel_hook* h) noexcept { static_cast<parent_link*>(h)->self->stop(); };
        }
    };

    std::stop_source source_{std::nostopstate};  // own: a combinator's (on demand), a group's
    std::stop_token token_;                       // what the tasks see, if made at construction
    std::optional<std::stop_callback<stop_callback_fn>> callback_;
    relay* relay_ = nullptr;  // set at construction, with the callback or a group
    stop_scope* parent_ = nullptr;
    cancel_hook* head_ = nullptr;
    parent_link link_{this};
    bool stopped_ = false;
};

}  // namespace tisock::detail
