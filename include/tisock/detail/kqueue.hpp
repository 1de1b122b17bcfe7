// macOS/BSD backend: one kqueue; EVFILT_READ and EVFILT_WRITE with EV_CLEAR per descriptor;
// EVFILT_USER for wake-ups where the system has it, else a self-pipe. Same contract as
// epoll.hpp. Every kevent() call of tisock is in this file (the socket-level differences,
// accept without accept4 and SO_NOSIGPIPE, are in sys.hpp under sys::bsd_sockets).
//
// On Linux this header is compiled against tests/kqueue_emu/sys/event.h (meson
// -Dreactor_backend=kqueue-emulation). What only a BSD kernel can prove is listed there; the quirks
// this file relies on, and where libuv (src/unix/kqueue.c) and Asio (kqueue_reactor.ipp)
// handle them:
//  - EV_CLEAR on both filters, registered once: Asio's register_descriptor does the same
//    (EV_ADD | EV_CLEAR for EVFILT_READ and EVFILT_WRITE), so steady-state I/O makes no
//    kevent() changes. libuv registers level-triggered and deletes filters it no longer
//    wants, one kevent() change list per loop turn.
//  - Read and write readiness arrive as separate kevents for one descriptor (one filter
//    each): one ready_event per kevent; the reactor merges them through descriptor_state.
//  - A failed connect(): BSD reports EVFILT_WRITE with EV_EOF, the errno in fflags (not
//    EV_ERROR, which is only for change-list entries: kqueue(2); oven-sh/bun#11364 and
//    #32257 were bitten by both). Like libuv (uv__stream_connect) and Asio
//    (non_blocking_connect), we only take "writable" from it and read SO_ERROR: the
//    emulation cannot provide fflags without clearing SO_ERROR, and netty/netty#7738 shows
//    the error can also be consumed by a read() first. Connect must not trust a write
//    event alone either: cppalliance/corosio#202 saw a stale EVFILT_WRITE before connect.
//  - EV_ERROR in a result carries an errno for the descriptor (libuv sets POLLERR, Asio
//    fails the queued operation with events[i].data): both directions, like EPOLLERR.
//  - udata is void* on FreeBSD, macOS and OpenBSD, intptr_t on NetBSD before 10:
//    reinterpret_cast serves both.
#pragma once

#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include <tisock/error.hpp>
#include <tisock/detail/descriptor.hpp>
#include <tisock/detail/sys.hpp>

namespace tisock::detail {

class kqueue_backend {
public:
    static constexpr std::size_t max_events = 128;

    kqueue_backend() {
        sys::result r = sys::invoke(sys::call::poller_create, 0, true, [](std::size_t) -> long { return ::kqueue(); });
        if (!r) throw_errno(r.error, "kqueue");
        kq_ = int(r.value);
        // kqueue() has no CLOEXEC flag before FreeBSD 14's kqueuex(); libuv uv__kqueue_init
        // sets it the same way.
        r = sys::invoke(sys::call::fcntl, 0, true, [this](std::size_t) -> long { return ::fcntl(kq_, F_SETFD, FD_CLOEXEC); });
        if (r) r = create_wake();
        if (!r) {
            sys::close(kq_);
            throw_errno(r.error, "kqueue wake-up");
        }
    }
    kqueue_backend(const kqueue_backend&) = delete;
    kqueue_backend& operator=(const kqueue_backend&) = delete;
    ~kqueue_backend() {
#if !defined(EVFILT_USER)
        sys::close(pipe_[0]);
        sys::close(pipe_[1]);
#endif
        sys::close(kq_);
    }

    // Once per descriptor, for its whole life: both filters, edge-triggered (EV_CLEAR).
    // Returns 0 or an errno value.
    int register_descriptor(descriptor_state& d) noexcept {
        struct kevent changes[2] = {
            change(std::uintptr_t(d.fd), EVFILT_READ, EV_ADD | EV_CLEAR, 0, &d),
            change(std::uintptr_t(d.fd), EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, &d),
        };
        sys::result r = apply(sys::call::poller_ctl, changes, 2);
        return r ? 0 : r.error;
    }

    // Nothing to do: close() removes the descriptor's filters from every kqueue (kqueue(2):
    // "Calling close() on a file descriptor will remove any kevents that reference the
    // descriptor"), and events already collected for it are filtered by the reactor
    // (fd == -1). An EV_DELETE here would cost two system calls per socket.
    void deregister_descriptor(descriptor_state&) noexcept {}

    // For a descriptor that stays open (handed back to a listener's queue, or to the caller):
    // its filters must go, or their events would reach a recycled descriptor_state.
    void remove_descriptor(descriptor_state& d) noexcept {
        struct kevent changes[2] = {
            change(std::uintptr_t(d.fd), EVFILT_READ, EV_DELETE, 0, nullptr),
            change(std::uintptr_t(d.fd), EVFILT_WRITE, EV_DELETE, 0, nullptr),
        };
        (void)apply(sys::call::poller_ctl, changes, 2);
    }

    // Thread-safe: makes a blocked wait() return. kevent() may be called from any thread.
    void wake() noexcept {
#if defined(EVFILT_USER)
        struct kevent trigger = change(wake_ident, EVFILT_USER, 0, NOTE_TRIGGER, nullptr);
        (void)apply(sys::call::wake_signal, &trigger, 1);
#else
        // A full pipe means a wake-up is already pending: EAGAIN is success.
        char one = 1;
        (void)sys::invoke(sys::call::wake_signal, 0, true,
                          [this, &one](std::size_t) -> long { return ::write(pipe_[1], &one, 1); });
#endif
    }

