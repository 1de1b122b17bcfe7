// Fault suite, listener side: a port in use, an exact listen_queue_size, running out of
// descriptors while accepting, accept errors injected through the fault hook, closing a
// listener with an accept pending, and 2,000 connect/accept/close cycles without a
// descriptor leak.
#include <doctest/doctest.h>

#include <map>
#include <optional>

#include "fault_support.hpp"

using namespace fault_test;
using tisock::reactor;
using tisock::state;
using tisock::tcp;
using tisock::detail::sys::call;

namespace {

// What listen() threw: no error when it did not throw.
std::error_code listen_error(const tcp& s) {
    try {
        s.listen();
    } catch (const std::system_error& e) {
        return e.code();
    }
    return {};
}

// A listener on 127.0.0.1:0 that stores what accept() hands it.
struct listener_fixture {
    int accepted = 0;
    int errors = 0;
    std::vector<tcp> inbound;
    tcp socket;

    explicit listener_fixture(reactor& r, int queue = 128)
        : socket(r, {.host = "127.0.0.1",
                     .port = 0,
                     .listen_queue_size = queue,
                     .error = [this](tcp&, const std::string&, std::error_code) { ++errors; },
                     .accepted = [this](tcp&, tcp in) {
                         ++accepted;
                         inbound.push_back(std::move(in));
                     }}) {
        socket.listen();
    }
    int port() const { return socket.port(); }
};

// Reads once from `s` (callback style) and returns what arrived.
std::string read_once(reactor& r, const tcp& s) {
    tisock::buffer in(256);
    std::string got;
    bool done = false;
    s.read(in, [&](const tisock::io_event& e) {
        done = true;
        if (e.bytes_processed > 0) got = in.to_string().substr(0, std::size_t(e.bytes_processed));
    });
    REQUIRE(run_until(r, [&] { return done; }));
    return got;
}

}  // namespace

TEST_CASE_FIXTURE(descriptors_checked, "listen() on a port in use: system_error EADDRINUSE, state error, no error callback") {
    reactor r;
    int port = 0;
    raw_fd taken = raw_listener("127.0.0.1", 16, port);
    listener_fixture other(r);  // a library listener holds a second port
    for (int p : {port, other.port()}) {
        CAPTURE(p);
        int errors = 0;
        tcp s(r, {.host = "127.0.0.1", .port = p,
                  .error = [&](tcp&, const std::string&, std::error_code) { ++errors; }});
        std::error_code ec = listen_error(s);
        CHECK(ec == std::errc::address_in_use);
        CHECK(s.state() == state::error);
        CHECK(s.native_handle() == -1);
        pump(r, 20ms);
        CHECK(errors == 0);
    }
    CHECK(other.socket.state() == state::listening);
    other.socket.close();
}

