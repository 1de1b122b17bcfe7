// A descriptor leaving a socket and coming into one (API.md v3 "Several cores"):
// tcp::release(), tcp::adopt() and tcp_options::reuse_port, over real loopback sockets.
// The hand-off tests drive two reactors from one thread: what moves between them is the
// descriptor, and nothing the kernel already received may be lost or read twice.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "support.hpp"

using namespace tisock_test;
using tisock::io_event;
using tisock::state;
using tisock::tcp;

namespace {

// Reads until `n` bytes arrived on `s` (coroutine reads, bounded).
std::string read_n(tisock::reactor& r, const tcp& s, std::size_t n) {
    std::string got;
    outcome o;
    start(r, [](tcp s, std::string& got, std::size_t n) -> tisock::task<void> {
        std::byte b[4096];
        while (got.size() < n) {
            const std::size_t k = co_await s.async_read(std::span(b, std::min(sizeof b, n - got.size())));
            if (k == 0) co_return;
            got += text_of(std::span(b, k));
        }
    }(s, got, n), o);
    REQUIRE(run_until(r, [&] { return o.done; }));
    REQUIRE_MESSAGE(!o.error, o.what());
    return got;
}

bool is_nonblocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

bool throws_invalid_argument(tisock::reactor& r, int fd) {
    try {
        (void)tcp::adopt(r, fd);
    } catch (const std::invalid_argument&) {
        return true;
    }
    return false;
}

}  // namespace

TEST_CASE_FIXTURE(socket_test, "release() gives a connected socket's descriptor to the caller; adopt() on another reactor reads what the kernel holds") {
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    error_log errors;
    t.inbound.set_error(errors.callback());
    REQUIRE(::send(t.client.native_handle(), "before", 6, MSG_NOSIGNAL) == 6);
    run_for_at_least(r, 20ms);  // the bytes wait in the inbound socket's kernel buffer
    const int peer_port = t.inbound.port();

    const int fd = t.inbound.release();
    CHECK(fd >= 0);
    CHECK(t.inbound.state() == state::closed);
    CHECK(t.inbound.native_handle() == -1);
    CHECK(descriptor_is_open(fd));
    CHECK(is_nonblocking(fd));
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    run_for_at_least(r, 20ms);
    CHECK(errors.count == 0);

    std::optional<tisock::reactor> other_reactor(std::in_place);
    tisock::reactor& other = *other_reactor;
    tcp moved = tcp::adopt(other, fd);
    CHECK(moved.state() == state::connected);
    CHECK(moved.port() == peer_port);
    CHECK(moved.host() == t.client.local_host());
    CHECK(read_n(other, moved, 6) == "before");
    REQUIRE(::send(t.client.native_handle(), "after", 5, MSG_NOSIGNAL) == 5);
    CHECK(read_n(other, moved, 5) == "after");
    moved.write(tisock::buffer::from_string("back"), {});
    CHECK(read_n(r, t.client, 4) == "back");
    CHECK_THROWS_AS(moved.connect(), tisock::state_error);  // like an accepted socket
    moved.close();
    t.close_all();
    CHECK(reactor_is_idle(other));
    other_reactor.reset();  // its own descriptors go with it
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "release() refuses while an operation is pending, and on a socket without a descriptor") {
    TISOCK_LOOPBACK_HOSTS(host);

    socket_trio t = connect_trio(r, host);
    tisock::buffer b(8);
    int reads = 0;
    t.client.read(b, [&](const io_event&) { ++reads; });
    CHECK_THROWS_AS((void)t.client.release(), tisock::state_error);
    t.client.cancel();
    REQUIRE(run_until(r, [&] { return reads == 1; }));
    t.listener.accept();  // a flagged accept counts as pending
    CHECK_THROWS_AS((void)t.listener.release(), tisock::state_error);
    t.listener.cancel();
    tcp fresh(r, {.host = host, .port = 1});
    CHECK_THROWS_AS((void)fresh.release(), tisock::state_error);
    CHECK_THROWS_AS((void)tcp().release(), tisock::state_error);
    const int fd = t.client.release();  // nothing pending now
    CHECK(::close(fd) == 0);
    t.close_all();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "a released listener resets what it had queued; adopted elsewhere it accepts with an exact listen_queue_size") {
    TISOCK_LOOPBACK_HOSTS(host);

    tcp listener = make_listener(r, host);
    const int port = listener.port();
    raw_peer queued = raw_peer::connect(host, port);
    run_for_at_least(r, 30ms);  // taken off the kernel queue into the listener's own
    const int fd = listener.release();
    CHECK(listener.state() == state::closed);
    std::string rest = queued.receive_some(16);  // reset, as close() would
    CHECK(rest.empty());

    queued.close();
    std::optional<tisock::reactor> other_reactor(std::in_place);
    tisock::reactor& other = *other_reactor;
    tcp adopted = tcp::adopt(other, fd, {.host = "ignored", .port = 7, .listen_queue_size = 2});
    CHECK(adopted.state() == state::listening);
    CHECK(adopted.port() == port);
    CHECK(adopted.listen_queue_size() == 2);
    // Five connections while nobody accepts: two wait, three are reset at once.
    std::vector<raw_peer> peers;
    for (int i = 0; i < 5; ++i) peers.push_back(raw_peer::connect(host, port));
    run_for_at_least(other, 50ms);
    std::vector<tcp> accepted;
    adopted.set_accepted([&](tcp&, tcp in) { accepted.push_back(in); });
    for (int i = 0; i < 2; ++i) {
        adopted.accept();
        REQUIRE(run_until(other, [&] { return accepted.size() == std::size_t(i + 1); }));
    }
    run_for_at_least(other, 30ms);
    CHECK(accepted.size() == 2);
    for (tcp& a : accepted) a.close();
    adopted.close();
    peers.clear();
    CHECK(reactor_is_idle(other));
    accepted.clear();
    other_reactor.reset();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "adopt() refuses what is not a listening or connected TCP socket, and leaves it untouched") {
    const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const int unconnected = ::socket(AF_INET, SOCK_STREAM, 0);
    const int unix_stream = ::socket(AF_UNIX, SOCK_STREAM, 0);
    for (int fd : {udp, pipe_fds[0], unconnected, unix_stream}) {
        REQUIRE(fd >= 0);
        CHECK(throws_invalid_argument(r, fd));
        CHECK(descriptor_is_open(fd));
        CHECK_FALSE(is_nonblocking(fd));  // untouched
        ::close(fd);
    }
    ::close(pipe_fds[1]);
    CHECK(throws_invalid_argument(r, -1));
    CHECK(throws_invalid_argument(r, 1'000'000));  // not an open descriptor
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "connections handed between reactors with bytes in flight: nothing lost, nothing read twice") {
    // 1,000 times: the peer streams; the server side reads some on reactor A, is released,
    // adopted on reactor B, reads the rest. Both halves together are exactly what was sent.
    tcp listener = make_listener(r, "127.0.0.1");
    std::optional<tisock::reactor> b_reactor(std::in_place);
    tisock::reactor& b = *b_reactor;
    std::mt19937 rng(17);
    for (int i = 0; i < 1000; ++i) {
        raw_peer peer = raw_peer::connect("127.0.0.1", listener.port());
        std::optional<tcp> in;
        outcome accepted;
        start(r, [](tcp l, std::optional<tcp>& out) -> tisock::task<void> { out = co_await l.async_accept(); }(listener, in),
              accepted);
        REQUIRE(run_until(r, [&] { return accepted.done; }));
        REQUIRE(in.has_value());
        std::string message(1 + rng() % 3000, '\0');
        for (std::size_t k = 0; k < message.size(); ++k) message[k] = char('A' + (k * 13 + std::size_t(i)) % 26);
        const std::size_t split = rng() % (message.size() + 1);
        REQUIRE(peer.send_all(message.substr(0, split)));
        std::string got = read_n(r, *in, split);
        REQUIRE(peer.send_all(message.substr(split)));  // in flight while the socket moves
        tcp moved = tcp::adopt(b, in->release());
        got += read_n(b, moved, message.size() - split);
        REQUIRE(got == message);
        moved.close();
    }
    listener.close();
    CHECK(reactor_is_idle(b));
    b_reactor.reset();
    check_nothing_left(r, fds);
}

