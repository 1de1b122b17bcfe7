// Test-only kqueue(2)/kevent(2) for Linux, built over epoll. Never installed, never part of
// tisock: it exists so that the kqueue backend (include/tisock/detail/kqueue.hpp) and the
// whole test suite can run on Linux (meson -Dreactor_backend=kqueue-emulation). The include path
// tests/kqueue_emu makes `#include <sys/event.h>` find this file.
//
// It implements exactly what the backend needs, with the semantics of FreeBSD's kqueue(2)
// man page:
//  - EVFILT_READ / EVFILT_WRITE on descriptors, EVFILT_USER (NOTE_TRIGGER, NOTE_FF*);
//  - EV_ADD, EV_DELETE, EV_ENABLE, EV_DISABLE, EV_CLEAR, EV_ONESHOT, EV_RECEIPT on changes;
//    EV_EOF and EV_ERROR on results;
//  - EV_CLEAR: the state is reset after delivery, so an event means "something changed"
//    (epoll's EPOLLET); without EV_CLEAR an event repeats while its condition holds;
//  - EVFILT_READ data = bytes available (FIONREAD), or the accept queue length for a
//    listening socket; EV_EOF once the peer has shut down writing;
//  - EVFILT_WRITE data = free space in the send buffer (SO_SNDBUF - SIOCOUTQ); EV_EOF once
//    the connection is gone, which is how BSD reports a failed non-blocking connect;
//  - changelist errors go to the eventlist as EV_ERROR with the errno in `data` when there
//    is room (and always with EV_RECEIPT), else kevent() fails with that errno;
//  - closing a descriptor removes its events (epoll drops closed files by itself).
//
// What it cannot reproduce, by construction (the BSD-only behaviour lives in kqueue.hpp and
// sys.hpp, and is cross-checked there against libuv's src/unix/kqueue.c and Asio's
// kqueue_reactor):
//  - fflags = the socket error on EV_EOF. BSD's kernel reads so_error without clearing it;
//    on Linux the only way to read it, getsockopt(SO_ERROR), clears it, which would hide a
//    failed connect from the code under test (libuv and Asio read SO_ERROR themselves). So
//    fflags is 0 unless a test opts in with kqueue_emu::set_report_socket_errors().
//  - Per-filter wake-ups. BSD activates only the filter whose socket buffer changed; Linux
//    reports the whole descriptor on an edge, so an edge delivers every registered filter
//    whose condition holds (e.g. a WRITE event rides along with a READ one). Never fewer
//    events than BSD, sometimes more; with EV_CLEAR both are harmless.
//  - A never-connected TCP socket is in Linux's TCP_CLOSE state, which epoll reports as
//    EPOLLHUP: here it reads as EV_EOF on both filters, where FreeBSD's filt_sowrite stays
//    quiet until connected. Code must not take a write event as "connected" anyway:
//    cppalliance/corosio#202 reports a stale EVFILT_WRITE before connect() on macOS.
//  - shutdown(fd, SHUT_WR) on our own side: BSD raises EV_EOF on EVFILT_WRITE, Linux wakes
//    nobody, so the emulation reports nothing until the peer closes too.
//  - A descriptor dup()ed before close() keeps its epoll registration on Linux; kqueue
//    drops the events at close() regardless. tisock never dups descriptors.
//  - EVFILT_TIMER, EVFILT_SIGNAL, EVFILT_VNODE, EVFILT_PROC, EV_DISPATCH: not implemented
//    (kevent reports EINVAL), the backend does not use them.
// Define KQUEUE_EMU_NO_EVFILT_USER before including this file to hide EVFILT_USER, as on
// kqueue systems without it; the backend then falls back to its self-pipe wake-up.
#pragma once

#ifndef __linux__
#error "tests/kqueue_emu is a Linux test emulation; BSD and macOS have the real <sys/event.h>"
#endif

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

