// Fault suite, connected sockets: resets, SIGPIPE, write timeouts, partial writes and EAGAIN
// storms, write queues cut by close(), shutdown after writes, EINTR everywhere, sockets
// destroyed by `ss -K`, out-of-band data, a loop that must idle.
//
// SIGPIPE is deliberately left at SIG_DFL: if the library ever raised it, this executable
// would die, and the test asserts the disposition is still the default.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <optional>

#include "fault_support.hpp"

using namespace fault_test;
using tisock::io_event;
using tisock::reactor;
using tisock::state;
using tisock::tcp;
using tisock::detail::sys::call;

namespace {

bool sigpipe_is_default() {
    struct sigaction sa {};
    ::sigaction(SIGPIPE, nullptr, &sa);
    return sa.sa_handler == SIG_DFL;
}

// A library client connected to a raw peer on 127.0.0.1, with its callbacks counted.
struct connection {
    raw_fd listener;
    raw_fd peer;
    int connected = 0;
    int errors = 0;
    std::error_code code;
    std::optional<tcp> sock;

    explicit connection(reactor& r, milliseconds timeout = 0ms) {
        int port = 0;
        listener = raw_listener("127.0.0.1", 16, port);
        sock.emplace(r, tisock::tcp_options{.host = "127.0.0.1",
                                            .port = port,
                                            .timeout = timeout,
                                            .connected = [this](tcp&) { ++connected; },
                                            .error = [this](tcp& s, const std::string&, std::error_code ec) {
                                                ++errors;
                                                code = ec;
                                                CHECK(s.state() == state::error);
                                                CHECK(s.native_handle() == -1);
                                            }});
        sock->connect();
        REQUIRE(run_until(r, [&] { return connected == 1; }));
        peer = raw_accept(listener.get());
        REQUIRE(peer);
    }
    const tcp& s() const { return *sock; }
};

// The outcome of callback reads.
struct reads {
    int calls = 0;
    std::vector<io_event> events;
    std::string data;
    tisock::buffer into{4096};

    io_event& last() { return events.back(); }
    // Starts a read; when `again`, every successful read starts the next one.
    void start(const tcp& s, bool again = false) {
        s.read(into, [this, again](const io_event& e) {
            ++calls;
            events.push_back(e);
            if (e.bytes_processed > 0) {
                data += into.to_string().substr(0, std::size_t(e.bytes_processed));
                if (again) start(e.source, true);
            }
        });
    }
};

// Byte i of a test stream: not periodic over short spans, so a lost or repeated chunk shows.
char pattern_at(std::uint64_t i) { return char((i * 131 + (i >> 12) * 7) & 0xff); }

tisock::buffer buffer_of(std::string_view bytes) {
    tisock::buffer b(bytes.size());
    std::memcpy(b.data(), bytes.data(), bytes.size());
    return b;
}

std::string pattern(std::uint64_t offset, std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t k = 0; k < n; ++k) s[k] = pattern_at(offset + k);
    return s;
}

// A raw reader thread: reads `fd` to end of stream (or error), checking the pattern.
struct pattern_reader {
    std::atomic<std::uint64_t> received{0};
    std::atomic<bool> intact{true};
    std::atomic<bool> finished{false};
    std::atomic<int> error{0};
    std::thread thread;

    void start(int fd, milliseconds delay = 0ms) {
        thread = std::thread([this, fd, delay] {
            std::this_thread::sleep_for(delay);
            std::vector<char> chunk(1 << 16);
            auto end = test_clock::now() + 60s;
            while (test_clock::now() < end) {
                if (!wait_fd(fd, POLLIN, 50ms)) continue;
                ssize_t n = ::recv(fd, chunk.data(), chunk.size(), MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (n <= 0) {
                    if (n < 0) error = errno;
                    break;
                }
                std::uint64_t at = received;
                for (ssize_t k = 0; k < n; ++k) {
                    if (chunk[std::size_t(k)] != pattern_at(at + std::uint64_t(k))) intact = false;
                }
                received += std::uint64_t(n);
            }
            finished = true;
        });
    }
    void join() {
        if (thread.joinable()) thread.join();
    }
    ~pattern_reader() { join(); }
};

tisock::task<void> read_expecting(tcp s, std::span<std::byte> into, std::error_code& ec, std::size_t& n,
                                  int& completions) {
    try {
        n = co_await s.async_read(into);
    } catch (const std::system_error& e) {
        ec = e.code();
    }
    ++completions;
}

// A test over one connection, checked for leaked descriptors once both are gone.
struct connection_test : descriptors_checked {
    reactor r;
    connection c{r};
};

}  // namespace

