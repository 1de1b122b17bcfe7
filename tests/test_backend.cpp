// The reactor backend on its own (tisock::detail::backend: epoll, or kqueue over the test
// emulation with -Dreactor_backend=kqueue-emulation; built with the self-pipe wake-up too). The
// same expectations hold for both: that is the contract the reactor is written against.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <system_error>
#include <thread>
#include <type_traits>

#include "tisock/detail/backend.hpp"

#include "foundation_support.hpp"

namespace {

using tisock::detail::backend;
using tisock::detail::descriptor_state;
using tisock::detail::ready_event;
using tisock_test::check_nothing_left;
using tisock_test::descriptors_checked;
using tisock_test::loopback;
using tisock_test::socket_pair;
namespace sys = tisock::detail::sys;
using clock_type = std::chrono::steady_clock;

// One wait(), with every event translated into `out` (as the reactor does one by one).
std::size_t wait_into(backend& b, ready_event* out, int timeout_ms) {
    std::size_t n = b.wait(timeout_ms);
    for (std::size_t i = 0; i < n; ++i) out[i] = b.event(i);
    return n;
}

// What one or more wait() calls reported for one descriptor (or for wake-ups: d == nullptr).
struct seen {
    int events = 0;
    bool readable = false;
    bool writable = false;
    bool hung_up = false;
};

// Waits until `done(s)` holds for what was reported about `d`, or `limit` passes.
template <class Done>
seen wait_for(backend& b, descriptor_state* d, Done done, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    seen s;
    auto deadline = clock_type::now() + limit;
    ready_event out[backend::max_events];
    while (!done(s)) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
        if (left <= 0) break;
        std::size_t n = wait_into(b, out, int(left));
        for (std::size_t i = 0; i < n; ++i) {
            if (out[i].d != d) continue;
            ++s.events;
            s.readable = s.readable || out[i].readable;
            s.writable = s.writable || out[i].writable;
            s.hung_up = s.hung_up || out[i].hung_up;
        }
    }
    return s;
}

// Everything reported about `d` within `window` (used to drain, or to prove silence).
seen collect(backend& b, descriptor_state* d, std::chrono::milliseconds window) {
    return wait_for(b, d, [](const seen&) { return false; }, window);
}

// A non-blocking listener on 127.0.0.1 and its port.
int listen_loopback(std::uint16_t& port) {
    sys::result s = sys::socket(AF_INET);
    REQUIRE(s);
    int fd = int(s.value);
    REQUIRE(sys::set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1));
    sockaddr_in a = loopback(0);
    REQUIRE(sys::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a));
    REQUIRE(sys::listen(fd, 16));
    sockaddr_storage bound{};
    REQUIRE(sys::getsockname(fd, bound));
    port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    return fd;
}

// A 127.0.0.1 port with no listener: bound, then released.
std::uint16_t closed_port() {
    std::uint16_t port = 0;
    int fd = listen_loopback(port);
    ::close(fd);
    return port;
}

#if defined(TISOCK_BACKEND_KQUEUE_EMULATION)
static_assert(std::is_same_v<backend, tisock::detail::kqueue_backend>, "the emulation build must test kqueue.hpp");
#elif defined(__linux__)
static_assert(std::is_same_v<backend, tisock::detail::epoll_backend>, "a native Linux build tests epoll.hpp");
#endif

// A backend with one end of a socket pair registered (d), checked for leaked descriptors.
struct registered_pair_test : descriptors_checked {
    backend b;
    socket_pair p;
    descriptor_state d;
    registered_pair_test() {
        d.fd = p.fd[0];
        REQUIRE(b.register_descriptor(d) == 0);
    }
};

}  // namespace

