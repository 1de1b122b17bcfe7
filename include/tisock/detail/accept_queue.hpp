// A listener's exact queue: connections taken off the kernel queue, waiting for accept().
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <deque>

#include <tisock/detail/address.hpp>
#include <tisock/detail/sys.hpp>

namespace tisock::detail {

// A connection accept(2)ed from the kernel, not yet wrapped in a socket: its peer kept
// small (its host is formatted only if the application asks).
struct pending_connection {
    int fd = -1;
    int port = 0;
    inet_address peer;

    pending_connection(int accepted, const sockaddr_storage& from) noexcept
        : fd(accepted), port(format_port(from)), peer(from) {}
};

// The kernel's backlog is only a hint, so listeners drain the kernel queue into this one
// and enforce listen_queue_size here, exactly: a connection beyond it is refused with a
// reset at once (as Titanium's Android implementation does), never left to time out.
class accept_queue {
public:
    accept_queue() = default;
    accept_queue(const accept_queue&) = delete;
    accept_queue& operator=(const accept_queue&) = delete;
    ~accept_queue() { refuse_all(); }

    bool empty() const noexcept { return pending_.empty(); }

    // Keeps `c` if fewer than `limit` wait, else refuses it.
    void push_or_refuse(const pending_connection& c, std::size_t limit) {
        if (pending_.size() >= limit) {
            sys::close_with_reset(c.fd);
            return;
        }
        pending_.push_back(c);
    }

    // A connection taken by an accept that was cancelled before it reported: first again.
    void push_front(const pending_connection& c) { pending_.push_front(c); }

    // The oldest connection (the queue must not be empty).
    pending_connection pop() noexcept {
        pending_connection c = pending_.front();
        pending_.pop_front();
        return c;
    }

    // Connections never seen by the application: refused with a reset.
    void refuse_all() noexcept {
        for (const pending_connection& c : pending_) sys::close_with_reset(c.fd);
        pending_.clear();
    }

    // accept(2) failed for one queued connection, not for the listener: that connection
    // died in the queue and the next may be fine. accept(2) lists the network errors Linux
    // passes on (ENETDOWN ... ENETUNREACH) and EPERM for a firewall verdict; the BSDs and
    // macOS report a connection reset while it waited in the queue as ECONNRESET.
    static bool lost_one_connection(int error) noexcept {
        switch (error) {
            case ECONNABORTED: case ECONNRESET: case EPROTO: case ENOPROTOOPT: case EHOSTDOWN:
#ifdef ENONET
            case ENONET:
#endif
            case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH: case ENETDOWN: case EPERM:
                return true;
            default:
                return false;
        }
    }

    // Out of descriptors or memory: the connection stays in the kernel queue, and
    // accepting again at once would spin; the listener pauses instead.
    static bool out_of_resources(int error) noexcept {
        return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
    }

private:
    std::deque<pending_connection> pending_;
};

}  // namespace tisock::detail
