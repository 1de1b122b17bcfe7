// epoll_echo: the hand-written raw-epoll echo server that tisock is measured against.
//
//   epoll_echo --port P [--mode coroutine|callback]
//
// Listens on 127.0.0.1:P, single-threaded, echoes every byte back. --mode is accepted
// and ignored so that benchmarks/run can start every server with the same flags. Exits
// with status 0 on SIGTERM or SIGINT and prints the allocation report (alloc_counter.hpp)
// to stderr.
//
// What makes it the practical upper bound (and what tisock has to match):
//  - one epoll_ctl per connection: registered once, edge-triggered, for EPOLLIN and
//    EPOLLOUT together, never modified;
//  - 3 system calls per pingpong message: epoll_wait, read, write. A read shorter than
//    the buffer means the socket is drained (TCP hands out everything queued), so the
//    server goes back to epoll_wait instead of probing with a read that returns EAGAIN;
//  - no allocation per message or per connection: one shared read buffer, and the
//    connection table is indexed by descriptor and sized once from RLIMIT_NOFILE. Only a
//    partial write (the peer is not reading) copies the unsent rest to a per-connection
//    buffer and waits for EPOLLOUT, reading nothing more until it has been sent.
#include "alloc_counter.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "epoll_echo: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

struct options {
    int port = 0;
};

options parse_options(int argc, char** argv) {
    options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "epoll_echo: %s needs a value\n", argv[i]);
            std::exit(2);
        }
        if (arg == "--port") {
            opt.port = std::atoi(argv[++i]);
        } else if (arg == "--mode") {
            ++i;  // parity with tisock-echo; there is only one way to be raw epoll
        } else {
            std::fprintf(stderr, "usage: epoll_echo --port P [--mode coroutine|callback]\n");
            std::exit(2);
        }
    }
    if (opt.port <= 0 || opt.port > 65535) {
        std::fprintf(stderr, "epoll_echo: --port P (1..65535) is required\n");
        std::exit(2);
    }
    return opt;
}

// Holding 10,000 connections needs more than the usual soft limit of 1024 descriptors.
rlim_t raise_nofile_limit() {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) die("getrlimit");
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) die("setrlimit");
    return lim.rlim_cur;
}

int listen_on_loopback(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    const int one = 1;
    // The previous benchmark run's server may have left TIME_WAIT entries on this port.
    if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) die("SO_REUSEADDR");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) die("bind");
    if (::listen(fd, SOMAXCONN) != 0) die("listen");
    return fd;
}

// SIGTERM/SIGINT make a descriptor in the epoll set readable (the self-pipe trick, with
// an eventfd): no window between checking a flag and going to sleep in epoll_wait.
// Not signalfd: under valgrind the signal never reaches a signalfd (valgrind keeps
// signals blocked on the host and queues them for the guest), and benchmarks/run
// stops the server under callgrind with SIGTERM.
int wake_fd = -1;

extern "C" void on_termination_signal(int) {
    const int saved = errno;
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t ignored = ::write(wake_fd, &one, sizeof one);
    errno = saved;
}

int termination_eventfd() {
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0) die("eventfd");
    struct sigaction sa{};
    sa.sa_handler = on_termination_signal;
    ::sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (::sigaction(SIGTERM, &sa, nullptr) != 0 || ::sigaction(SIGINT, &sa, nullptr) != 0) die("sigaction");
    return wake_fd;
}

struct connection {
    std::vector<char> unsent;  // empty unless a write was partial
    std::size_t unsent_offset = 0;
};

class server {
public:
    server(int port, rlim_t max_fds)
        : listen_fd_(listen_on_loopback(port)),
          signal_fd_(termination_eventfd()),
          epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
          spare_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
          connections_(static_cast<std::size_t>(max_fds)) {
        if (epoll_fd_ < 0) die("epoll_create1");
        if (spare_fd_ < 0) die("open /dev/null");
        // The listener is level-triggered and accepted from once per wake-up: a
        // sequence of single connections costs one accept4 each, with no EAGAIN probe.
        add(listen_fd_, EPOLLIN);
        add(signal_fd_, EPOLLIN);
    }