TEST_CASE_FIXTURE(descriptors_checked, "listen() refuses an address not on this host, and wildcard hosts") {
    reactor r;
    tcp s(r, {.host = "192.0.2.1", .port = 0});
    std::error_code ec = listen_error(s);
    CHECK(ec == std::errc::address_not_available);
    CHECK(s.state() == state::error);
    CHECK(s.native_handle() == -1);

    for (const char* host : {"0.0.0.0", "::", "[::]"}) {
        CAPTURE(host);
        tcp w(r, {.host = host, .port = 0});
        std::string what;
        try {
            w.listen();
        } catch (const std::invalid_argument& e) {
            what = e.what();
        }
        CHECK(what.find("INADDR_ANY") != std::string::npos);
        CHECK(w.state() == state::error);  // the spec: listen() failures set state error
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "a listener on port 0 gets a port; accepted descriptors are O_NONBLOCK and FD_CLOEXEC") {
    reactor r;
    listener_fixture l(r);
    CHECK(l.port() != 0);
    CHECK(l.socket.local_port() == l.port());
    CHECK(l.socket.local_host() == "127.0.0.1");
    raw_fd client = raw_connect("127.0.0.1", l.port());
    REQUIRE(client);
    l.socket.accept();
    REQUIRE(run_until(r, [&] { return l.accepted == 1; }));
    int fd = l.inbound.at(0).native_handle();
    REQUIRE(fd >= 0);
    CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(l.inbound[0].port() == port_of(client.get()));
    CHECK(l.inbound[0].local_port() == l.port());
    for (tcp& t : l.inbound) t.close();
    l.socket.close();
}

TEST_CASE_FIXTURE(descriptors_checked, "listen_queue_size 2 with 5 clients: 2 pending survive with their data, 3 are reset") {
    reactor r;
    listener_fixture l(r, 2);
    std::vector<raw_fd> clients;
    for (int i = 0; i < 5; ++i) {
        clients.push_back(raw_connect("127.0.0.1", l.port()));
        REQUIRE(clients.back());
        send_all(clients.back().get(), "client " + std::to_string(i));
    }
    pump(r, 200ms);  // the listener drains the kernel queue while the reactor runs

    std::map<int, std::string> survivors;  // client port -> what it sent
    int reset = 0;
    for (int i = 0; i < 5; ++i) {
        int fd = clients[std::size_t(i)].get();
        if (wait_fd(fd, POLLIN, 100ms)) {
            char c;
            ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
            int err = errno;
            CHECK(n == -1);
            CHECK(err == ECONNRESET);
            ++reset;
        } else {
            survivors[port_of(fd)] = "client " + std::to_string(i);
        }
    }
    CHECK(reset == 3);
    REQUIRE(survivors.size() == 2);

    for (int i = 0; i < 2; ++i) {
        l.socket.accept();
        REQUIRE(run_until(r, [&] { return l.accepted == i + 1; }));
    }
    for (tcp& in : l.inbound) {
        REQUIRE(survivors.count(in.port()) == 1);
        CHECK(read_once(r, in) == survivors[in.port()]);
    }
    // Nothing else is pending: a third accept stays waiting.
    l.socket.accept();
    pump(r, 50ms);
    CHECK(l.accepted == 2);
    CHECK(l.errors == 0);
    CHECK(l.socket.state() == state::listening);
    for (tcp& t : l.inbound) t.close();
    l.socket.close();
}

TEST_CASE_FIXTURE(descriptors_checked, "EMFILE during accept: no spin, the listener stays listening, accepts once descriptors free up") {
    reactor r;
    listener_fixture l(r);
    l.socket.accept();
    raw_fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    raw_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    REQUIRE(client);
    REQUIRE(devnull);

    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    int highest = 0;
    for (int fd = 0; fd < 4096; ++fd) {
        if (::fcntl(fd, F_GETFD) != -1) highest = fd;
    }
    rlimit lowered = saved;
    lowered.rlim_cur = rlim_t(highest + 64);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);

    // From here until the limit is restored: no assertion (doctest may need a
    // descriptor) and no virtual call (UBSan's vptr check misreports without one).
    std::vector<int> filler;
    for (int fd; (fd = ::dup(devnull.get())) >= 0;) filler.push_back(fd);
    int fill_errno = errno;
    sockaddr_storage addr;
    socklen_t n = tisock_test::fill_address("127.0.0.1", l.port(), addr);
    int connect_rc = ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), n);
    double cpu0 = cpu_seconds();
    pump(r, 1000ms);
    double cpu = cpu_seconds() - cpu0;
    state during = l.socket.state();
    int accepted_during = l.accepted;
    for (int fd : filler) ::close(fd);
    ::setrlimit(RLIMIT_NOFILE, &saved);

    CHECK(fill_errno == EMFILE);
    CHECK(filler.size() > 10);
    CHECK(connect_rc == 0);  // the kernel completes the handshake; accept() cannot take it
    CHECK(cpu < 0.3);        // not spinning on a level of readiness it cannot consume
    CHECK(during == state::listening);
    CHECK(accepted_during == 0);
    stopwatch t0;
    REQUIRE(run_until(r, [&] { return l.accepted == 1; }, 3s));
    CHECK(t0.elapsed() < 1500ms);
    CHECK(l.errors == 0);
    CHECK(l.socket.state() == state::listening);
    send_all(client.get(), "late");
    CHECK(read_once(r, l.inbound.at(0)) == "late");
    for (tcp& t : l.inbound) t.close();
    l.socket.close();
}