    // Waits up to timeout_ms (-1: no limit, 0: poll); returns how many kevents arrived.
    // They stay in a member array until the next wait; event(i) translates them, one
    // ready_event per kevent.
    std::size_t wait(int timeout_ms) {
        timespec ts{};
        const timespec* limit = nullptr;
        if (timeout_ms >= 0) {
            ts.tv_sec = timeout_ms / 1000;
            ts.tv_nsec = (timeout_ms % 1000) * 1000000L;
            limit = &ts;
        }
        sys::result r = sys::invoke(sys::call::poller_wait, 0, false, [&](std::size_t) -> long {
            return ::kevent(kq_, nullptr, 0, native_, native_capacity, limit);
        });
        if (!r) {
            if (r.error == EINTR) return 0;  // a signal: the caller recomputes its timeout
            throw_errno(r.error, "kevent");
        }
        return std::size_t(r.value);
    }

    // The i-th event of the last wait(), translated (kept in a member array until then).
    ready_event event(std::size_t i) noexcept { return translate(native_[i]); }

private:
    static constexpr int native_capacity = int(max_events);
    static constexpr std::uintptr_t wake_ident = 0;  // EVFILT_USER idents are not descriptors

    // EV_SET without its implicit conversions: the field types differ between the BSDs
    // (NetBSD: uint32_t filter and flags, intptr_t udata before 10).
    static struct kevent change(std::uintptr_t ident, int filter, unsigned flags, unsigned fflags, void* udata) noexcept {
        struct kevent k{};
        k.ident = ident;
        k.filter = static_cast<decltype(k.filter)>(filter);
        k.flags = static_cast<decltype(k.flags)>(flags);
        k.fflags = static_cast<decltype(k.fflags)>(fflags);
        k.udata = reinterpret_cast<decltype(k.udata)>(udata);
        return k;
    }

    // A change list alone: an error comes back as -1/errno since there is no event list.
    sys::result apply(sys::call id, const struct kevent* changes, int count) noexcept {
        return sys::invoke(id, 0, true, [&](std::size_t) -> long {
            return ::kevent(kq_, changes, count, nullptr, 0, nullptr);
        });
    }

    ready_event translate(const struct kevent& k) noexcept {
        ready_event e;
        if (is_wake(k)) {
            drain_wake();
            e.readable = true;  // as epoll.hpp reports its eventfd: d == nullptr marks it
            return e;
        }
        e.d = reinterpret_cast<descriptor_state*>(k.udata);
        bool error = (k.flags & EV_ERROR) != 0;
        bool eof = (k.flags & EV_EOF) != 0;
        // The filter is the direction. EV_EOF on EVFILT_READ is the peer's FIN (EPOLLRDHUP);
        // on EVFILT_WRITE it is also raised by our own shutdown(SHUT_WR), so it means a
        // hang-up only with an error in fflags (reset, refused). The next system call in
        // each direction reports the details, as with epoll.
        e.readable = k.filter == EVFILT_READ || error;
        e.writable = k.filter == EVFILT_WRITE || error;
        e.hung_up = error || (eof && (k.filter == EVFILT_READ || k.fflags != 0));
        return e;
    }

#if defined(EVFILT_USER)
    sys::result create_wake() noexcept {
        struct kevent add = change(wake_ident, EVFILT_USER, EV_ADD | EV_CLEAR, 0, nullptr);
        return apply(sys::call::wake_create, &add, 1);
    }
    static bool is_wake(const struct kevent& k) noexcept { return k.filter == EVFILT_USER; }
    void drain_wake() noexcept {}  // EV_CLEAR resets the trigger on delivery
#else
    // OpenBSD before 7.x and NetBSD before 10 have no EVFILT_USER: a non-blocking pipe
    // whose read end is registered with udata == nullptr (Asio's pipe_select_interrupter).
    sys::result create_wake() noexcept {
        sys::result r = sys::invoke(sys::call::wake_create, 0, true, [this](std::size_t) -> long { return ::pipe(pipe_); });
        if (!r) return r;
        if (r = sys::set_cloexec_nonblock(pipe_[0]); r) r = sys::set_cloexec_nonblock(pipe_[1]);
        if (r) {
            struct kevent add = change(std::uintptr_t(pipe_[0]), EVFILT_READ, EV_ADD | EV_CLEAR, 0, nullptr);
            r = apply(sys::call::poller_ctl, &add, 1);
        }
        if (!r) {
            sys::close(pipe_[0]);
            sys::close(pipe_[1]);
            pipe_[0] = pipe_[1] = -1;
        }
        return r;
    }
    static bool is_wake(const struct kevent& k) noexcept { return k.udata == decltype(k.udata){}; }
    void drain_wake() noexcept {
        char buffer[64];
        for (;;) {
            sys::result r = sys::invoke(sys::call::wake_drain, sizeof buffer, true, [this, &buffer](std::size_t n) -> long {
                return ::read(pipe_[0], buffer, n);
            });
            if (!r || std::size_t(r.value) < sizeof buffer) return;
        }
    }

    int pipe_[2] = {-1, -1};
#endif

    int kq_ = -1;
    struct kevent native_[max_events];
};

}  // namespace tisock::detail
