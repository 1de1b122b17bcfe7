// The test-only kqueue emulation (tests/kqueue_emu/sys/event.h) against the semantics of
// FreeBSD's kqueue(2): if it is wrong, the kqueue-emulation test suite proves nothing.
// Built only with -Dreactor_backend=kqueue-emulation.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "foundation_support.hpp"

namespace {

using tisock_test::descriptors_checked;
using tisock_test::loopback;
using tisock_test::socket_pair;
using clock_type = std::chrono::steady_clock;

struct kq_handle {
    int fd = ::kqueue();
    kq_handle() { REQUIRE(fd >= 0); }
    ~kq_handle() { ::close(fd); }
};

int add(int kq, int ident, int filter, int flags, void* udata = nullptr) {
    struct kevent change{};
    EV_SET(&change, ident, filter, flags, 0, 0, udata);
    return ::kevent(kq, &change, 1, nullptr, 0, nullptr);
}

std::vector<struct kevent> poll_events(int kq, int timeout_ms, int capacity = 16) {
    std::vector<struct kevent> out(static_cast<std::size_t>(capacity));
    timespec ts{timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
    int n = ::kevent(kq, nullptr, 0, out.data(), capacity, &ts);
    REQUIRE(n >= 0);
    out.resize(std::size_t(n));
    return out;
}

// The last event for (ident, filter) seen within `limit` once `done` holds for it.
template <class Done>
struct kevent wait_event(int kq, int ident, int filter, Done done, int limit_ms = 5000) {
    struct kevent last{};
    last.filter = 0;
    auto deadline = clock_type::now() + std::chrono::milliseconds(limit_ms);
    while (clock_type::now() < deadline) {
        for (const struct kevent& e : poll_events(kq, 20))
            if (e.ident == std::uintptr_t(ident) && e.filter == filter) last = e;
        if (last.filter == filter && done(last)) return last;
    }
    FAIL("no matching event for descriptor ", ident, " filter ", filter);
    return last;
}

int count_events(const std::vector<struct kevent>& events, int ident, int filter) {
    int n = 0;
    for (const struct kevent& e : events) n += e.ident == std::uintptr_t(ident) && e.filter == filter;
    return n;
}

int listener(std::uint16_t& port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t size = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size) == 0);
    port = ntohs(a.sin_port);
    return fd;
}

int connect_to(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a = loopback(port);
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    REQUIRE((r == 0 || errno == EINPROGRESS));
    return fd;
}

// A connected TCP pair over loopback: fd[0] the client, fd[1] the accepted side.
struct tcp_pair {
    int fd[2] = {-1, -1};
    tcp_pair() {
        std::uint16_t port = 0;
        int l = listener(port);
        fd[0] = connect_to(port);
        for (int i = 0; i < 500 && fd[1] < 0; ++i) {
            fd[1] = ::accept4(l, nullptr, nullptr, SOCK_NONBLOCK);
            if (fd[1] < 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        ::close(l);
        REQUIRE(fd[1] >= 0);
    }
    ~tcp_pair() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
};

}  // namespace

TEST_CASE_FIXTURE(descriptors_checked, "EV_CLEAR: each arrival is reported once, with the bytes available in data") {
    kq_handle kq;
    socket_pair p;
    int tag = 0;
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD | EV_CLEAR, &tag) == 0);
    CHECK(poll_events(kq.fd, 0).empty());

    REQUIRE(::write(p.fd[1], "abc", 3) == 3);
    std::vector<struct kevent> got = poll_events(kq.fd, 1000);
    REQUIRE(got.size() == 1);
    CHECK(got[0].ident == std::uintptr_t(p.fd[0]));
    CHECK(got[0].filter == EVFILT_READ);
    CHECK(got[0].data == 3);
    CHECK(got[0].udata == &tag);
    CHECK((got[0].flags & EV_CLEAR) != 0);
    CHECK((got[0].flags & (EV_EOF | EV_ERROR)) == 0);

    // The data is still unread, but nothing changed: no event.
    CHECK(poll_events(kq.fd, 50).empty());

    REQUIRE(::write(p.fd[1], "de", 2) == 2);
    got = poll_events(kq.fd, 1000);
    REQUIRE(got.size() == 1);
    CHECK(got[0].data == 5);

    char buffer[8];
    CHECK(::read(p.fd[0], buffer, sizeof buffer) == 5);
    CHECK(poll_events(kq.fd, 50).empty());
}

