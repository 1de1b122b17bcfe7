// The system-call seam. Every system call tisock makes goes through this file, which
//  - normalises errors: results are returned, errno is captured in the same struct;
//  - retries EINTR where retrying is correct (never for close(): Linux has already closed);
//  - keeps the few calls that differ between Linux and the BSDs in one place;
//  - offers a test-only fault hook (compile with TISOCK_FAULT_INJECTION) that can fail a
//    call, or shorten its length, before it reaches the kernel, and one that can slow down
//    or fail a getaddrinfo(). Off, they cost nothing.
#pragma once

#include <tisock/detail/platform.hpp>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>

namespace tisock::detail::sys {

// Whether the socket calls follow the BSD rules (no accept4/SOCK_NONBLOCK on macOS,
// SO_NOSIGPIPE instead of MSG_NOSIGNAL). True with the kqueue backend, also when that
// backend runs over the test emulation on Linux, so the BSD code paths are exercised.
inline constexpr bool bsd_sockets = TISOCK_DETAIL_KQUEUE == 1;

struct result {
    long value = -1;  // the call's return value; -1 on failure
    int error = 0;    // errno when value == -1
    explicit operator bool() const noexcept { return value >= 0; }
};

enum class call : unsigned char {
    socket, connect, accept, bind, listen, recv, send, close, shutdown,
    getsockopt, setsockopt, getsockname, getpeername, fcntl,
    poller_create, poller_ctl, poller_wait, wake_create, wake_signal, wake_drain,
};

#ifdef TISOCK_FAULT_INJECTION
// Called before each system call. It may shorten `length` (short reads and writes) or
// return true to skip the call, which then "returns" `value` with errno `error`.
using fault_hook_fn = bool (*)(call c, std::size_t& length, long& value, int& error);
inline fault_hook_fn fault_hook = nullptr;

// Called before each getaddrinfo(), on the thread that resolves (a resolver worker, or the
// reactor thread for listen()), hence atomic. It may take its time (a slow DNS server) and
// return true to skip the lookup, which then fails with `gai_error` (errno set for EAI_SYSTEM).
using resolve_hook_fn = bool (*)(const char* host, int& gai_error);
inline std::atomic<resolve_hook_fn> resolve_hook{nullptr};
#endif

// Runs `op(length)` unless the fault hook replaces it; retries EINTR when `retry_eintr`.
template <class Op>
inline result invoke(call c, std::size_t length, bool retry_eintr, Op op) noexcept {
    for (;;) {
        result r;
#ifdef TISOCK_FAULT_INJECTION
        if (fault_hook != nullptr && fault_hook(c, length, r.value, r.error)) {
            if (r.value >= 0) r.error = 0;
            if (r.value < 0 && r.error == EINTR && retry_eintr) continue;
            return r;
        }
#else
        (void)c;
#endif
        r.value = op(length);
        if (r.value >= 0) return r;
        r.error = errno;
        if (r.error == EINTR && retry_eintr) continue;
        return r;
    }
}

// getaddrinfo() behind the resolve hook. Returns 0 or an EAI_* code.
inline int getaddrinfo(const char* host, const char* service, const addrinfo* hints, addrinfo** list) noexcept {
#ifdef TISOCK_FAULT_INJECTION
    if (resolve_hook_fn hook = resolve_hook.load(std::memory_order_acquire); hook != nullptr) {
        int gai_error = EAI_FAIL;
        if (hook(host, gai_error)) return gai_error;
    }
#endif
    return ::getaddrinfo(host, service, hints, list);
}

inline result set_cloexec_nonblock(int fd) noexcept {
    return invoke(call::fcntl, 0, true, [fd](std::size_t) -> long {
        int flags = ::fcntl(fd, F_GETFL);
        if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -1;
        return ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    });
}

inline result close(int fd) noexcept {
    // No EINTR retry: on Linux the descriptor is released even when close() reports EINTR,
    // and retrying could close a descriptor another thread just opened.
    return invoke(call::close, 0, false, [fd](std::size_t) -> long { return ::close(fd); });
}

inline result setsockopt(int fd, int level, int name, const void* value, socklen_t size) noexcept {
    return invoke(call::setsockopt, 0, true,
                  [=](std::size_t) -> long { return ::setsockopt(fd, level, name, value, size); });
}

inline result getsockopt(int fd, int level, int name, void* value, socklen_t* size) noexcept {
    return invoke(call::getsockopt, 0, true,
                  [=](std::size_t) -> long { return ::getsockopt(fd, level, name, value, size); });
}

inline result set_int_option(int fd, int level, int name, int value) noexcept {
    return sys::setsockopt(fd, level, name, &value, sizeof value);
}

// A failed write to a peer that has gone away must never raise SIGPIPE, and the library
// must not touch the process's signal dispositions: Linux suppresses it per call with
// MSG_NOSIGNAL, the BSDs per socket with SO_NOSIGPIPE (libuv src/unix/core.c, Asio
// socket_ops.ipp do the same).
#if defined(MSG_NOSIGNAL)
inline constexpr int send_flags = MSG_NOSIGNAL;
#else
inline constexpr int send_flags = 0;
#endif

inline result prepare_new_socket(int fd) noexcept {
#if defined(SO_NOSIGPIPE)
    if (result r = set_int_option(fd, SOL_SOCKET, SO_NOSIGPIPE, 1); !r) return r;
#endif
    (void)fd;
    return {0, 0};
}

// Finishes a descriptor just made by socket() or accept(): on the BSDs the flags that
// Linux sets atomically (SOCK_NONBLOCK, SOCK_CLOEXEC), then SO_NOSIGPIPE where it exists.
// The descriptor is closed if that fails.
inline result finish_new_descriptor(result made) noexcept {
    if (!made) return made;
    int fd = int(made.value);
    result r = bsd_sockets ? set_cloexec_nonblock(fd) : result{0, 0};
    if (r) r = prepare_new_socket(fd);
    if (r) return made;
    (void)sys::close(fd);
    return r;
}

// A non-blocking, close-on-exec stream socket.
inline result socket(int family) noexcept {
    // macOS has no SOCK_NONBLOCK/SOCK_CLOEXEC: they are set afterwards (libuv uv__socket).
    int type = SOCK_STREAM;
#if defined(SOCK_NONBLOCK)
    if constexpr (!bsd_sockets) type |= SOCK_NONBLOCK | SOCK_CLOEXEC;
#endif
    return finish_new_descriptor(
        invoke(call::socket, 0, true, [family, type](std::size_t) -> long { return ::socket(family, type, 0); }));
}

// accept() of a non-blocking, close-on-exec descriptor; fills `peer` when given.
inline result accept(int fd, sockaddr_storage* peer) noexcept {
    socklen_t size = sizeof(sockaddr_storage);
    auto* addr = reinterpret_cast<sockaddr*>(peer);
    socklen_t* size_ptr = peer != nullptr ? &size : nullptr;
    return finish_new_descriptor(invoke(call::accept, 0, true, [=](std::size_t) -> long {
#if defined(SOCK_NONBLOCK)
        // No accept4 on macOS (libuv uv__accept): there, accept and set the flags after.
        if constexpr (!bsd_sockets) return ::accept4(fd, addr, size_ptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
#endif
        return ::accept(fd, addr, size_ptr);
    }));
}

inline result connect(int fd, const sockaddr* addr, socklen_t size) noexcept {
    auto attempt = [=](std::size_t) -> long { return ::connect(fd, addr, size); };
    result r = invoke(call::connect, 0, false, attempt);
    // After EINTR the attempt may go on asynchronously (POSIX) or may never have started,
    // and waiting for writability cannot tell: epoll reports a never-connected socket
    // writable with SO_ERROR 0, which would pass for success. So ask again: EALREADY
    // means the attempt is in flight, EISCONN that it has already completed.
    while (!r && r.error == EINTR) r = invoke(call::connect, 0, false, attempt);
    if (!r && r.error == EALREADY) r.error = EINPROGRESS;
    if (!r && r.error == EISCONN) r = result{0, 0};
    // Some kernels (Android, libuv src/unix/tcp.c) return -1 with errno 0: still in progress.
    if (!r && r.error == 0) r.error = EINPROGRESS;
    return r;
}

inline result bind(int fd, const sockaddr* addr, socklen_t size) noexcept {
    return invoke(call::bind, 0, true, [=](std::size_t) -> long { return ::bind(fd, addr, size); });
}

inline result listen(int fd, int backlog) noexcept {
    return invoke(call::listen, 0, true, [=](std::size_t) -> long { return ::listen(fd, backlog); });
}

inline result recv(int fd, void* data, std::size_t size) noexcept {
    return invoke(call::recv, size, true, [=](std::size_t n) -> long { return ::recv(fd, data, n, 0); });
}

inline result send(int fd, const void* data, std::size_t size) noexcept {
    return invoke(call::send, size, true, [=](std::size_t n) -> long { return ::send(fd, data, n, send_flags); });
}

inline result shutdown(int fd, int how) noexcept {
    return invoke(call::shutdown, 0, true, [=](std::size_t) -> long { return ::shutdown(fd, how); });
}

inline result getsockname(int fd, sockaddr_storage& addr) noexcept {
    return invoke(call::getsockname, 0, true, [fd, &addr](std::size_t) -> long {
        socklen_t size = sizeof addr;
        return ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size);
    });
}

inline result getpeername(int fd, sockaddr_storage& addr) noexcept {
    return invoke(call::getpeername, 0, true, [fd, &addr](std::size_t) -> long {
        socklen_t size = sizeof addr;
        return ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &size);
    });
}

// The pending error of a socket (SO_ERROR), or the error of getsockopt itself.
inline int socket_error(int fd) noexcept {
    int err = 0;
    socklen_t size = sizeof err;
    if (result r = sys::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size); !r) return r.error;
    return err;
}

// The option that lets several listeners share one host:port, the kernel balancing new
// connections among them: FreeBSD's load-balancing variant where it exists.
#if defined(SO_REUSEPORT_LB)
inline constexpr int reuse_port_option = SO_REUSEPORT_LB;
#else
inline constexpr int reuse_port_option = SO_REUSEPORT;
#endif

// SO_LINGER {1, 0}: the descriptor's close() will send a reset instead of a FIN.
inline void reset_on_close(int fd) noexcept {
    linger l{};
    l.l_onoff = 1;
    l.l_linger = 0;
    (void)sys::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

// Abortive close.
inline void close_with_reset(int fd) noexcept {
    reset_on_close(fd);
    (void)sys::close(fd);
}

}  // namespace tisock::detail::sys