    void run() {
        epoll_event events[256];
        for (;;) {
            const int n = ::epoll_wait(epoll_fd_, events, 256, -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                die("epoll_wait");
            }
            for (int i = 0; i < n; ++i) {
                const int fd = events[i].data.fd;
                if (fd == listen_fd_) {
                    accept_one();
                } else if (fd == signal_fd_) {
                    return;
                } else {
                    on_ready(fd, events[i].events);
                }
            }
        }
    }

    [[nodiscard]] const tisock_bench::steady_state& stats() const noexcept { return stats_; }

private:
    void add(int fd, std::uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    }

    void accept_one() {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (static_cast<std::size_t>(fd) >= connections_.size()) connections_.resize(static_cast<std::size_t>(fd) + 1);
            // Registered once for both directions; edge-triggered, so EPOLLOUT reports
            // only a change to writable, which happens after a partial write.
            add(fd, EPOLLIN | EPOLLOUT | EPOLLET);
            stats_.on_accept();
            return;
        }
        if (errno == EMFILE || errno == ENFILE) {
            // Out of descriptors, the pending connection stays in the backlog and the
            // level-triggered listener would wake us forever. Free the spare
            // descriptor, accept and drop the connection, take the spare back (libuv's
            // EMFILE trick).
            ::close(spare_fd_);
            const int victim = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (victim >= 0) ::close(victim);
            spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            return;
        }
        // EAGAIN (another wake-up took it), ECONNABORTED (the peer gave up): nothing to do.
    }

    void on_ready(int fd, std::uint32_t events) {
        connection& c = connections_[static_cast<std::size_t>(fd)];
        if (!c.unsent.empty()) {
            if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
            if (!flush(fd, c)) return;
            // Sent everything: whatever arrived meanwhile is still unread, and its
            // EPOLLIN edge has already been reported, so read now.
            echo(fd, c);
            return;
        }
        if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) echo(fd, c);
    }

    // Reads and writes back until a short read says the socket is drained.
    void echo(int fd, connection& c) {
        for (;;) {
            const ssize_t got = ::read(fd, buffer_, sizeof buffer_);
            if (got == 0) return close_connection(fd, c);
            if (got < 0) {
                if (errno == EAGAIN) return;
                if (errno == EINTR) continue;
                return close_connection(fd, c);
            }
            stats_.on_message();
            const ssize_t sent = ::write(fd, buffer_, static_cast<std::size_t>(got));
            if (sent == got) {
                if (static_cast<std::size_t>(got) < sizeof buffer_) return;
                continue;
            }
            if (sent < 0 && errno != EAGAIN) return close_connection(fd, c);
            const std::size_t done = sent < 0 ? 0 : static_cast<std::size_t>(sent);
            c.unsent.assign(buffer_ + done, buffer_ + got);
            c.unsent_offset = 0;
            return;
        }
    }

    // Returns true when all of c.unsent has been written.
    bool flush(int fd, connection& c) {
        while (c.unsent_offset < c.unsent.size()) {
            const ssize_t sent = ::write(fd, c.unsent.data() + c.unsent_offset, c.unsent.size() - c.unsent_offset);
            if (sent < 0) {
                if (errno == EAGAIN) return false;
                if (errno == EINTR) continue;
                close_connection(fd, c);
                return false;
            }
            c.unsent_offset += static_cast<std::size_t>(sent);
        }
        c.unsent.clear();  // keeps the capacity: the next partial write reuses it
        c.unsent_offset = 0;
        return true;
    }

    void close_connection(int fd, connection& c) {
        ::close(fd);  // the last descriptor of the socket: epoll forgets it by itself
        c.unsent.clear();
        c.unsent.shrink_to_fit();
        c.unsent_offset = 0;
    }

    int listen_fd_;
    int signal_fd_;
    int epoll_fd_;
    int spare_fd_;
    std::vector<connection> connections_;
    tisock_bench::steady_state stats_;
    char buffer_[64 * 1024];
};

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse_options(argc, argv);
    // A peer that resets between our read and our write must cost an EPIPE, not the
    // process.
    ::signal(SIGPIPE, SIG_IGN);
    const rlim_t max_fds = raise_nofile_limit();
    auto* s = new server(opt.port, max_fds);  // 64 KiB buffer: not on the stack
    s->run();
    s->stats().print(stderr);
    delete s;
    return 0;
}