// FreeBSD's layout, without the ext[] array nothing here uses.
struct kevent {
    std::uintptr_t ident;  // descriptor, or any number for EVFILT_USER
    short filter;
    unsigned short flags;
    unsigned int fflags;
    std::int64_t data;
    void* udata;
};

// FreeBSD's values.
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#ifndef KQUEUE_EMU_NO_EVFILT_USER
#define EVFILT_USER (-11)
#define NOTE_FFNOP 0x00000000u
#define NOTE_FFAND 0x40000000u
#define NOTE_FFOR 0x80000000u
#define NOTE_FFCOPY 0xc0000000u
#define NOTE_FFCTRLMASK 0xc0000000u
#define NOTE_FFLAGSMASK 0x00ffffffu
#define NOTE_TRIGGER 0x01000000u
#endif

#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

// The BSD macro, with casts so that test code stays quiet under -Wconversion.
#define EV_SET(kevp, a, b, c, d, e, f)                           \
    do {                                                         \
        struct kevent* kev_set_ = (kevp);                        \
        kev_set_->ident = static_cast<std::uintptr_t>(a);        \
        kev_set_->filter = static_cast<short>(b);                \
        kev_set_->flags = static_cast<unsigned short>(c);        \
        kev_set_->fflags = static_cast<unsigned int>(d);         \
        kev_set_->data = static_cast<std::int64_t>(e);           \
        kev_set_->udata = (f);                                   \
    } while (0)

