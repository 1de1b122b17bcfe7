// Helpers of the fault suite (tests/faults/), on top of the socket tests' helpers
// (tests/support.hpp: the end-of-test check, addresses, stopwatch, send_all, ...): running
// the reactor for a bounded time, raw loopback peers made with plain system calls (the
// library is never its own peer when a fault is injected on the other side), the
// fault-hook switch, CPU time, and running a body inside a private network namespace.
//
// Compiled with -DTISOCK_FAULT_INJECTION (tests/meson.build), so detail::sys::fault_hook
// exists.
#pragma once

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <tisock/tisock.hpp>

#include "../support.hpp"

namespace fault_test {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
// The shared helpers the fault tests use (named one by one: run_until and raw_listener
// mean something else here, see below).
using tisock_test::bytes_of;
using tisock_test::check_nothing_left;
using tisock_test::closed_port;
using tisock_test::descriptor_baseline;
using tisock_test::descriptors_checked;
using tisock_test::port_of;
using tisock_test::send_all;
using tisock_test::set_linger_zero;
using tisock_test::stopwatch;
using tisock_test::test_clock;

// ---- descriptors and CPU time --------------------------------------------------------------

// Waits until the descriptors are back to `fds`, for at most `limit`: the resolver thread may
// hold a descriptor for a moment while getaddrinfo reads /etc/hosts. (check_nothing_left
// afterwards says whether they came back.)
inline void wait_for_descriptors(const descriptor_baseline& fds, milliseconds limit = 2s) {
    auto end = test_clock::now() + limit;
    while (fds.leaked() != 0 && test_clock::now() < end) std::this_thread::sleep_for(5ms);
}

// User + system CPU time of the whole process, in seconds.
inline double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// ---- running the reactor ---------------------------------------------------------------------

inline tisock::task<void> sleep_task(tisock::reactor& r, std::chrono::nanoseconds d) { co_await r.sleep_for(d); }

// Runs `r` for `d` even when it has no other work: a listener only drains its kernel
// queue while the reactor runs, and run_for() returns at once without work.
inline void pump(tisock::reactor& r, milliseconds d) { tisock::sync_wait(r, sleep_task(r, d)); }

// Runs `r` until `done()` holds; false if it still does not after `limit` (a hang).
// Unlike tisock_test::run_until, done() is checked after every poll() (not after up to
// 10 ms of handlers), and an idle reactor keeps running (pump) instead of being left
// while the test sleeps.
template <class Pred>
bool run_until(tisock::reactor& r, Pred done, milliseconds limit = 5s) {
    auto end = test_clock::now() + limit;
    while (!done()) {
        if (test_clock::now() >= end) return false;
        if (r.poll() == 0) pump(r, 1ms);  // nothing ready: wait a little (listeners drain meanwhile)
    }
    return true;
}

// ---- raw peers (plain system calls, blocking unless said otherwise) -------------------------

class raw_fd {
public:
    raw_fd() = default;
    explicit raw_fd(int fd) noexcept : fd_(fd) {}
    raw_fd(raw_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    raw_fd& operator=(raw_fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~raw_fd() { reset(); }
    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    void reset() noexcept {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }

private:
    int fd_ = -1;
};

// A listening socket on host:0 (or `port`) with the given kernel backlog.
inline raw_fd raw_listener(std::string_view host, int backlog, int& port_out, int port = 0) {
    sockaddr_storage s;
    socklen_t n = tisock_test::fill_address(host, port, s);
    raw_fd fd(::socket(s.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&s), n) != 0 || ::listen(fd.get(), backlog) != 0) return {};
    port_out = port_of(fd.get());
    return fd;
}

// Connects a socket; `nonblocking` returns at once (the handshake goes on in the kernel).
inline raw_fd raw_connect(std::string_view host, int port, bool nonblocking = false) {
    sockaddr_storage s;
    socklen_t n = tisock_test::fill_address(host, port, s);
    raw_fd fd(::socket(s.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&s), n) != 0 && errno != EINPROGRESS) return {};
    return fd;
}

inline bool wait_fd(int fd, short events, milliseconds limit) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, int(limit.count())) == 1;
}