TEST_CASE_FIXTURE(registered_pair_test, "a registered socket reports writable, then readable when data arrives") {

    seen initial = wait_for(b, &d, [](const seen& s) { return s.writable; });
    CHECK(initial.writable);
    CHECK_FALSE(initial.readable);
    CHECK_FALSE(initial.hung_up);

    REQUIRE(::write(p.fd[1], "abc", 3) == 3);
    seen data = wait_for(b, &d, [](const seen& s) { return s.readable; });
    CHECK(data.readable);
    CHECK_FALSE(data.hung_up);

    // Edge-triggered: unread data is not reported again without a new arrival.
    CHECK(collect(b, &d, std::chrono::milliseconds(50)).readable == false);
    REQUIRE(::write(p.fd[1], "d", 1) == 1);
    CHECK(wait_for(b, &d, [](const seen& s) { return s.readable; }).readable);

    // The peer's shutdown is a hang-up on the read side.
    REQUIRE(::shutdown(p.fd[1], SHUT_WR) == 0);
    seen eof = wait_for(b, &d, [](const seen& s) { return s.readable && s.hung_up; });
    CHECK(eof.readable);
    CHECK(eof.hung_up);
    b.deregister_descriptor(d);
}

TEST_CASE_FIXTURE(descriptors_checked, "wake() from another thread ends a blocked wait") {
    backend b;
    auto start = clock_type::now();
    std::thread waker([&b] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        b.wake();
    });
    seen woken = wait_for(b, nullptr, [](const seen& s) { return s.events > 0; });
    waker.join();
    CHECK(woken.events == 1);
    CHECK(clock_type::now() - start < std::chrono::seconds(4));

    // Consumed: the next poll is quiet.
    CHECK(collect(b, nullptr, std::chrono::milliseconds(20)).events == 0);

    // A wake-up before the wait is kept until a wait collects it, and several coalesce.
    b.wake();
    b.wake();
    b.wake();
    CHECK(collect(b, nullptr, std::chrono::milliseconds(50)).events == 1);
}

TEST_CASE("many wake() calls from several threads never lose the last one") {
    backend b;
    std::atomic<int> done{0};
    constexpr int threads = 4;
    constexpr int per_thread = 2000;
    std::thread t[threads];
    for (auto& th : t)
        th = std::thread([&] {
            for (int i = 0; i < per_thread; ++i) b.wake();
            done.fetch_add(1);
        });
    int wakeups = 0;
    ready_event out[backend::max_events];
    while (done.load() < threads) {
        std::size_t n = wait_into(b, out, 1000);
        for (std::size_t i = 0; i < n; ++i) wakeups += out[i].d == nullptr;
    }
    for (auto& th : t) th.join();
    // Whatever raced with the last check. Counted: the threads may all finish before the
    // loop above first looks (often under TSan), and then this wait is the only one.
    std::size_t n = wait_into(b, out, 0);
    for (std::size_t i = 0; i < n; ++i) wakeups += out[i].d == nullptr;
    CHECK(wakeups >= 1);
    b.wake();
    CHECK(collect(b, nullptr, std::chrono::milliseconds(100)).events == 1);
}

TEST_CASE_FIXTURE(registered_pair_test, "a closed descriptor produces no further events, even when its number is reused") {
    (void)collect(b, &d, std::chrono::milliseconds(20));

    int number = p.fd[0];
    b.deregister_descriptor(d);
    p.close(0);
    d.fd = -1;
    (void)::shutdown(p.fd[1], SHUT_RDWR);  // would be a hang-up for a live descriptor
    CHECK(collect(b, &d, std::chrono::milliseconds(50)).events == 0);

    // The number comes back for a new socket: the old registration must not follow it.
    socket_pair q;
    REQUIRE(q.fd[0] == number);
    REQUIRE(::write(q.fd[1], "x", 1) == 1);
    CHECK(collect(b, &d, std::chrono::milliseconds(50)).events == 0);

    // ...and the new socket can be registered under the same number.
    descriptor_state e;
    e.fd = q.fd[0];
    REQUIRE(b.register_descriptor(e) == 0);
    seen s = wait_for(b, &e, [](const seen& x) { return x.readable && x.writable; });
    CHECK(s.readable);
    CHECK(s.writable);
}