TEST_CASE_FIXTURE(socket_test, "reuse_port: listeners on one port share connections; without it the second fails with address_in_use") {
    tcp first(r, {.host = "127.0.0.1", .port = 0, .reuse_port = true});
    first.listen();
    CHECK(first.reuse_port());
    CHECK_THROWS_AS(first.set_reuse_port(false), tisock::state_error);
    std::optional<tisock::reactor> other_reactor(std::in_place);
    tisock::reactor& other = *other_reactor;
    tcp second(other, {.host = "127.0.0.1", .port = first.port()});
    second.set_reuse_port(true);
    second.listen();
    CHECK(second.state() == state::listening);

    // Linux spreads connections over the listeners by a hash of the client's address and
    // port: 64 connections reach both.
    int on_first = 0, on_second = 0;
    first.set_accepted([&](tcp& l, tcp in) {
        ++on_first;
        in.close();
        l.accept();
    });
    second.set_accepted([&](tcp& l, tcp in) {
        ++on_second;
        in.close();
        l.accept();
    });
    first.accept();
    second.accept();
    std::vector<raw_peer> peers;
    for (int i = 0; i < 64; ++i) peers.push_back(raw_peer::connect("127.0.0.1", first.port()));
    const auto deadline = test_clock::now() + 5s;
    while (on_first + on_second < 64 && test_clock::now() < deadline) {
        r.poll();
        other.poll();
        std::this_thread::sleep_for(1ms);
    }
    CHECK(on_first + on_second == 64);
    CHECK(on_first > 0);
    CHECK(on_second > 0);

    tcp plain(r, {.host = "127.0.0.1", .port = first.port()});
    try {
        plain.listen();
        FAIL("a listener without reuse_port on a taken port must fail");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::address_in_use);
    }
    CHECK(plain.state() == state::error);
    peers.clear();
    first.close();
    second.close();
    CHECK(reactor_is_idle(other));
    other_reactor.reset();
    check_nothing_left(r, fds);
}
