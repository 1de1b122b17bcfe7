// Connect to several candidate addresses at once; the first connection wins, the others
// are cancelled and closed (the idea of RFC 8305, "Happy Eyeballs", with when_any).
//
// Candidates start a little apart (an attempt does not wait for the one before it to
// fail). An attempt that fails does not end the race: it waits to be cancelled, so that
// when_any's first finisher is the first success. with_timeout bounds the whole race.
//
// The demonstration runs on 127.0.0.1 only and exits by itself with status 0. It makes
// three candidates: one whose connect hangs (a listener whose accept queue is full: the
// kernel drops the SYN), one refused (nobody listens), and one that works - listed in
// that order, so the hanging attempt is still in flight when the working one wins.
#include <tisock/tisock.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct candidate {
    std::string host;
    int port;
};

// One attempt: after `delay`, connect. A failure is printed, then the attempt waits until
// the race cancels it (a failure must not be the race's first finisher).
tisock::task<tisock::tcp> attempt(tisock::reactor& r, candidate c, std::chrono::milliseconds delay) {
    co_await r.sleep_for(delay);
    tisock::tcp s(r, {.host = c.host, .port = c.port});
    std::printf("attempt %s:%d: connecting\n", c.host.c_str(), c.port);
    try {
        co_await s.async_connect();
        co_return s;
    } catch (const std::system_error& e) {
        if (e.code() == std::errc::operation_canceled) {
            std::printf("attempt %s:%d: cancelled (the socket is %s)\n", c.host.c_str(), c.port,
                        std::string(tisock::to_string(s.state())).c_str());
            throw;
        }
        std::printf("attempt %s:%d: failed: %s\n", c.host.c_str(), c.port, e.code().message().c_str());
    }
    co_await r.sleep_for(24h);  // cancelled when another attempt wins (or the race times out)
    throw std::system_error(std::make_error_code(std::errc::connection_refused));
}

// The race, for three candidates (when_any takes its children as arguments).
tisock::task<tisock::tcp> first_of(tisock::reactor& r, const std::vector<candidate>& c, std::chrono::milliseconds limit) {
    constexpr auto stagger = 50ms;
    auto winner = co_await tisock::with_timeout(
        limit, tisock::when_any(attempt(r, c.at(0), 0 * stagger), attempt(r, c.at(1), 1 * stagger), attempt(r, c.at(2), 2 * stagger)));
    std::printf("race: candidate %zu won\n", winner.index());
    co_return std::visit([](tisock::tcp& s) { return s; }, winner);
}

// A listener that never accepts, whose accept queue is full: connects to it hang.
struct black_hole {
    int listener = -1;
    int filler = -1;
    int port = 0;
    black_hole() {
        listener = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t n = sizeof a;
        if (::bind(listener, reinterpret_cast<sockaddr*>(&a), n) != 0 || ::listen(listener, 0) != 0 ||
            ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &n) != 0) {
            throw std::system_error(errno, std::generic_category(), "black hole listener");
        }
        port = ntohs(a.sin_port);
        filler = ::socket(AF_INET, SOCK_STREAM, 0);  // takes the one place in the queue
        if (::connect(filler, reinterpret_cast<sockaddr*>(&a), n) != 0) {
            throw std::system_error(errno, std::generic_category(), "black hole filler");
        }
    }
    ~black_hole() {
        ::close(filler);
        ::close(listener);
    }
};

}  // namespace

int main() {
    tisock::reactor r;
    black_hole hanging;
    tisock::tcp server(r, {.host = "127.0.0.1", .port = 0});
    server.listen();
    server.set_accepted([](tisock::tcp&, tisock::tcp in) { in.close(); });
    server.accept();
    tisock::tcp refused_probe(r, {.host = "127.0.0.1", .port = 0});
    refused_probe.listen();
    const int refused_port = refused_probe.port();
    refused_probe.close();  // nobody listens there now

    const std::vector<candidate> candidates = {
        {"127.0.0.1", hanging.port},
        {"127.0.0.1", refused_port},
        {"127.0.0.1", server.port()},
    };
    int status = 1;
    try {
        tisock::tcp s = tisock::sync_wait(r, first_of(r, candidates, 2s));
        std::printf("connected to %s:%d\n", s.host().c_str(), s.port());
        status = s.port() == server.port() ? 0 : 1;
        s.close();
    } catch (const std::exception& e) {
        std::printf("race failed: %s\n", e.what());
    }
    server.close();
    r.run();
    return status;
}