TEST_CASE("a peer reset during a pending read: ECONNRESET, state error, error callback once, descriptor closed") {
    REQUIRE(sigpipe_is_default());
    descriptor_baseline fds;
    {
        reactor r;
        SUBCASE("no data before the reset") {
            connection c(r);
            reads rd;
            rd.start(c.s());
            pump(r, 20ms);
            CHECK(rd.calls == 0);
            set_linger_zero(c.peer.get());
            c.peer.reset();
            REQUIRE(run_until(r, [&] { return rd.calls == 1; }));
            pump(r, 20ms);
            CHECK(rd.calls == 1);
            CHECK_FALSE(rd.last().success);
            CHECK(rd.last().bytes_processed == -1);
            CHECK(rd.last().code == std::errc::connection_reset);
            CHECK(c.errors == 1);
            CHECK(c.code == std::errc::connection_reset);
            CHECK(c.s().state() == state::error);
            CHECK(c.s().native_handle() == -1);
        }
        SUBCASE("data sent before the reset is delivered first") {
            connection c(r);
            reads rd;
            rd.start(c.s(), true);
            pump(r, 20ms);
            send_all(c.peer.get(), "last words");
            set_linger_zero(c.peer.get());
            c.peer.reset();
            REQUIRE(run_until(r, [&] { return c.errors == 1; }));
            pump(r, 20ms);
            CHECK(rd.data == "last words");  // Linux keeps queued data readable before the reset
            CHECK(rd.calls == 2);
            CHECK(rd.last().code == std::errc::connection_reset);
            CHECK(c.errors == 1);
            CHECK(c.s().state() == state::error);
        }
        SUBCASE("coroutine read") {
            connection c(r);
            std::array<std::byte, 64> buf{};
            std::error_code ec;
            std::size_t n = 0;
            int completions = 0;
            tisock::spawn(r, read_expecting(c.s(), buf, ec, n, completions));
            pump(r, 20ms);
            set_linger_zero(c.peer.get());
            c.peer.reset();
            REQUIRE(run_until(r, [&] { return completions == 1; }));
            pump(r, 20ms);
            CHECK(completions == 1);
            CHECK(ec == std::errc::connection_reset);
            CHECK(c.errors == 1);
            CHECK(c.s().state() == state::error);
        }
    }
    check_nothing_left(fds);
}

TEST_CASE("the peer goes away while we write: no SIGPIPE, EPIPE/ECONNRESET, state error") {
    REQUIRE(sigpipe_is_default());
    descriptor_baseline fds;
    {
        reactor r;
        SUBCASE("peer closes with our data unread while a large write is in progress") {
            connection c(r);
            int writes = 0;
            std::error_code wec;
            c.s().write(tisock::buffer(32u << 20), [&](const io_event& e) {
                ++writes;
                wec = e.code;
                CHECK_FALSE(e.success);
            });
            pump(r, 50ms);
            c.peer.reset();  // unread data: the kernel answers with a reset
            REQUIRE(run_until(r, [&] { return writes == 1 && c.errors == 1; }));
            pump(r, 20ms);
            CHECK(writes == 1);
            CHECK((wec == std::errc::broken_pipe || wec == std::errc::connection_reset));
            CHECK(c.errors == 1);
            CHECK(c.s().state() == state::error);
        }
        SUBCASE("peer closed first (FIN); small writes until one fails") {
            connection c(r);
            c.peer.reset();
            pump(r, 20ms);
            int ok = 0, failed = 0;
            std::error_code wec;
            for (int i = 0; i < 50 && c.s().state() == state::connected; ++i) {
                c.s().write(tisock::buffer::from_string("are you there?"), [&](const io_event& e) {
                    if (e.success) {
                        ++ok;
                    } else {
                        ++failed;
                        wec = e.code;
                    }
                });
                pump(r, 5ms);
            }
            pump(r, 20ms);
            CHECK(failed == 1);
            CHECK(ok >= 1);  // the first write is buffered; the reset makes the next fail
            CHECK((wec == std::errc::broken_pipe || wec == std::errc::connection_reset));
            CHECK(c.errors == 1);
            CHECK(c.s().state() == state::error);
        }
    }
    CHECK(sigpipe_is_default());
    check_nothing_left(fds);
}

