// Helpers shared by the socket tests: loopback listeners, a bounded run loop, an
// open-descriptor counter, a guard for spawned coroutines, and a raw blocking peer built
// on plain POSIX sockets (so the library is checked against something it did not write).
//
// Every helper is bounded in time: a hang becomes a failed REQUIRE, never a stuck test.
// Traffic goes to 127.0.0.1 and ::1 only. SIGPIPE is left alone on purpose: the library
// must never raise it, and a test that ignored it would hide exactly that bug.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include <tisock/tisock.hpp>

#include "foundation_support.hpp"

namespace tisock_test {

using namespace std::chrono_literals;

// ---- descriptors -------------------------------------------------------------------------

// open_descriptor_count(), descriptor_baseline, check_nothing_left(fds): in
// foundation_support.hpp.

inline bool descriptor_is_open(int fd) { return fd >= 0 && ::fcntl(fd, F_GETFD) != -1; }

// ---- the run loop ------------------------------------------------------------------------

// Runs `r` until `done()` holds or `limit` passes; returns done(). The reactor may run out
// of work while a raw peer thread is still acting, so an idle reactor is polled, not left.
template <class Predicate>
bool run_until(tisock::reactor& r, Predicate done, std::chrono::milliseconds limit = 5000ms) {
    auto deadline = test_clock::now() + limit;
    while (!done()) {
        if (test_clock::now() >= deadline) return false;
        if (r.run_for(10ms) == 0) std::this_thread::sleep_for(1ms);
    }
    return true;
}

// Runs `r` for `d`, whatever happens (to prove that something does NOT happen).
inline void run_for_at_least(tisock::reactor& r, std::chrono::milliseconds d) {
    auto deadline = test_clock::now() + d;
    while (test_clock::now() < deadline) {
        if (r.run_for(5ms) == 0) std::this_thread::sleep_for(1ms);
    }
}

// True when the reactor has no work left: run_for(3 s) returns at once (within 1 s; a
// reactor with work blocks until its work is done or the 3 s are over).
inline bool reactor_is_idle(tisock::reactor& r) {
    stopwatch t;
    r.run_for(3000ms);
    return t.elapsed() < 1000ms;
}

// The end of every test (see descriptor_baseline in foundation_support.hpp): nothing pending
// in the reactor, no descriptor opened since `fds` left open.
inline void check_nothing_left(tisock::reactor& r, const descriptor_baseline& fds) {
    CHECK_MESSAGE(reactor_is_idle(r), "the reactor still has pending work");
    check_nothing_left(fds);
}

// The setup most socket tests share (TEST_CASE_FIXTURE(socket_test, ...)): a 20 s watchdog,
// a reactor, and the descriptor baseline taken after it (its own descriptors are not
// counted). The test itself still ends with check_nothing_left(r, fds), while its sockets live.
struct socket_test {
    watchdog wd{20s};
    tisock::reactor r;
    descriptor_baseline fds;
};

// ---- coroutines --------------------------------------------------------------------------

// What a spawned test coroutine ended with. Exceptions are caught (an exception escaping a
// spawned task would terminate the test program).
struct outcome {
    bool done = false;
    std::exception_ptr error;

    // The error code of the std::system_error it ended with ({} if none or another type).
    std::error_code code() const {
        if (!error) return {};
        try {
            std::rethrow_exception(error);
        } catch (const std::system_error& e) {
            return e.code();
        } catch (...) {
            return {};
        }
    }
    std::string what() const {
        if (!error) return "no exception";
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            return e.what();
        } catch (...) {
            return "unknown exception";
        }
    }
    template <class E>
    bool threw() const {
        if (!error) return false;
        try {
            std::rethrow_exception(error);
        } catch (const E&) {
            return true;
        } catch (...) {
            return false;
        }
    }
};

inline tisock::task<void> guarded(tisock::task<void> t, outcome& out) {
    try {
        co_await std::move(t);
    } catch (...) {
        out.error = std::current_exception();
    }
    out.done = true;
}

// Spawns `t` on `r`; `out` records its end. (Coroutine lambdas in the tests take their
// state as parameters, never as captures: the closure is a temporary.)
inline void start(tisock::reactor& r, tisock::task<void> t, outcome& out) { tisock::spawn(r, guarded(std::move(t), out)); }

// ---- loopback ----------------------------------------------------------------------------