TEST_CASE_FIXTURE(descriptors_checked, "without EV_CLEAR an event repeats while its condition holds") {
    kq_handle kq;
    socket_pair p;
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD) == 0);
    REQUIRE(::write(p.fd[1], "x", 1) == 1);
    CHECK(count_events(poll_events(kq.fd, 1000), p.fd[0], EVFILT_READ) == 1);
    CHECK(count_events(poll_events(kq.fd, 1000), p.fd[0], EVFILT_READ) == 1);
    char c;
    REQUIRE(::read(p.fd[0], &c, 1) == 1);
    CHECK(poll_events(kq.fd, 50).empty());
}

TEST_CASE_FIXTURE(descriptors_checked, "EV_ONESHOT, EV_DISABLE and EV_ENABLE") {
    kq_handle kq;
    socket_pair p;
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD | EV_ONESHOT) == 0);
    REQUIRE(::write(p.fd[1], "x", 1) == 1);
    CHECK(count_events(poll_events(kq.fd, 1000), p.fd[0], EVFILT_READ) == 1);
    REQUIRE(::write(p.fd[1], "y", 1) == 1);
    CHECK(poll_events(kq.fd, 50).empty());
    CHECK(add(kq.fd, p.fd[0], EVFILT_READ, EV_DELETE) == -1);  // gone after delivery
    CHECK(errno == ENOENT);

    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD | EV_CLEAR | EV_DISABLE) == 0);
    REQUIRE(::write(p.fd[1], "z", 1) == 1);
    CHECK(poll_events(kq.fd, 50).empty());
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ENABLE) == 0);
    std::vector<struct kevent> got = poll_events(kq.fd, 1000);
    REQUIRE(got.size() == 1);
    CHECK(got[0].data == 3);
}