namespace kqueue_emu::detail {

inline constexpr short filt_read = -1;
inline constexpr short filt_write = -2;
inline constexpr short filt_user = -11;  // also when EVFILT_USER is hidden from the includer
inline constexpr unsigned int note_trigger = 0x01000000u;
inline constexpr unsigned int note_ffctrlmask = 0xc0000000u;
inline constexpr unsigned int note_fflagsmask = 0x00ffffffu;
inline constexpr std::uint64_t user_tag = ~std::uint64_t{0};
inline constexpr unsigned short kept_flags = EV_CLEAR | EV_ONESHOT;  // remembered from EV_ADD

struct knote {
    unsigned short flags = 0;  // EV_CLEAR / EV_ONESHOT as registered
    bool disabled = false;
    bool triggered = false;  // EVFILT_USER only
    unsigned int sfflags = 0;
    std::int64_t sdata = 0;
    void* udata = nullptr;
};

// Both filters of one descriptor share its single epoll registration.
struct fd_entry {
    std::uint32_t generation = 0;  // tells this registration from an older one of the same number
    bool has_read = false;
    bool has_write = false;
    knote read;
    knote write;
};

struct carried {
    struct kevent event;
    std::uint32_t generation;
};

struct queue {
    std::mutex m;
    int epfd = -1;  // the descriptor kqueue() returned
    std::uint32_t next_generation = 1;
    std::map<int, fd_entry> fds;
    std::map<std::uintptr_t, knote> users;
    std::vector<carried> carry;  // events that did not fit the caller's list
    bool report_socket_errors = false;
};

inline std::mutex registry_mutex;
inline std::map<int, std::shared_ptr<queue>> registry;

// One eventfd for the whole process, registered edge-triggered in every queue: NOTE_TRIGGER
// writes to it, which wakes every waiting queue; a queue with nothing triggered waits
// again. A descriptor per queue would leak, as nothing tells the emulation that the caller
// closed its kqueue. Created before main() so that it never shows up as a descriptor leak
// in a test that counts them.
inline const int user_wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

inline std::shared_ptr<queue> find(int kq) {
    std::lock_guard lock(registry_mutex);
    auto it = registry.find(kq);
    return it == registry.end() ? nullptr : it->second;
}

inline std::uint32_t epoll_mask(const fd_entry& e) noexcept {
    std::uint32_t mask = EPOLLET | EPOLLRDHUP;
    if (e.has_read && !e.read.disabled) mask |= EPOLLIN;
    if (e.has_write && !e.write.disabled) mask |= EPOLLOUT;
    return mask;
}

inline int epoll_update(queue& q, int op, int fd, const fd_entry& e) noexcept {
    epoll_event ev{};
    ev.events = epoll_mask(e);
    ev.data.u64 = (std::uint64_t{e.generation} << 32) | std::uint32_t(fd);
    return ::epoll_ctl(q.epfd, op, fd, &ev) == 0 ? 0 : errno;
}

// The entry for `fd` if its registration is still the one in epoll. epoll forgets a file
// when it is closed, and matches on (file, number), so a number reused by a new file
// answers ENOENT: the old knotes vanished with the old file, as on BSD. (EPOLL_CTL_MOD
// re-polls the descriptor: at worst one extra edge, which "never fewer" allows.)
inline fd_entry* live_entry(queue& q, int fd) noexcept {
    auto it = q.fds.find(fd);
    if (it == q.fds.end()) return nullptr;
    if (epoll_update(q, EPOLL_CTL_MOD, fd, it->second) == 0) return &it->second;
    q.fds.erase(it);
    return nullptr;
}

inline int apply_fd_change(queue& q, const struct kevent& c) {
    if (c.ident > std::uintptr_t(INT_MAX)) return EBADF;
    int fd = int(c.ident);
    if (::fcntl(fd, F_GETFD) < 0) return EBADF;
    fd_entry* e = live_entry(q, fd);
    bool is_read = c.filter == filt_read;
    if ((c.flags & EV_DELETE) != 0) {
        if (e == nullptr || !(is_read ? e->has_read : e->has_write)) return ENOENT;
        (is_read ? e->has_read : e->has_write) = false;
        if (e->has_read || e->has_write) return epoll_update(q, EPOLL_CTL_MOD, fd, *e);
        (void)::epoll_ctl(q.epfd, EPOLL_CTL_DEL, fd, nullptr);
        q.fds.erase(fd);
        return 0;
    }
    bool is_new = e == nullptr;
    if (is_new) {
        if ((c.flags & EV_ADD) == 0) return ENOENT;
        fd_entry fresh;
        fresh.generation = q.next_generation++;
        e = &q.fds[fd];
        *e = fresh;
    }
    bool& has = is_read ? e->has_read : e->has_write;
    knote& k = is_read ? e->read : e->write;
    if (!has) {
        if ((c.flags & EV_ADD) == 0) return ENOENT;
        has = true;
        k = knote{};
    }
    if ((c.flags & EV_ADD) != 0) {
        k.flags = static_cast<unsigned short>(c.flags & kept_flags);
        k.udata = c.udata;
        k.sfflags = c.fflags;
        k.sdata = c.data;
    }
    if ((c.flags & EV_DISABLE) != 0) k.disabled = true;
    if ((c.flags & EV_ENABLE) != 0) k.disabled = false;
    int err = epoll_update(q, is_new ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, *e);
    if (err != 0 && is_new) q.fds.erase(fd);
    return err;
}

// FreeBSD's filt_userattach for a new knote, filt_usertouch for an existing one:
// NOTE_TRIGGER, the NOTE_FF* operations on the user flags, EV_CLEAR resetting the trigger.
inline int apply_user_change(queue& q, const struct kevent& c, bool& triggered) {
    auto it = q.users.find(c.ident);
    if ((c.flags & EV_DELETE) != 0) {
        if (it == q.users.end()) return ENOENT;
        q.users.erase(it);
        return 0;
    }
    if (it == q.users.end()) {
        // filt_userattach: a new knote starts triggered iff NOTE_TRIGGER is given.
        if ((c.flags & EV_ADD) == 0) return ENOENT;
        knote k;
        k.flags = static_cast<unsigned short>(c.flags & kept_flags);
        k.disabled = (c.flags & EV_DISABLE) != 0;
        k.triggered = (c.fflags & note_trigger) != 0;
        k.sfflags = c.fflags & note_fflagsmask;
        k.sdata = c.data;
        k.udata = c.udata;
        q.users.emplace(c.ident, k);
        triggered = triggered || (k.triggered && !k.disabled);
        return 0;
    }
    knote& k = it->second;
    if ((c.flags & EV_ADD) != 0) k.udata = c.udata;
    if ((c.flags & EV_DISABLE) != 0) k.disabled = true;
    if ((c.flags & EV_ENABLE) != 0) k.disabled = false;
    if ((c.fflags & note_trigger) != 0) k.triggered = true;
    unsigned int ff = c.fflags & note_fflagsmask;
    switch (c.fflags & note_ffctrlmask) {
        case 0x40000000u: k.sfflags &= ff; break;  // NOTE_FFAND
        case 0x80000000u: k.sfflags |= ff; break;  // NOTE_FFOR
        case 0xc0000000u: k.sfflags = ff; break;   // NOTE_FFCOPY
        default: break;                            // NOTE_FFNOP
    }
    k.sdata = c.data;
    if ((c.flags & EV_CLEAR) != 0) k.triggered = false;
    triggered = triggered || (k.triggered && !k.disabled);
    return 0;
}

inline int apply_change(queue& q, const struct kevent& c, bool& triggered) {
    if (c.filter == filt_user) return apply_user_change(q, c, triggered);
    if (c.filter == filt_read || c.filter == filt_write) return apply_fd_change(q, c);
    return EINVAL;
}

inline struct kevent make_event(std::uintptr_t ident, short filter, unsigned short flags, unsigned int fflags,
                                std::int64_t data, void* udata) noexcept {
    struct kevent ev{};
    ev.ident = ident;
    ev.filter = filter;
    ev.flags = flags;
    ev.fflags = fflags;
    ev.data = data;
    ev.udata = udata;
    return ev;
}

inline int collect_user(queue& q, struct kevent* out, int room) {
    int n = 0;
    for (auto it = q.users.begin(); it != q.users.end() && n < room;) {
        knote& k = it->second;
        if (!k.triggered || k.disabled) {
            ++it;
            continue;
        }
        out[n++] = make_event(it->first, filt_user, k.flags, k.sfflags & note_fflagsmask, k.sdata, k.udata);
        if ((k.flags & EV_CLEAR) != 0) k.triggered = false;
        it = (k.flags & EV_ONESHOT) != 0 ? q.users.erase(it) : std::next(it);
    }
    return n;
}

inline std::int64_t readable_bytes(int fd) noexcept {
    // A listening socket: the accept queue length, which Linux reports in tcpi_unacked
    // (what `ss` shows as Recv-Q); BSD's filt_solisten returns so_qlen.
    tcp_info info{};
    socklen_t size = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) == 0 && info.tcpi_state == TCP_LISTEN)
        return info.tcpi_unacked;
    int n = 0;
    return ::ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