// Whether ::1 can be bound on this machine (containers without IPv6 exist).
inline bool ipv6_loopback_available() {
    int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

// Expands to a `const char* host` that is "127.0.0.1" in one doctest subcase and "::1" in
// the other; the ::1 run is skipped with a message when the machine has no IPv6 loopback.
#define TISOCK_LOOPBACK_HOSTS(host)                                                  \
    const char* host = "127.0.0.1";                                                  \
    SUBCASE("127.0.0.1") { host = "127.0.0.1"; }                                     \
    SUBCASE("::1") { host = "::1"; }                                                 \
    if (std::string(host) == "::1" && !::tisock_test::ipv6_loopback_available()) {   \
        MESSAGE("skipped: ::1 cannot be bound on this machine (no IPv6 loopback)"); \
        return;                                                                      \
    }

// As TISOCK_LOOPBACK_HOSTS, crossed with the two styles: `coroutine_style` is false in
// the "callbacks" subcase and true in the "co_await" one (nested under each host, so
// doctest runs all four combinations).
#define TISOCK_LOOPBACK_HOSTS_AND_STYLES(host, coroutine_style)                      \
    const char* host = "127.0.0.1";                                                  \
    bool coroutine_style = false;                                                    \
    SUBCASE("127.0.0.1") {                                                           \
        host = "127.0.0.1";                                                          \
        SUBCASE("callbacks") { coroutine_style = false; }                            \
        SUBCASE("co_await") { coroutine_style = true; }                              \
    }                                                                                \
    SUBCASE("::1") {                                                                 \
        host = "::1";                                                                \
        SUBCASE("callbacks") { coroutine_style = false; }                            \
        SUBCASE("co_await") { coroutine_style = true; }                              \
    }                                                                                \
    if (std::string(host) == "::1" && !::tisock_test::ipv6_loopback_available()) {   \
        MESSAGE("skipped: ::1 cannot be bound on this machine (no IPv6 loopback)"); \
        return;                                                                      \
    }

// A listening tisock socket on host:0 (the kernel picks the port).
inline tisock::tcp make_listener(tisock::reactor& r, const std::string& host, tisock::tcp_options options = {}) {
    options.host = host;
    options.port = 0;
    tisock::tcp listener(r, std::move(options));
    listener.listen();
    REQUIRE(listener.state() == tisock::state::listening);
    REQUIRE(listener.port() > 0);
    return listener;
}

// Fills `s` with host:port (a numeric IPv4 or IPv6 address); returns the address size,
// or 0 when `host` is not one. Asserts nothing: usable from a helper thread or a forked
// child (run_in_netns in the fault suite).
inline socklen_t fill_address(std::string_view host, int port, sockaddr_storage& s) {
    s = {};
    const std::string h(host);
    if (host.find(':') != std::string_view::npos) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&s);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(std::uint16_t(port));
        return ::inet_pton(AF_INET6, h.c_str(), &a->sin6_addr) == 1 ? socklen_t(sizeof(sockaddr_in6)) : 0;
    }
    auto* a = reinterpret_cast<sockaddr_in*>(&s);
    a->sin_family = AF_INET;
    a->sin_port = htons(std::uint16_t(port));
    return ::inet_pton(AF_INET, h.c_str(), &a->sin_addr) == 1 ? socklen_t(sizeof(sockaddr_in)) : 0;
}

inline sockaddr_storage make_address(const std::string& host, int port, socklen_t& size) {
    sockaddr_storage s{};
    size = fill_address(host, port, s);
    REQUIRE(size != 0);
    return s;
}

// The local port of a socket (0 when getsockname fails). Asserts nothing.
inline int port_of(int fd) {
    sockaddr_storage s{};
    socklen_t n = sizeof s;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&s), &n) != 0) return 0;
    return s.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&s)->sin6_port)
                                   : ntohs(reinterpret_cast<sockaddr_in*>(&s)->sin_port);
}

// SO_RCVTIMEO: a blocking recv() or accept() on `fd` gives up after `t`.
inline void set_receive_timeout(int fd, std::chrono::milliseconds t) {
    timeval tv{};
    tv.tv_sec = long(t.count() / 1000);
    tv.tv_usec = long(t.count() % 1000) * 1000;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// Makes the next close() send a reset (RST) instead of a FIN.
inline void set_linger_zero(int fd) {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

// Sends all of `data` (blocking; MSG_NOSIGNAL: the test's own peer must not raise SIGPIPE
// either). False when the connection failed first. Asserts nothing.
inline bool send_all(int fd, std::string_view data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
        ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        sent += std::size_t(n);
    }
    return true;
}

// A port on `host` that nobody listens on: bound by a throwaway socket, then released
// (a connect to it is refused).
inline int closed_port(const std::string& host) {
    socklen_t size = 0;
    sockaddr_storage s = make_address(host, 0, size);
    int fd = ::socket(s.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&s), size) == 0);
    int port = port_of(fd);
    ::close(fd);
    REQUIRE(port > 0);
    return port;
}