TEST_CASE_FIXTURE(descriptors_checked, "EVFILT_WRITE: data is the free send space; a drained buffer is an edge") {
    kq_handle kq;
    tcp_pair t;
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    REQUIRE(::getsockopt(t.fd[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0);
    REQUIRE(add(kq.fd, t.fd[0], EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    struct kevent first = wait_event(kq.fd, t.fd[0], EVFILT_WRITE, [](const struct kevent&) { return true; });
    CHECK(first.data > 0);
    CHECK(first.data <= sndbuf);
    CHECK((first.flags & EV_EOF) == 0);

    // Fill both buffers: the peer does not read.
    std::vector<char> chunk(65536, 'x');
    long sent = 0;
    for (;;) {
        ssize_t n = ::send(t.fd[0], chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n < 0) break;
        sent += n;
    }
    REQUIRE(errno == EAGAIN);
    (void)poll_events(kq.fd, 50);  // edges from the transfer in progress
    CHECK(poll_events(kq.fd, 50).empty());

    // The peer drains: space comes back and is announced.
    long received = 0;
    struct kevent again{};
    auto deadline = clock_type::now() + std::chrono::seconds(5);
    bool announced = false;
    while (!announced && clock_type::now() < deadline) {
        ssize_t n = ::recv(t.fd[1], chunk.data(), chunk.size(), 0);
        if (n > 0) received += n;
        for (const struct kevent& e : poll_events(kq.fd, 5))
            if (e.filter == EVFILT_WRITE && e.ident == std::uintptr_t(t.fd[0])) {
                again = e;
                announced = true;
            }
    }
    CHECK(announced);
    CHECK(again.data > 0);
    CHECK(received > 0);
    CHECK(sent > 0);
}

TEST_CASE_FIXTURE(descriptors_checked, "EV_EOF when the peer shuts down writing, with the remaining bytes in data") {
    kq_handle kq;
    tcp_pair t;
    REQUIRE(add(kq.fd, t.fd[0], EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
    CHECK(poll_events(kq.fd, 20).empty());
    REQUIRE(::send(t.fd[1], "bye!", 4, MSG_NOSIGNAL) == 4);
    REQUIRE(::shutdown(t.fd[1], SHUT_WR) == 0);
    struct kevent e = wait_event(kq.fd, t.fd[0], EVFILT_READ, [](const struct kevent& k) { return (k.flags & EV_EOF) != 0; });
    CHECK((e.flags & EV_EOF) != 0);
    CHECK(e.data == 4);  // "EOF ... while there is still data pending in the socket buffer"
    CHECK(e.fflags == 0);

    // The peer closing entirely changes nothing more for the read side's data.
    char buffer[8];
    CHECK(::recv(t.fd[0], buffer, sizeof buffer, 0) == 4);
    CHECK(::recv(t.fd[0], buffer, sizeof buffer, 0) == 0);
}

TEST_CASE_FIXTURE(descriptors_checked, "a listening socket: EVFILT_READ data counts the pending connections") {
    kq_handle kq;
    std::uint16_t port = 0;
    int l = listener(port);
    REQUIRE(add(kq.fd, l, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
    CHECK(poll_events(kq.fd, 20).empty());
    int a = connect_to(port);
    int b = connect_to(port);
    struct kevent e = wait_event(kq.fd, l, EVFILT_READ, [](const struct kevent& k) { return k.data == 2; });
    CHECK(e.data == 2);
    int x = ::accept(l, nullptr, nullptr);
    int y = ::accept(l, nullptr, nullptr);
    CHECK(x >= 0);
    CHECK(y >= 0);
    for (int fd : {a, b, x, y, l}) ::close(fd);
}

TEST_CASE_FIXTURE(descriptors_checked, "a refused connect: EVFILT_WRITE with EV_EOF, the errno in fflags") {
    kq_handle kq;
    std::uint16_t port = 0;
    ::close(listener(port));  // a port nobody listens on

    SUBCASE("fflags = ECONNREFUSED when the test opts in") {
        REQUIRE(kqueue_emu::set_report_socket_errors(kq.fd, true) == 0);
        int s = connect_to(port);
        REQUIRE(add(kq.fd, s, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
        struct kevent e = wait_event(kq.fd, s, EVFILT_WRITE, [](const struct kevent& k) { return (k.flags & EV_EOF) != 0; });
        CHECK((e.flags & EV_EOF) != 0);
        CHECK((e.flags & EV_ERROR) == 0);  // EV_ERROR is for change-list entries only
        CHECK(e.fflags == unsigned(ECONNREFUSED));
        ::close(s);
    }
    SUBCASE("by default SO_ERROR is left for the caller (Linux clears it when read)") {
        int s = connect_to(port);
        REQUIRE(add(kq.fd, s, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
        REQUIRE(add(kq.fd, s, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
        struct kevent e = wait_event(kq.fd, s, EVFILT_WRITE, [](const struct kevent& k) { return (k.flags & EV_EOF) != 0; });
        CHECK(e.fflags == 0);
        int err = 0;
        socklen_t len = sizeof err;
        REQUIRE(::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
        CHECK(err == ECONNREFUSED);
        ::close(s);
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "EVFILT_USER: NOTE_TRIGGER from another thread wakes a blocked kevent()") {
    kq_handle kq;
    int tag = 0;
    struct kevent change{};
    EV_SET(&change, 7, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, &tag);
    REQUIRE(::kevent(kq.fd, &change, 1, nullptr, 0, nullptr) == 0);
    CHECK(poll_events(kq.fd, 0).empty());

    auto start = clock_type::now();
    std::thread trigger([&kq] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        struct kevent t{};
        EV_SET(&t, 7, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFCOPY | 0x5, 0, nullptr);
        CHECK(::kevent(kq.fd, &t, 1, nullptr, 0, nullptr) == 0);
    });
    struct kevent out[4];
    int n = ::kevent(kq.fd, nullptr, 0, out, 4, nullptr);  // no timeout: only the trigger ends it
    trigger.join();
    REQUIRE(n == 1);
    CHECK(clock_type::now() - start >= std::chrono::milliseconds(40));
    CHECK(out[0].ident == 7);
    CHECK(out[0].filter == EVFILT_USER);
    CHECK(out[0].fflags == 0x5);
    CHECK(out[0].udata == &tag);

    // EV_CLEAR: delivered once per trigger; several triggers before a wait coalesce.
    CHECK(poll_events(kq.fd, 20).empty());
    struct kevent t{};
    EV_SET(&t, 7, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    REQUIRE(::kevent(kq.fd, &t, 1, nullptr, 0, nullptr) == 0);
    REQUIRE(::kevent(kq.fd, &t, 1, nullptr, 0, nullptr) == 0);
    CHECK(poll_events(kq.fd, 20).size() == 1);
    CHECK(poll_events(kq.fd, 20).empty());

    // A trigger for another kqueue is not ours.
    kq_handle other;
    EV_SET(&t, 7, EVFILT_USER, EV_ADD | EV_CLEAR | EV_ONESHOT, NOTE_TRIGGER, 0, nullptr);
    REQUIRE(::kevent(other.fd, &t, 1, nullptr, 0, nullptr) == 0);
    CHECK(poll_events(kq.fd, 30).empty());
    CHECK(poll_events(other.fd, 0).size() == 1);
    CHECK(poll_events(other.fd, 0).empty());  // EV_ONESHOT: deleted on delivery
}

TEST_CASE_FIXTURE(descriptors_checked, "timeouts: zero polls, a timeout waits that long, and a signal-free wait is not cut short") {
    kq_handle kq;
    auto start = clock_type::now();
    CHECK(poll_events(kq.fd, 0).empty());
    CHECK(clock_type::now() - start < std::chrono::milliseconds(20));

    start = clock_type::now();
    CHECK(poll_events(kq.fd, 60).empty());
    auto waited = clock_type::now() - start;
    CHECK(waited >= std::chrono::milliseconds(59));
    CHECK(waited < std::chrono::seconds(2));

    // A trigger for another kqueue wakes our epoll_wait; the emulation must wait on for
    // the rest of the timeout, not return early.
    kq_handle other;
    struct kevent t{};
    EV_SET(&t, 1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    REQUIRE(::kevent(other.fd, &t, 1, nullptr, 0, nullptr) == 0);
    std::thread trigger([&other] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        struct kevent k{};
        EV_SET(&k, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
        CHECK(::kevent(other.fd, &k, 1, nullptr, 0, nullptr) == 0);
    });
    start = clock_type::now();
    CHECK(poll_events(kq.fd, 100).empty());
    CHECK(clock_type::now() - start >= std::chrono::milliseconds(99));
    trigger.join();

    timespec bad{0, 1000000000L};
    struct kevent out[1];
    CHECK(::kevent(kq.fd, nullptr, 0, out, 1, &bad) == -1);
    CHECK(errno == EINVAL);
}

TEST_CASE_FIXTURE(descriptors_checked, "change-list errors: EV_ERROR in the event list, or -1 with errno") {
    kq_handle kq;
    socket_pair p;
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD | EV_CLEAR) == 0);

    // No event list: -1 with errno.
    CHECK(add(kq.fd, p.fd[0], EVFILT_WRITE, EV_DELETE) == -1);
    CHECK(errno == ENOENT);
    CHECK(add(kq.fd, 12345, EVFILT_READ, EV_ADD) == -1);
    CHECK(errno == EBADF);
    CHECK(add(kq.fd, p.fd[0], -7, EV_ADD) == -1);  // EVFILT_TIMER: not emulated
    CHECK(errno == EINVAL);
    CHECK(add(-1, p.fd[0], EVFILT_READ, EV_ADD) == -1);
    CHECK(errno == EBADF);

    // With room: EV_ERROR entries, the change's ident and filter, errno in data; the call
    // returns without waiting. EV_RECEIPT reports successes (data 0) the same way.
    struct kevent changes[3];
    EV_SET(&changes[0], p.fd[0], EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
    EV_SET(&changes[1], p.fd[1], EVFILT_READ, EV_ADD | EV_CLEAR | EV_RECEIPT, 0, 0, nullptr);
    EV_SET(&changes[2], p.fd[0], EVFILT_READ, EV_DELETE, 0, 0, nullptr);
    struct kevent out[4];
    timespec forever_ish{10, 0};
    auto start = clock_type::now();
    int n = ::kevent(kq.fd, changes, 3, out, 4, &forever_ish);
    CHECK(clock_type::now() - start < std::chrono::seconds(1));
    REQUIRE(n == 2);
    CHECK(out[0].ident == std::uintptr_t(p.fd[0]));
    CHECK(out[0].filter == EVFILT_WRITE);
    CHECK(out[0].flags == EV_ERROR);
    CHECK(out[0].data == ENOENT);
    CHECK(out[1].ident == std::uintptr_t(p.fd[1]));
    CHECK(out[1].flags == EV_ERROR);
    CHECK(out[1].data == 0);
    // The third change (a success without EV_RECEIPT) was applied silently.
    CHECK(add(kq.fd, p.fd[0], EVFILT_READ, EV_DELETE) == -1);
    CHECK(errno == ENOENT);
}

TEST_CASE_FIXTURE(descriptors_checked, "closing a descriptor removes its events, also when the number is reused") {
    kq_handle kq;
    int number = -1;
    {
        socket_pair p;
        number = p.fd[0];
        REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
        REQUIRE(add(kq.fd, p.fd[0], EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
        REQUIRE(::write(p.fd[1], "x", 1) == 1);
        ::close(p.fd[0]);
        p.fd[0] = -1;
        CHECK(poll_events(kq.fd, 30).empty());  // the pending events went with it
        CHECK(add(kq.fd, number, EVFILT_READ, EV_DELETE) == -1);
        CHECK(errno == EBADF);
    }
    socket_pair q;
    REQUIRE(q.fd[0] == number);
    REQUIRE(::write(q.fd[1], "y", 1) == 1);
    CHECK(poll_events(kq.fd, 30).empty());
    CHECK(add(kq.fd, number, EVFILT_READ, EV_DELETE) == -1);  // the old knotes are gone
    CHECK(errno == ENOENT);

    // Registered anew, only the new file's state shows, with the new udata.
    int tag = 0;
    REQUIRE(add(kq.fd, number, EVFILT_READ, EV_ADD | EV_CLEAR, &tag) == 0);
    std::vector<struct kevent> got = poll_events(kq.fd, 1000);
    REQUIRE(got.size() == 1);
    CHECK(got[0].filter == EVFILT_READ);
    CHECK(got[0].udata == &tag);
    CHECK(got[0].data == 1);
}

TEST_CASE_FIXTURE(descriptors_checked, "an event list of one still delivers both filters, over two calls") {
    kq_handle kq;
    socket_pair p;
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(add(kq.fd, p.fd[0], EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(::write(p.fd[1], "x", 1) == 1);
    int reads = 0;
    int writes = 0;
    for (int i = 0; i < 4; ++i)
        for (const struct kevent& e : poll_events(kq.fd, 20, 1)) {
            reads += e.filter == EVFILT_READ;
            writes += e.filter == EVFILT_WRITE;
        }
    CHECK(reads >= 1);
    CHECK(writes >= 1);
}