inline std::int64_t writable_space(int fd) noexcept {
    int size = 0;
    socklen_t len = sizeof size;
    int queued = 0;
    if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) != 0 || ::ioctl(fd, SIOCOUTQ, &queued) != 0) return 0;
    return std::max(size - queued, 0);
}

// Linux clears the pending error when it is read: only on request (see the top comment).
inline unsigned int socket_error(const queue& q, int fd) noexcept {
    if (!q.report_socket_errors) return 0;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return 0;
    return static_cast<unsigned int>(err);
}

// After delivering a filter's event: EV_ONESHOT deletes the knote; without EV_CLEAR the
// event must come back while its condition holds, which EPOLL_CTL_MOD gives (epoll re-polls
// the descriptor). Erases the entry when it has no filter left.
inline void delivered(queue& q, int fd, fd_entry& e, bool is_read) {
    bool& has = is_read ? e.has_read : e.has_write;
    const knote& k = is_read ? e.read : e.write;
    bool oneshot = (k.flags & EV_ONESHOT) != 0;
    bool level = (k.flags & EV_CLEAR) == 0;
    if (oneshot) has = false;
    if (!e.has_read && !e.has_write) {
        (void)::epoll_ctl(q.epfd, EPOLL_CTL_DEL, fd, nullptr);
        q.fds.erase(fd);
    } else if (oneshot || level) {
        (void)epoll_update(q, EPOLL_CTL_MOD, fd, e);
    }
}