TEST_CASE_FIXTURE(descriptors_checked, "a write timeout against a peer that never reads: timed_out after the timeout, state error") {
    reactor r;
    connection c(r, 200ms);
    int writes = 0;
    std::error_code wec;
    stopwatch t0;
    c.s().write(tisock::buffer(64u << 20), [&](const io_event& e) {
        ++writes;
        wec = e.code;
    });
    REQUIRE(run_until(r, [&] { return writes == 1; }, 5s));
    auto elapsed = t0.elapsed();
    pump(r, 20ms);
    CHECK(elapsed >= 200ms);
    CHECK(elapsed < 2000ms);
    CHECK(wec == std::errc::timed_out);
    CHECK(c.errors == 1);
    CHECK(c.code == std::errc::timed_out);
    CHECK(c.s().state() == state::error);
}

TEST_CASE_FIXTURE(connection_test, "an orderly FIN is end of stream, not an error; the socket stays connected") {
    send_all(c.peer.get(), "bye");
    ::shutdown(c.peer.get(), SHUT_WR);
    reads rd;
    rd.start(c.s(), true);
    REQUIRE(run_until(r, [&] { return rd.calls == 2; }));
    CHECK(rd.data == "bye");
    CHECK(rd.last().success);
    CHECK(rd.last().bytes_processed == -1);
    CHECK(c.s().state() == state::connected);
    std::array<std::byte, 16> buf{};
    std::error_code ec;
    std::size_t n = 99;
    int completions = 0;
    tisock::sync_wait(r, read_expecting(c.s(), buf, ec, n, completions));
    CHECK(completions == 1);
    CHECK(!ec);
    CHECK(n == 0);
    // Writing still works after the peer's FIN (half-close).
    int writes = 0;
    c.s().write(tisock::buffer::from_string("still here"), [&](const io_event& e) { writes += e.success ? 1 : 100; });
    REQUIRE(run_until(r, [&] { return writes > 0; }));
    CHECK(writes == 1);
    CHECK(raw_read_to_eof(c.peer.get(), 200ms).substr(0, 10) == "still here");
    CHECK(c.errors == 0);
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "a peer that closes with our data unread: ECONNRESET on the pending read") {
    int writes = 0;
    c.s().write(tisock::buffer::from_string("never read"), [&](const io_event& e) { writes += e.success ? 1 : 100; });
    REQUIRE(run_until(r, [&] { return writes == 1; }));
    REQUIRE(wait_fd(c.peer.get(), POLLIN, 1s));  // the bytes sit unread in the peer
    reads rd;
    rd.start(c.s());
    c.peer.reset();
    REQUIRE(run_until(r, [&] { return rd.calls == 1; }));
    pump(r, 20ms);
    CHECK(rd.last().code == std::errc::connection_reset);
    CHECK(c.errors == 1);
    CHECK(c.s().state() == state::error);
}