TEST_CASE("accept errors injected through the fault hook: the listener survives and accepts the next") {
    for (int injected : {EMFILE, ENFILE, ENOBUFS, ECONNABORTED, ECONNRESET, EPROTO, EPERM, EINTR}) {
        CAPTURE(injected);
        descriptor_baseline fds;
        {
            reactor r;
            listener_fixture l(r);
            int failures_left = 3;
            fault_scope faults([&](call c, std::size_t&, long& value, int& error) {
                if (c != call::accept || failures_left == 0) return false;
                --failures_left;
                return inject(value, error, injected);
            });
            raw_fd first = raw_connect("127.0.0.1", l.port());
            l.socket.accept();
            REQUIRE(run_until(r, [&] { return l.accepted == 1 || l.socket.state() != state::listening; }, 3s));
            CHECK(failures_left == 0);
            CHECK(l.accepted == 1);
            CHECK(l.socket.state() == state::listening);
            raw_fd second = raw_connect("127.0.0.1", l.port());
            l.socket.accept();
            REQUIRE(run_until(r, [&] { return l.accepted == 2 || l.socket.state() != state::listening; }, 3s));
            CHECK(l.accepted == 2);
            CHECK(l.errors == 0);
            for (tcp& t : l.inbound) t.close();
            if (l.socket.state() == state::listening) l.socket.close();
        }
        check_nothing_left(fds);
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "closing the listener while an accept is pending: operation_canceled, no callback afterwards") {
    reactor r;
    SUBCASE("coroutine") {
        listener_fixture l(r);
        std::error_code ec;
        int completions = 0;
        auto accept_one = [](tcp s, std::error_code& out, int& n) -> tisock::task<void> {
            try {
                tcp in = co_await s.async_accept();
            } catch (const std::system_error& e) {
                out = e.code();
            }
            ++n;
        };
        auto close_later = [](reactor& rr, tcp s) -> tisock::task<void> {
            co_await rr.sleep_for(10ms);
            s.close();
        };
        tisock::spawn(r, accept_one(l.socket, ec, completions));
        tisock::spawn(r, close_later(r, l.socket));
        REQUIRE(run_until(r, [&] { return completions == 1; }));
        pump(r, 20ms);
        CHECK(completions == 1);
        CHECK(ec == std::errc::operation_canceled);
        CHECK(l.socket.state() == state::closed);
        CHECK(l.errors == 0);
    }
    SUBCASE("callback") {
        listener_fixture l(r);
        l.socket.accept();
        pump(r, 10ms);
        l.socket.close();
        CHECK(l.socket.state() == state::closed);
        CHECK(l.socket.native_handle() == -1);
        pump(r, 50ms);
        CHECK(l.accepted == 0);
        CHECK(l.errors == 0);
    }
}

TEST_CASE_FIXTURE(descriptors_checked, "2,000 connect/accept/close cycles leave the descriptor count unchanged") {
    reactor r;
    listener_fixture l(r);
    int done = 0;
    auto cycles = [](reactor& rr, tcp listener, int n, int& count) -> tisock::task<void> {
        try {
            for (int i = 0; i < n; ++i) {
                tcp c(rr, {.host = "127.0.0.1", .port = listener.port()});
                co_await c.async_connect();
                tcp in = co_await listener.async_accept();
                if (i % 2 == 0) {
                    c.close();
                    in.close();
                } else {
                    in.close();
                    c.close();
                }
                ++count;
            }
        } catch (const std::exception& e) {
            MESSAGE("cycle " << count << " failed: " << e.what());
            count = -1;
        }
    };
    tisock::spawn(r, cycles(r, l.socket, 2000, done));
    REQUIRE(run_until(r, [&] { return done == 2000 || done < 0; }, 60s));
    CHECK(done == 2000);
    CHECK(l.errors == 0);
    l.socket.close();
}