// ---- a raw blocking peer -----------------------------------------------------------------

// A plain POSIX socket in blocking mode, with a receive timeout so nothing blocks forever.
// Usable from a helper thread (it touches no tisock state).
class raw_peer {
public:
    raw_peer() = default;
    explicit raw_peer(int fd) : fd_(fd) { tisock_test::set_receive_timeout(fd_, 5000ms); }
    raw_peer(raw_peer&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    raw_peer& operator=(raw_peer&& o) noexcept {
        std::swap(fd_, o.fd_);
        return *this;
    }
    ~raw_peer() { close(); }

    // Connects (blocking) to host:port; `receive_buffer` > 0 sets SO_RCVBUF first.
    static raw_peer connect(const std::string& host, int port, int receive_buffer = 0) {
        socklen_t size = 0;
        sockaddr_storage s = make_address(host, port, size);
        int fd = ::socket(s.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        if (receive_buffer > 0) {
            REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer) == 0);
        }
        int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&s), size);
        REQUIRE_MESSAGE(rc == 0, "raw connect failed: " << std::strerror(errno));
        return raw_peer(fd);
    }

    int fd() const noexcept { return fd_; }
    bool is_open() const noexcept { return fd_ >= 0; }

    void set_receive_timeout(std::chrono::milliseconds t) { tisock_test::set_receive_timeout(fd_, t); }

    bool send_all(std::string_view data) { return tisock_test::send_all(fd_, data); }

    // One recv(): the bytes, "" at end of stream; -1 in `status` on error/timeout.
    std::string receive_some(std::size_t max = 65536, int* status = nullptr) {
        std::string out(max, '\0');
        ssize_t n;
        do {
            n = ::recv(fd_, out.data(), max, 0);
        } while (n < 0 && errno == EINTR);
        if (status != nullptr) *status = n < 0 ? -1 : int(n);
        out.resize(n > 0 ? std::size_t(n) : 0);
        return out;
    }

    // Reads until end of stream (or error/timeout); `eof` tells which.
    std::string receive_all(bool* eof = nullptr) {
        std::string all;
        for (;;) {
            int status = 0;
            std::string part = receive_some(65536, &status);
            if (status <= 0) {
                if (eof != nullptr) *eof = status == 0;
                return all;
            }
            all += part;
        }
    }

    // Reads exactly n bytes (fewer on end of stream, error or timeout).
    std::string receive_exactly(std::size_t n) {
        std::string all;
        while (all.size() < n) {
            int status = 0;
            std::string part = receive_some(n - all.size(), &status);
            if (status <= 0) break;
            all += part;
        }
        return all;
    }

    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

    // Closes with SO_LINGER 0: the other side sees a reset.
    void reset() {
        set_linger_zero(fd_);
        close();
    }

    void close() {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }

private:
    int fd_ = -1;
};

// A plain POSIX listener on host:0.
class raw_listener {
public:
    // `receive_buffer` > 0 sets SO_RCVBUF on the listener, so accepted sockets advertise a
    // small window from their first segment on (setting it after accept is too late).
    explicit raw_listener(const std::string& host, int backlog = 16, int receive_buffer = 0) : host_(host) {
        socklen_t size = 0;
        sockaddr_storage s = make_address(host, 0, size);
        fd_ = ::socket(s.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        if (receive_buffer > 0) {
            REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer) == 0);
        }
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&s), size) == 0);
        REQUIRE(::listen(fd_, backlog) == 0);
        port_ = port_of(fd_);
        REQUIRE(port_ > 0);
    }
    raw_listener(const raw_listener&) = delete;
    raw_listener& operator=(const raw_listener&) = delete;
    ~raw_listener() { close(); }

    int port() const noexcept { return port_; }
    const std::string& host() const noexcept { return host_; }

    // Blocking accept bounded by `limit` (SO_RCVTIMEO); an empty peer on timeout. Touches
    // no doctest state, so a helper thread may call it.
    raw_peer accept(std::chrono::milliseconds limit = 5000ms) {
        set_receive_timeout(fd_, limit);
        int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return raw_peer();
        return raw_peer(fd);
    }

    void close() {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }

private:
    std::string host_;
    int fd_ = -1;
    int port_ = 0;
};

// A listener on host:0, a client connected to it and the inbound socket it accepted, set
// up with callbacks. The listener's accepted callback is cleared again afterwards.
struct socket_trio {
    tisock::tcp listener;
    tisock::tcp client;
    tisock::tcp inbound;

    void close_all() {
        for (tisock::tcp* s : {&listener, &client, &inbound}) {
            if (s->state() == tisock::state::connected || s->state() == tisock::state::listening) s->close();
        }
    }
};

inline socket_trio connect_trio(tisock::reactor& r, const std::string& host, tisock::tcp_options client_options = {},
                                tisock::accept_options accept = {}) {
    tisock::tcp listener = make_listener(r, host);
    std::optional<tisock::tcp> inbound;
    listener.set_accepted([&inbound](tisock::tcp&, tisock::tcp in) { inbound = in; });
    listener.accept(std::move(accept));
    client_options.host = host;
    client_options.port = listener.port();
    tisock::tcp client(r, std::move(client_options));
    client.connect();
    REQUIRE(run_until(r, [&] { return inbound.has_value() && client.state() == tisock::state::connected; }));
    listener.set_accepted({});
    return socket_trio{listener, client, *inbound};
}

// ---- small conveniences ------------------------------------------------------------------

inline std::span<const std::byte> bytes_of(std::string_view s) noexcept {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// `n` bytes of a pattern that is not periodic at any small power of two (a lost or
// reordered chunk shows up).
inline std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = char((i * 31 + i / 7919) % 251);
    return s;
}

// A buffer holding exactly these bytes (buffer::from_string validates UTF-8; test data
// is binary).
inline tisock::buffer buffer_of(std::string_view bytes) {
    tisock::buffer b(bytes.size());
    if (!bytes.empty()) std::memcpy(b.data(), bytes.data(), bytes.size());
    return b;
}

inline std::string text_of(std::span<const std::byte> b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

inline int int_option(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    REQUIRE(::getsockopt(fd, level, name, &v, &len) == 0);
    return v;
}

// A client whose writes queue: connected to `l` (made with a small receive buffer, such as
// raw_listener("127.0.0.1", 16, 4096)) with a 4 KiB send buffer; `peer` is the accepted
// end, which reads nothing until told to.
inline tisock::tcp connect_small_window(tisock::reactor& r, raw_listener& l, raw_peer& peer) {
    tisock::tcp s(r, {.host = l.host(), .port = l.port()});
    s.connect();
    REQUIRE(run_until(r, [&] { return !s.is_connecting(); }));
    REQUIRE(s.state() == tisock::state::connected);
    int small = 4096;
    REQUIRE(::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    peer = l.accept();
    REQUIRE(peer.is_open());
    return s;
}

// The set-up of the queued-write cases (TEST_CASE_FIXTURE(small_window_client, ...)): `s`,
// whose writes queue behind a `peer` that reads nothing until told to, and the descriptor
// baseline taken after the reactor (close s, peer and l before check_nothing_left). It runs
// before the case's watchdog starts; run_until's and accept's limits bound it.
struct small_window_client {
    tisock::reactor r;
    descriptor_baseline fds;
    raw_listener l{"127.0.0.1", 16, 4096};
    raw_peer peer;
    tisock::tcp s = connect_small_window(r, l, peer);
};

// A write of `*data` to `s` in a coroutine that is not a tisock::task, so that the test can
// abandon the write by destroying the frame.
inline foreign_coroutine write_in_foreign(tisock::tcp s, const std::string* data) {
    co_await s.async_write(bytes_of(*data));
}

// What the tests' own callbacks throw, to check that an exception leaves run*() cleanly.
struct boom : std::runtime_error {
    boom() : std::runtime_error("boom") {}
};

// Counts calls of the error callback and records the last one.
struct error_log {
    int count = 0;
    std::error_code code;
    std::string message;
    tisock::state state_seen = tisock::state::initialized;
    int handle_seen = 0;

    tisock::error_callback callback() {
        return [this](tisock::tcp& s, const std::string& m, std::error_code ec) {
            ++count;
            code = ec;
            message = m;
            state_seen = s.state();
            handle_seen = s.native_handle();
        };
    }
};

}  // namespace tisock_test
