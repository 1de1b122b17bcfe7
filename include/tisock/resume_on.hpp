// tisock::resume_on - co_await resume_on(other): the coroutine goes on on other's thread.
//
// The awaiter is the operation posted to `other` (no allocation): queued, it counts as
// other's work until the coroutine resumes from other's run loop, never inline. A task
// remembers the loop its awaiter awaited from and, when it finishes elsewhere, posts the
// awaiter back there (task.hpp: sticky tasks), so resume_on never leaks into the caller.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <coroutine>

#include <tisock/detail/loop_core.hpp>
#include <tisock/detail/operation.hpp>
#include <tisock/reactor.hpp>

namespace tisock {

namespace detail {

class [[nodiscard]] resume_on_awaiter : operation {
public:
    explicit resume_on_awaiter(loop_core& target) noexcept : target_(&target) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        waiter_ = h;
        invoke = [](operation* op, bool run) {
            // run == false: `other` is destroyed first (a broken precondition); the frame
            // belongs to its own root and is not touched here.
            if (run) static_cast<resume_on_awaiter*>(op)->waiter_.resume();
        };
        post(*target_, *this);
    }
    void await_resume() const noexcept {}

private:
    // Never inlined: post_operation reads a thread_local, and this coroutine may have
    // resumed on another thread since its last suspension (clang 14 may keep the address).
    [[gnu::noinline]] static void post(loop_core& target, operation& op) { target.post_operation(&op); }

    loop_core* target_;
    std::coroutine_handle<> waiter_;
};

}  // namespace detail

// co_await resume_on(other): resumes the awaiting coroutine from a handler posted to `other`
// (thread-safe); `other` must outlive the wait.
inline detail::resume_on_awaiter resume_on(reactor& other) noexcept {
    return detail::resume_on_awaiter(detail::reactor_access::core(other));
}

}  // namespace tisock
