// Helpers shared by the reactor and task tests: a watchdog that turns a hang into a
// failure, an instrumented object to count coroutine-frame lifetimes, a stopwatch, and a
// minimal coroutine type that is not tisock::task (to prove the awaitables are plain).
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <coroutine>
#include <cstdint>
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

// Calls `f`; an `Error` it throws is counted in `caught` and goes no further (for a handler
// or coroutine that makes a call which must be refused, and then carries on).
template <class Error, class F>
void count_throws(int& caught, F&& f) {
    try {
        std::forward<F>(f)();
    } catch (const Error&) {
        ++caught;
    }
}

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

// Runs `body` in a child process (SIGABRT at its default, so that std::terminate kills it),
// which then exits 0; returns its wait status.
template <class Body>
int in_child_process(Body body) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        std::signal(SIGABRT, SIG_DFL);  // doctest's crash handler would turn the abort into an exit
        body();
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    return status;
}

// ---- descriptors -------------------------------------------------------------------------

// Number of descriptors this process has open (entries of /proc/self/fd, minus the one
// opendir itself uses).
inline int open_descriptor_count() {
    DIR* dir = ::opendir("/proc/self/fd");
    REQUIRE_MESSAGE(dir != nullptr, "cannot open /proc/self/fd");
    int n = 0;
    while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] != '.') ++n;
    }
    ::closedir(dir);
    return n - 1;
}

// ---- the end-of-test check ---------------------------------------------------------------

// Every test ends by checking that nothing is left (STYLE.md): every descriptor it opened is
// closed again and, when it has a reactor, the reactor has no work left. The one check is
// check_nothing_left, against a descriptor_baseline taken when the test began:
//  - check_nothing_left(r, fds) (support.hpp) at the end of the body, while the test's
//    sockets and callbacks still exist (the idle check runs the reactor). Take `fds` after
//    constructing the reactor: the reactor's own descriptors are not counted. The
//    socket_test fixture (support.hpp) sets this up.
//  - check_nothing_left(fds): descriptors only, for tests without a reactor or once it is
//    gone (then take `fds` before the reactor: its own descriptors must be closed too).
//  - TEST_CASE_FIXTURE(descriptors_checked, ...): check_nothing_left(fds) by itself, after
//    everything the body made (its reactor too) is destroyed.

// Descriptors open when the test began.
struct descriptor_baseline {
    int before = open_descriptor_count();
    // Opened since, and still open (negative: closed since, that were open before).
    int leaked() const { return open_descriptor_count() - before; }
};

inline void check_nothing_left(const descriptor_baseline& fds) {
    const int leaked = fds.leaked();
    CHECK_MESSAGE(leaked == 0, "descriptors open now minus open when the test began: " << leaked);
}

// check_nothing_left(fds) once the test body and everything it made are gone: a fixture
// (it outlives the body) or the first local of a body. Skipped when the test ends by an
// exception (a failed REQUIRE has reported already).
struct descriptors_checked {
    descriptor_baseline fds;
    descriptors_checked() = default;
    descriptors_checked(const descriptors_checked&) = delete;
    descriptors_checked& operator=(const descriptors_checked&) = delete;
    ~descriptors_checked() {
        if (std::uncaught_exceptions() == 0) check_nothing_left(fds);
    }
};

// A connected, non-blocking AF_UNIX stream pair; close(i) closes one end early.
struct socket_pair {
    int fd[2] = {-1, -1};
    socket_pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd) == 0); }
    socket_pair(const socket_pair&) = delete;
    socket_pair& operator=(const socket_pair&) = delete;
    ~socket_pair() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
    void close(int i) {
        ::close(fd[i]);
        fd[i] = -1;
    }
};

// 127.0.0.1:port.
inline sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

}  // namespace tisock_test