inline raw_fd raw_accept(int listener, milliseconds limit = 2s) {
    if (!wait_fd(listener, POLLIN, limit)) return {};
    return raw_fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// Reads until end of stream, an error, or `limit`; returns what arrived.
inline std::string raw_read_to_eof(int fd, milliseconds limit = 10s, int* error = nullptr) {
    std::string out;
    char chunk[65536];
    auto end = test_clock::now() + limit;
    while (test_clock::now() < end) {
        if (!wait_fd(fd, POLLIN, 50ms)) continue;
        ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0) {
            out.append(chunk, std::size_t(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n < 0 && error != nullptr) *error = errno;
        break;
    }
    return out;
}

// ---- the fault hook ---------------------------------------------------------------------------

using fault_rule = std::function<bool(tisock::detail::sys::call, std::size_t&, long&, int&)>;
inline fault_rule active_rule;

inline bool dispatch_fault(tisock::detail::sys::call c, std::size_t& length, long& value, int& error) {
    return active_rule && active_rule(c, length, value, error);
}

// Installs `rule` as the library's fault hook for the scope's lifetime.
class fault_scope {
public:
    explicit fault_scope(fault_rule rule) {
        active_rule = std::move(rule);
        tisock::detail::sys::fault_hook = &dispatch_fault;
    }
    fault_scope(const fault_scope&) = delete;
    fault_scope& operator=(const fault_scope&) = delete;
    ~fault_scope() {
        tisock::detail::sys::fault_hook = nullptr;
        active_rule = nullptr;
    }
};

// Fails the call with `error` (the call never reaches the kernel).
inline bool inject(long& value, int& error, int e) {
    value = -1;
    error = e;
    return true;
}

// ---- private network namespaces ---------------------------------------------------------------

struct netns_outcome {
    bool skipped = false;
    std::string failure;  // empty: the body passed
};

inline bool bring_loopback_up() {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    bool ok = ::ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags = short(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    ok = ok && ::ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
    ::close(fd);
    return ok;
}

// Runs `body` in a forked child inside a fresh network namespace (only `lo`, brought up).
// The body returns "" on success or a description of the failure. Never falls back to the
// real network: when the namespace cannot be made (not root, no CLONE_NEWNET) the outcome
// is `skipped`. A child that does not finish within `limit` is killed: a failure.
inline netns_outcome run_in_netns(const std::function<std::string()>& body, milliseconds limit = 20s) {
    netns_outcome out;
    if (::geteuid() != 0) {
        out.skipped = true;
        out.failure = "not root: cannot create a network namespace";
        return out;
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        out.failure = "pipe2 failed";
        return out;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipe_fds[0]);
        std::string message;
        int code = 0;
        if (::unshare(CLONE_NEWNET) != 0) {
            message = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
            code = 77;
        } else if (!bring_loopback_up()) {
            message = "cannot bring lo up in the namespace";
            code = 77;
        } else {
            try {
                message = body();
            } catch (const std::exception& e) {
                message = std::string("exception: ") + e.what();
            }
            code = message.empty() ? 0 : 1;
        }
        (void)!::write(pipe_fds[1], message.data(), message.size());
        ::_exit(code);  // no atexit handlers, no doctest teardown in the child
    }
    ::close(pipe_fds[1]);
    int status = 0;
    auto end = test_clock::now() + limit;
    pid_t done = 0;
    while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && test_clock::now() < end) std::this_thread::sleep_for(5ms);
    if (done == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        ::close(pipe_fds[0]);
        out.failure = "the namespace child did not finish in time (hang)";
        return out;
    }
    char buf[1024];
    ssize_t n = 0;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) out.failure.append(buf, std::size_t(n));
    ::close(pipe_fds[0]);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        out.skipped = true;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (out.failure.empty()) out.failure = "the namespace child crashed (status " + std::to_string(status) + ")";
    } else {
        out.failure.clear();
    }
    return out;
}

// A namespace test's verdict: its failure checked, or, when it was skipped, a message saying why.
inline void check_netns(const netns_outcome& o) {
    if (o.skipped) {
        MESSAGE("skipped: " << o.failure);
    } else {
        CHECK_MESSAGE(o.failure.empty(), o.failure);
    }
}

}  // namespace fault_test