// Turns one epoll edge into the READ and/or WRITE events it stands for. What does not fit
// the caller's list is carried to the next call: with EV_CLEAR the edge will not come back.
inline int translate(queue& q, const epoll_event& native, struct kevent* out, int room) {
    int fd = int(native.data.u64 & 0xffffffffu);
    auto it = q.fds.find(fd);
    if (it == q.fds.end() || it->second.generation != std::uint32_t(native.data.u64 >> 32)) return 0;
    fd_entry& e = it->second;
    std::uint32_t generation = e.generation;
    std::uint32_t ev = native.events;
    bool read_eof = (ev & (EPOLLRDHUP | EPOLLHUP)) != 0;
    bool write_eof = (ev & EPOLLHUP) != 0;
    bool want_read = e.has_read && !e.read.disabled && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    bool want_write = e.has_write && !e.write.disabled && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    unsigned int error = (want_read && read_eof) || (want_write && write_eof) ? socket_error(q, fd) : 0;
    struct kevent ready[2];
    int count = 0;
    if (want_read) {
        auto flags = static_cast<unsigned short>(e.read.flags | (read_eof ? EV_EOF : 0));
        ready[count++] = make_event(std::uintptr_t(fd), filt_read, flags, read_eof ? error : 0, readable_bytes(fd), e.read.udata);
    }
    if (want_write) {
        auto flags = static_cast<unsigned short>(e.write.flags | (write_eof ? EV_EOF : 0));
        ready[count++] = make_event(std::uintptr_t(fd), filt_write, flags, write_eof ? error : 0, writable_space(fd), e.write.udata);
    }
    int n = 0;
    for (int i = 0; i < count; ++i) {
        if (n == room) {
            q.carry.push_back({ready[i], generation});
            continue;
        }
        out[n++] = ready[i];
        auto found = q.fds.find(fd);  // delivered() may erase the entry
        if (found != q.fds.end()) delivered(q, fd, found->second, ready[i].filter == filt_read);
    }
    return n;
}

// Events that did not fit last time, if their descriptor and knote are still there.
inline int deliver_carried(queue& q, struct kevent* out, int room) {
    int n = 0;
    while (n < room && !q.carry.empty()) {
        carried c = q.carry.front();
        q.carry.erase(q.carry.begin());
        int fd = int(c.event.ident);
        bool is_read = c.event.filter == filt_read;
        fd_entry* e = live_entry(q, fd);
        if (e == nullptr || e->generation != c.generation || !(is_read ? e->has_read : e->has_write)) continue;
        out[n] = c.event;
        out[n++].udata = (is_read ? e->read : e->write).udata;
        delivered(q, fd, *e, is_read);
    }
    return n;
}

inline std::int64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

