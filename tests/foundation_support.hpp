// Helpers shared by the reactor and task tests: a watchdog that turns a hang into a
// failure, an instrumented object to count coroutine-frame lifetimes, a stopwatch, and a
// minimal coroutine type that is not tisock::task (to prove the awaitables are plain).
#pragma once

#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

namespace tisock_test {

using test_clock = std::chrono::steady_clock;

// Aborts the whole test executable if the scope is not left within `limit`. meson's
// per-executable timeout would also catch a hang, but only after minutes and without
// saying which test hung.
class watchdog {
public:
    explicit watchdog(std::chrono::milliseconds limit, const char* what = "test") : thread_([this, limit, what] {
        std::unique_lock lock(mutex_);
        if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "watchdog: %s did not finish within %lld ms (hang)\n", what,
                         static_cast<long long>(limit.count()));
            std::fflush(stderr);
            std::abort();
        }
    }) {}
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;  // last: starts after the other members exist
};

// Counts its constructions and destructions; put one in a coroutine frame to prove the
// frame was destroyed (and under ASan, that nothing leaked).
struct tracked {
    static inline int constructed = 0;
    static inline int destroyed = 0;
    static void reset() noexcept { constructed = destroyed = 0; }
    static int alive() noexcept { return constructed - destroyed; }

    tracked() noexcept { ++constructed; }
    tracked(const tracked&) noexcept { ++constructed; }
    tracked(tracked&&) noexcept { ++constructed; }
    tracked& operator=(const tracked&) = default;
    tracked& operator=(tracked&&) = default;
    ~tracked() { ++destroyed; }
};

class stopwatch {
public:
    std::chrono::milliseconds elapsed() const {
        return std::chrono::duration_cast<std::chrono::milliseconds>(test_clock::now() - start_);
    }

private:
    test_clock::time_point start_ = test_clock::now();
};

// A coroutine type unrelated to tisock::task: eager, owned by the caller through the
// handle (destroy() it when done or to abandon it). Exceptions are stored in the frame.
struct foreign_coroutine {
    struct promise_type {
        std::exception_ptr error;
        foreign_coroutine get_return_object() noexcept {
            return foreign_coroutine{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_never initial_suspend() const noexcept { return {}; }
        std::suspend_always final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() noexcept { error = std::current_exception(); }
    };

    explicit foreign_coroutine(std::coroutine_handle<promise_type> h) noexcept : handle(h) {}
    foreign_coroutine(foreign_coroutine&& other) noexcept : handle(std::exchange(other.handle, {})) {}
    foreign_coroutine& operator=(foreign_coroutine&&) = delete;
    ~foreign_coroutine() {
        if (handle) handle.destroy();
    }
    bool done() const noexcept { return handle.done(); }
    // Destroys the frame now (abandons it if it is suspended).
    void destroy() noexcept {
        if (handle) std::exchange(handle, {}).destroy();
    }

    std::coroutine_handle<promise_type> handle;
};

}  // namespace tisock_test
