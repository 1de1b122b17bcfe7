// Linux backend: one epoll instance, edge-triggered registrations, an eventfd for wake-ups.
#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cstddef>
#include <cstdint>

#include <tisock/error.hpp>
#include <tisock/detail/descriptor.hpp>
#include <tisock/detail/sys.hpp>

namespace tisock::detail {

class epoll_backend {
public:
    static constexpr std::size_t max_events = 128;

    epoll_backend() {
        sys::result r = sys::invoke(sys::call::poller_create, 0, true,
                                    [](std::size_t) -> long { return ::epoll_create1(EPOLL_CLOEXEC); });
        if (!r) throw_errno(r.error, "epoll_create1");
        epoll_fd_ = int(r.value);
        r = sys::invoke(sys::call::wake_create, 0, true,
                        [](std::size_t) -> long { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); });
        if (!r) {
            sys::close(epoll_fd_);
            throw_errno(r.error, "eventfd");
        }
        wake_fd_ = int(r.value);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLET;
        ev.data.ptr = nullptr;  // the wake-up is the only registration without a descriptor_state
        r = sys::invoke(sys::call::poller_ctl, 0, true,
                        [&](std::size_t) -> long { return ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev); });
        if (!r) {
            sys::close(wake_fd_);
            sys::close(epoll_fd_);
            throw_errno(r.error, "epoll_ctl(eventfd)");
        }
    }
    epoll_backend(const epoll_backend&) = delete;
    epoll_backend& operator=(const epoll_backend&) = delete;
    ~epoll_backend() {
        sys::close(wake_fd_);
        sys::close(epoll_fd_);
    }

    // Once per descriptor, for its whole life: both directions, edge-triggered.
    // Returns 0 or an errno value.
    int register_descriptor(descriptor_state& d) noexcept {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.ptr = &d;
        sys::result r = sys::invoke(sys::call::poller_ctl, 0, true,
                                    [&](std::size_t) -> long { return ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, d.fd, &ev); });
        return r ? 0 : r.error;
    }

    // Nothing to do: close() removes a descriptor from every epoll set (we never dup them),
    // and events already collected for it are filtered by the reactor (fd == -1). Asio
    // skips EPOLL_CTL_DEL on close for the same reason.
    void deregister_descriptor(descriptor_state&) noexcept {}

    // For a descriptor that stays open (handed back to a listener's queue, or to the caller):
    // it must leave the epoll set, or its events would reach a recycled descriptor_state.
    void remove_descriptor(descriptor_state& d) noexcept {
        (void)sys::invoke(sys::call::poller_ctl, 0, true,
                          [&](std::size_t) -> long { return ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, d.fd, nullptr); });
    }

    // Thread-safe: makes a blocked wait() return.
    void wake() noexcept {
        std::uint64_t one = 1;
        (void)sys::invoke(sys::call::wake_signal, 0, true,
                          [&](std::size_t) -> long { return ::write(wake_fd_, &one, sizeof one); });
    }

    // Waits up to timeout_ms (-1: no limit, 0: poll); returns how many events arrived.
    // They stay in the backend (a member array, so no large stack frame to probe on every
    // call) until the next wait, and event(i) translates them as they are dispatched.
    std::size_t wait(int timeout_ms) {
        sys::result r = sys::invoke(sys::call::poller_wait, 0, false, [&](std::size_t) -> long {
            return ::epoll_wait(epoll_fd_, native_, int(max_events), timeout_ms);
        });
        if (!r) {
            if (r.error == EINTR) return 0;  // a signal: the caller recomputes its timeout
            throw_errno(r.error, "epoll_wait");
        }
        return std::size_t(r.value);
    }

    ready_event event(std::size_t i) noexcept {
        const std::uint32_t ev = native_[i].events;
        ready_event e;
        e.d = static_cast<descriptor_state*>(native_[i].data.ptr);
        if (e.d == nullptr) drain_wake();
        e.readable = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
        e.writable = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
        e.hung_up = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
        return e;
    }

private:
    void drain_wake() noexcept {
        std::uint64_t count = 0;
        (void)sys::invoke(sys::call::wake_drain, 0, true,
                          [&](std::size_t) -> long { return ::read(wake_fd_, &count, sizeof count); });
    }

    int epoll_fd_ = -1;
    int wake_fd_ = -1;
    epoll_event native_[max_events];
};

}  // namespace tisock::detail