inline int wait(queue& q, struct kevent* out, int nevents, const timespec* timeout) {
    std::int64_t deadline = 0;
    if (timeout != nullptr) deadline = now_ns() + std::int64_t{timeout->tv_sec} * 1000000000 + timeout->tv_nsec;
    for (;;) {
        int n = 0;
        {
            std::lock_guard lock(q.m);
            n = deliver_carried(q, out, nevents);
            n += collect_user(q, out + n, nevents - n);
        }
        if (n == nevents) return n;
        int wait_ms = -1;
        if (n > 0) {
            wait_ms = 0;
        } else if (timeout != nullptr) {
            std::int64_t left = std::max<std::int64_t>(deadline - now_ns(), 0);
            wait_ms = int(std::min<std::int64_t>((left + 999999) / 1000000, INT_MAX));  // round up: no spinning
        }
        // Each edge yields at most two events (READ and WRITE), so ask epoll for at most
        // half the room left; translate() carries the rare overflow to the next call.
        epoll_event native[64];
        int room = nevents - n;
        int ask = std::clamp(room / 2, 1, 64);
        int got = ::epoll_wait(q.epfd, native, ask, wait_ms);
        if (got < 0) {
            if (n > 0) return n;
            return -1;  // EINTR as on BSD: the caller decides whether to retry
        }
        {
            std::lock_guard lock(q.m);
            for (int i = 0; i < got; ++i) {
                if (native[i].data.u64 == user_tag) continue;
                n += translate(q, native[i], out + n, nevents - n);
            }
            n += collect_user(q, out + n, nevents - n);
        }
        if (n > 0) return n;
        if (timeout != nullptr && now_ns() >= deadline) return 0;
        // Woken by another queue's trigger, or only by edges nobody registered: wait on.
    }
}

}  // namespace kqueue_emu::detail

namespace kqueue_emu {

// Test hook: fill fflags with the socket error on EV_EOF, as BSD does, at the price of
// clearing it (Linux's SO_ERROR read is destructive). Returns 0 or an errno value.
inline int set_report_socket_errors(int kq, bool on) {
    std::shared_ptr<detail::queue> q = detail::find(kq);
    if (!q) return EBADF;
    std::lock_guard lock(q->m);
    q->report_socket_errors = on;
    return 0;
}

}  // namespace kqueue_emu

inline int kqueue() noexcept {
    using namespace kqueue_emu::detail;
    if (user_wake_fd < 0) {
        errno = EMFILE;
        return -1;
    }
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -1;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = user_tag;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, user_wake_fd, &ev) != 0) {
        int err = errno;
        ::close(ep);
        errno = err;
        return -1;
    }
    try {
        auto q = std::make_shared<queue>();
        q->epfd = ep;
        std::lock_guard lock(registry_mutex);
        registry[ep] = std::move(q);  // replaces the state of a closed kqueue with this number
    } catch (...) {
        ::close(ep);
        errno = ENOMEM;
        return -1;
    }
    return ep;
}

// The BSD API names a struct and a function `kevent`; -Wshadow objects to that in C++, and
// is silent on BSD only because <sys/event.h> is a system header there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
inline int kevent(int kq, const struct kevent* changes, int nchanges, struct kevent* events, int nevents,
                  const struct timespec* timeout) noexcept {
    using namespace kqueue_emu::detail;
    if (nchanges < 0 || nevents < 0 ||
        (timeout != nullptr && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000))) {
        errno = EINVAL;
        return -1;
    }
    try {
        std::shared_ptr<queue> q = find(kq);
        if (!q) {
            errno = EBADF;
            return -1;
        }
        // FreeBSD's kern_kevent: changes in order; a failed one (or any, with EV_RECEIPT)
        // is reported in the eventlist while there is room, else the call fails with it.
        int reported = 0;
        bool triggered = false;
        {
            std::lock_guard lock(q->m);
            for (int i = 0; i < nchanges; ++i) {
                int err = apply_change(*q, changes[i], triggered);
                if (err == 0 && (changes[i].flags & EV_RECEIPT) == 0) continue;
                if (reported == nevents) {
                    if (err == 0) break;
                    errno = err;
                    return -1;
                }
                events[reported] = changes[i];
                events[reported].flags = EV_ERROR;
                events[reported].data = err;
                ++reported;
            }
        }
        if (triggered) {
            std::uint64_t one = 1;
            (void)!::write(user_wake_fd, &one, sizeof one);
        }
        if (reported > 0 || nevents == 0) return reported;
        return wait(*q, events, nevents, timeout);
    } catch (...) {  // std::bad_alloc, or std::system_error from a mutex
        errno = ENOMEM;
        return -1;
    }
}
#pragma GCC diagnostic pop