TEST_CASE_FIXTURE(descriptors_checked, "a listening socket is readable when a connection arrives") {
    backend b;
    std::uint16_t port = 0;
    descriptor_state listener;
    listener.fd = listen_loopback(port);
    REQUIRE(b.register_descriptor(listener) == 0);
    CHECK_FALSE(collect(b, &listener, std::chrono::milliseconds(20)).readable);

    sys::result c = sys::socket(AF_INET);
    REQUIRE(c);
    sockaddr_in a = loopback(port);
    sys::result r = sys::connect(int(c.value), reinterpret_cast<sockaddr*>(&a), sizeof a);
    CHECK((r || r.error == EINPROGRESS));

    CHECK(wait_for(b, &listener, [](const seen& s) { return s.readable; }).readable);
    sockaddr_storage peer{};
    sys::result accepted = sys::accept(listener.fd, &peer);
    REQUIRE(accepted);
    CHECK(reinterpret_cast<sockaddr_in*>(&peer)->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    // Accepted sockets are non-blocking on every platform (BSD: no accept4, fcntl instead).
    CHECK((::fcntl(int(accepted.value), F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(int(accepted.value), F_GETFD) & FD_CLOEXEC) != 0);

    ::close(int(accepted.value));
    ::close(int(c.value));
    ::close(listener.fd);
}

TEST_CASE_FIXTURE(descriptors_checked, "a refused connect is reported writable, with SO_ERROR = ECONNREFUSED") {
    backend b;
    sockaddr_in a = loopback(closed_port());
    sys::result c = sys::socket(AF_INET);
    REQUIRE(c);
    descriptor_state d;
    d.fd = int(c.value);
    sys::result r = sys::connect(d.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (r || r.error != EINPROGRESS) {
        MESSAGE("connect() to a closed loopback port finished synchronously (error ", r.error,
                "): the asynchronous report cannot be tested here");
        CHECK((r.error == ECONNREFUSED));
    } else {
        REQUIRE(b.register_descriptor(d) == 0);
        seen s = wait_for(b, &d, [](const seen& x) { return x.writable && x.hung_up; });
        CHECK(s.writable);
        CHECK(s.hung_up);
        CHECK(sys::socket_error(d.fd) == ECONNREFUSED);
    }
    ::close(d.fd);
}

#ifdef TISOCK_FAULT_INJECTION
namespace {
sys::call failing_call{};
int failing_errno = 0;
bool fail_once(sys::call c, std::size_t&, long& value, int& error) {
    if (c != failing_call || failing_errno == 0) return false;
    value = -1;
    error = failing_errno;
    failing_errno = 0;
    return true;
}
struct fault_scope {
    fault_scope(sys::call c, int err) {
        failing_call = c;
        failing_errno = err;
        sys::fault_hook = fail_once;
    }
    ~fault_scope() { sys::fault_hook = nullptr; }
};
}  // namespace

TEST_CASE_FIXTURE(descriptors_checked, "a backend whose poller or wake-up cannot be made throws system_error and leaks nothing") {
    for (sys::call c : {sys::call::poller_create, sys::call::wake_create}) {
        fault_scope f(c, EMFILE);
        CHECK_THROWS_AS(backend{}, std::system_error);
        check_nothing_left(fds);
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "failing backend calls: EINTR is an empty wait, other wait errors throw, registration returns the errno") {
    backend b;
    {
        fault_scope f(sys::call::poller_wait, EINTR);
        ready_event out[backend::max_events];
        CHECK(wait_into(b, out, 1000) == 0);
    }
    {
        fault_scope f(sys::call::poller_wait, EBADF);
        ready_event out[backend::max_events];
        CHECK_THROWS_AS(wait_into(b, out, 0), std::system_error);
    }
    socket_pair p;
    descriptor_state d;
    d.fd = p.fd[0];
    {
        fault_scope f(sys::call::poller_ctl, ENOMEM);
        CHECK(b.register_descriptor(d) == ENOMEM);
    }
    CHECK(b.register_descriptor(d) == 0);
}
#endif