TEST_CASE_FIXTURE(connection_test, "data arriving while nobody reads does not make the loop spin") {
    send_all(c.peer.get(), "unexpected");
    double cpu0 = cpu_seconds();
    tisock::spawn(r, sleep_task(r, 100ms));
    std::size_t handlers = r.run_for(300ms);  // the sleeper's start and end, nothing else
    send_all(c.peer.get(), " more");
    tisock::spawn(r, sleep_task(r, 100ms));
    handlers += r.run_for(300ms);
    double cpu = cpu_seconds() - cpu0;
    CHECK(handlers <= 6);
    CHECK(cpu < 0.1);
    reads rd;
    rd.start(c.s());
    REQUIRE(run_until(r, [&] { return rd.calls == 1; }));
    CHECK(rd.data == "unexpected more");
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "an out-of-band byte does not wedge the loop") {
    reads rd;
    rd.start(c.s(), true);
    pump(r, 10ms);
    REQUIRE(::send(c.peer.get(), "!", 1, MSG_OOB) == 1);
    send_all(c.peer.get(), "normal data");
    double cpu0 = cpu_seconds();
    REQUIRE(run_until(r, [&] { return rd.data.find("normal data") != std::string::npos; }));
    pump(r, 100ms);
    CHECK(cpu_seconds() - cpu0 < 0.1);
    CHECK(rd.data.find("normal data") != std::string::npos);
    CHECK(c.errors == 0);
    CHECK(c.s().state() == state::connected);
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "a second concurrent read throws state_error; the first one is unaffected") {
    reads first, second;
    first.start(c.s());
    CHECK_THROWS_AS(second.start(c.s()), tisock::state_error);
    std::array<std::byte, 16> buf{};
    bool threw = false;
    auto second_read = [](tcp s, std::span<std::byte> b, bool& out) -> tisock::task<void> {
        try {
            (void)co_await s.async_read(b);
        } catch (const tisock::state_error&) {
            out = true;
        }
    };
    tisock::sync_wait(r, second_read(c.s(), buf, threw));
    CHECK(threw);
    send_all(c.peer.get(), "for the first");
    REQUIRE(run_until(r, [&] { return first.calls == 1; }));
    pump(r, 20ms);
    CHECK(first.data == "for the first");
    CHECK(second.calls == 0);
    CHECK(c.s().state() == state::connected);
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "injected short sends and EAGAIN storms: 1 MiB arrives intact") {
    // A real short send or EAGAIN means the send buffer is full, and the kernel signals
    // writability again once space frees up; the library waits for that edge. An
    // injected one leaves the buffer empty, so the hook supplies the edge as the kernel
    // would: the peer sends one byte back, a wake-up that epoll reports with EPOLLOUT.
    int peer_fd = c.peer.get();
    int one = 1;  // no Nagle: each edge byte leaves at once, and so do our short sends
    ::setsockopt(peer_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c.s().set_no_delay(true);
    int shortened = 0, storms = 0, sends = 0;
    fault_scope faults([&](call k, std::size_t& length, long& value, int& error) {
        if (k != call::send || sends >= 4000) return false;
        ++sends;
        (void)::send(peer_fd, "p", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sends % 4 == 0) {
            ++storms;
            return inject(value, error, EAGAIN);
        }
        ++shortened;
        length = std::min<std::size_t>(length, std::size_t(1 + sends % 7));
        return false;
    });
    reads pings;
    pings.start(c.s(), true);  // consumes the edge bytes
    pattern_reader peer;
    peer.start(peer_fd);
    constexpr std::size_t total = 1u << 20, chunk = 64u << 10;
    int writes_done = 0;
    for (std::size_t off = 0; off < total; off += chunk) {
        std::string p = pattern(off, chunk);
        c.s().write(buffer_of(p), [&](const io_event& e) { writes_done += e.success ? 1 : 1000; });
    }
    REQUIRE(run_until(r, [&] { return writes_done >= int(total / chunk); }, 30s));
    CHECK(writes_done == int(total / chunk));
    int shut = 0;
    c.s().shutdown([&](tcp&, std::error_code ec) { shut += ec ? 100 : 1; });
    REQUIRE(run_until(r, [&] { return shut > 0 && peer.finished; }, 30s));
    peer.join();
    CHECK(shut == 1);
    CHECK(peer.received == total);
    CHECK(peer.intact);
    CHECK(shortened > 1000);
    CHECK(storms > 500);
    CHECK(c.errors == 0);
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "10,000 queued writes complete in FIFO order; close() cancels the rest, in order") {
    int small = 4096;
    ::setsockopt(c.s().native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ::setsockopt(c.peer.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    constexpr int count = 10'000;
    constexpr std::size_t size = 1024;
    struct entry {
        int index;
        bool success;
        std::error_code code;
    };
    std::vector<entry> log;
    for (int i = 0; i < count; ++i) {
        c.s().write(buffer_of(pattern(std::uint64_t(i) * size, size)),
                    [&log, i](const io_event& e) { log.push_back({i, e.success, e.code}); });
    }
    pump(r, 50ms);
    std::size_t before_close = log.size();
    CHECK(before_close < std::size_t(count));  // the peer reads nothing: most are queued
    std::string received = raw_read_to_eof(c.peer.get(), 30ms);  // let some more through
    pump(r, 50ms);
    c.s().close();
    REQUIRE(run_until(r, [&] { return log.size() == std::size_t(count); }));
    pump(r, 20ms);
    REQUIRE(log.size() == std::size_t(count));
    int succeeded = 0;
    bool in_order = true, prefix = true;
    for (int i = 0; i < count; ++i) {
        const entry& e = log[std::size_t(i)];
        in_order = in_order && e.index == i;
        if (e.success) {
            prefix = prefix && succeeded == i;
            ++succeeded;
        } else {
            CHECK(e.code == std::errc::operation_canceled);
        }
    }
    CHECK(in_order);
    CHECK(prefix);  // every success precedes every cancellation
    CHECK(succeeded > 0);
    CHECK(succeeded < count);
    CHECK(c.errors == 0);  // close() runs no error callback
    // What reached the kernel is delivered with a normal FIN: all of the successful
    // writes, plus perhaps the part of the next one that was already handed over.
    received += raw_read_to_eof(c.peer.get(), 10s);
    CHECK(received.size() >= std::size_t(succeeded) * size);
    CHECK(received.size() < std::size_t(succeeded + 1) * size);
    CHECK(received == pattern(0, received.size()));
}

TEST_CASE_FIXTURE(connection_test, "a write after shutdown() throws state_error") {
    int done = 0;
    c.s().shutdown([&](tcp&, std::error_code ec) { done += ec ? 100 : 1; });
    CHECK_THROWS_AS(c.s().write(tisock::buffer::from_string("late"), [](const io_event&) {}), tisock::state_error);
    CHECK_THROWS_AS(c.s().shutdown(), tisock::state_error);
    bool threw = false;
    auto late_write = [](tcp s, bool& out) -> tisock::task<void> {
        static const char text[] = "late";
        try {
            (void)co_await s.async_write(bytes_of(text));
        } catch (const tisock::state_error&) {
            out = true;
        }
    };
    tisock::sync_wait(r, late_write(c.s(), threw));
    CHECK(threw);
    REQUIRE(run_until(r, [&] { return done > 0; }));
    CHECK(done == 1);
    CHECK(raw_read_to_eof(c.peer.get(), 1s).empty());  // FIN, no stray bytes
    CHECK(c.s().state() == state::connected);
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "a write then shutdown delivers every byte before end of stream") {
    constexpr std::size_t total = 4u << 20, chunk = 1u << 20;
    std::vector<int> order;
    for (std::size_t off = 0; off < total; off += chunk) {
        c.s().write(buffer_of(pattern(off, chunk)), [&order](const io_event& e) { order.push_back(e.success ? 1 : 100); });
    }
    c.s().shutdown([&order](tcp&, std::error_code ec) { order.push_back(ec ? 200 : 2); });
    pattern_reader peer;
    peer.start(c.peer.get());
    REQUIRE(run_until(r, [&] { return order.size() == 5 && peer.finished; }, 20s));
    peer.join();
    CHECK(order == std::vector<int>{1, 1, 1, 1, 2});
    CHECK(peer.received == total);
    CHECK(peer.intact);
    CHECK(peer.error == 0);
    CHECK(c.errors == 0);
    c.s().close();
}

TEST_CASE_FIXTURE(connection_test, "EAGAIN storm: 64 MiB queued to a peer that does not read; the loop idles, nothing is lost") {
    constexpr std::size_t total = 64u << 20, chunk = 1u << 20;
    int done = 0;
    for (std::size_t off = 0; off < total; off += chunk) {
        c.s().write(buffer_of(pattern(off, chunk)), [&done](const io_event& e) { done += e.success ? 1 : 1000; });
    }
    double cpu0 = cpu_seconds();
    pump(r, 300ms);
    double idle_cpu = cpu_seconds() - cpu0;
    CHECK(idle_cpu < 0.1);
    CHECK(done < int(total / chunk));
    pattern_reader peer;
    peer.start(c.peer.get());
    REQUIRE(run_until(r, [&] { return done >= int(total / chunk); }, 60s));
    int shut = 0;
    c.s().shutdown([&](tcp&, std::error_code ec) { shut += ec ? 100 : 1; });
    REQUIRE(run_until(r, [&] { return peer.finished.load(); }, 60s));
    peer.join();
    CHECK(done == int(total / chunk));
    CHECK(shut == 1);
    CHECK(peer.received == total);
    CHECK(peer.intact);
    CHECK(c.errors == 0);
    c.s().close();
}

TEST_CASE("ss -K destroys the connection: ECONNABORTED on the next operation, state error") {
    // Probe: does `ss -K` work here (CONFIG_INET_DIAG_DESTROY, CAP_NET_ADMIN)?
    auto kill_socket = [](int dport) {
        std::string cmd = "ss -K dst 127.0.0.1 dport = " + std::to_string(dport) + " >/dev/null 2>&1";
        return std::system(cmd.c_str());
    };
    {
        int port = 0;
        raw_fd l = raw_listener("127.0.0.1", 4, port);
        raw_fd a = raw_connect("127.0.0.1", port);
        raw_fd b = raw_accept(l.get());
        (void)kill_socket(port);
        char ch;
        bool works = wait_fd(a.get(), POLLIN, 200ms) && ::recv(a.get(), &ch, 1, MSG_DONTWAIT) == -1 && errno == ECONNABORTED;
        if (!works) {
            MESSAGE("skipped: `ss -K` cannot destroy sockets here (no INET_DIAG_DESTROY or no CAP_NET_ADMIN)");
            return;
        }
    }
    descriptor_baseline fds;
    {
        reactor r;
        connection c(r);
        reads rd;
        rd.start(c.s());
        pump(r, 10ms);
        int dport = 0;
        {
            sockaddr_storage s{};
            socklen_t n = sizeof s;
            ::getpeername(c.s().native_handle(), reinterpret_cast<sockaddr*>(&s), &n);
            dport = ntohs(reinterpret_cast<sockaddr_in*>(&s)->sin_port);
        }
        (void)kill_socket(dport);
        REQUIRE(run_until(r, [&] { return rd.calls == 1; }));
        pump(r, 20ms);
        CHECK(rd.last().code == std::errc::connection_aborted);
        CHECK(c.errors == 1);
        CHECK(c.code == std::errc::connection_aborted);
        CHECK(c.s().state() == state::error);
        CHECK(c.s().native_handle() == -1);
    }
    check_nothing_left(fds);
}

TEST_CASE_FIXTURE(descriptors_checked, "EINTR injected on connect, accept, recv and send is retried transparently") {
    reactor r;
    int interrupted[4] = {};
    bool toggle[4] = {};
    fault_scope faults([&](call k, std::size_t&, long& value, int& error) {
        int slot = k == call::connect ? 0 : k == call::accept ? 1 : k == call::recv ? 2 : k == call::send ? 3 : -1;
        if (slot < 0) return false;
        toggle[slot] = !toggle[slot];
        if (!toggle[slot]) return false;  // every other call is interrupted
        ++interrupted[slot];
        return inject(value, error, EINTR);
    });
    tcp listener(r, {.host = "127.0.0.1", .port = 0});
    listener.listen();
    int errors = 0;
    tisock::error_callback count_errors = [&](tcp&, const std::string&, std::error_code) { ++errors; };
    tcp client(r, {.host = "127.0.0.1", .port = listener.port(), .error = count_errors});
    std::string server_got, client_got, failure;
    bool finished = false;
    auto exchange = [](tcp l, tcp cl, std::string& sg, std::string& cg, std::string& fail, bool& fin) -> tisock::task<void> {
        try {
            co_await cl.async_connect();
            fail = "connected";
            tcp in = co_await l.async_accept();
            fail = "";
            for (int round = 0; round < 20; ++round) {
                std::array<std::byte, 64> buf{};
                (void)co_await cl.async_write(bytes_of("ping"));
                std::size_t n = co_await in.async_read(buf);
                sg.append(reinterpret_cast<const char*>(buf.data()), n);
                (void)co_await in.async_write(bytes_of("pong"));
                n = co_await cl.async_read(buf);
                cg.append(reinterpret_cast<const char*>(buf.data()), n);
            }
            in.close();
        } catch (const std::exception& e) {
            fail = e.what();
        }
        fin = true;
    };
    tisock::spawn(r, exchange(listener, client, server_got, client_got, failure, finished));
    bool in_time = run_until(r, [&] { return finished; }, 10s);
    INFO("stage: " << failure);
    REQUIRE(in_time);
    CHECK(failure.empty());
    CHECK(server_got.size() == 80);
    CHECK(client_got.size() == 80);
    CHECK(errors == 0);
    CHECK(client.state() == state::connected);
    CHECK(interrupted[0] >= 1);
    CHECK(interrupted[1] >= 1);
    CHECK(interrupted[2] >= 10);
    CHECK(interrupted[3] >= 10);
    if (client.state() == state::connected) client.close();
    listener.close();
}
