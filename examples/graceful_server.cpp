// A line echo server that shuts down cleanly: per-connection idle timeout (with_timeout
// around each read), sessions in a task_group, and on SIGINT/SIGTERM it stops accepting,
// stops every session (each says goodbye and closes), waits for them, and exits 0 with
// no descriptor left.
//
//   graceful_server                      a demonstration that runs by itself: three clients
//                                        talk, one goes idle, then the process sends itself
//                                        SIGTERM
//   graceful_server --port P [--idle-ms N]   a server on 127.0.0.1:P until SIGINT/SIGTERM
//                                        (P = 0: the kernel picks one; the first line says which)
//
// How the signal reaches the reactor: the library never touches signal dispositions, so
// main blocks SIGINT and SIGTERM in every thread and one thread waits for them (sigwait);
// it calls task_group::request_stop(), which may be called from any thread. The stop
// reaches each session's pending read from the run loop.
#include <tisock/tisock.hpp>

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

namespace {

using namespace std::chrono_literals;

std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

// One connection: echo every line, prefixed. Ends at end of stream, after `idle` without a
// byte (timed_out), or when the group is stopped (operation_canceled) - in the last two
// cases it says why before closing. The goodbye is written shielded from the stop.
tisock::task<void> session(tisock::tcp conn, std::chrono::milliseconds idle) {
    std::array<std::byte, 1024> buf;
    std::string line;
    const char* goodbye = nullptr;
    try {
        for (;;) {
            const std::size_t n = co_await tisock::with_timeout(idle, conn.async_read(buf));
            if (n == 0) break;  // the client finished
            for (std::byte b : std::span(buf).first(n)) {
                line += char(b);
                if (line.back() != '\n') continue;
                const std::string reply = "echo: " + line;
                co_await conn.async_write(bytes_of(reply));
                line.clear();
            }
        }
    } catch (const std::system_error& e) {
        if (e.code() == std::errc::timed_out) {
            goodbye = "bye: idle\n";
        } else if (e.code() == std::errc::operation_canceled) {
            goodbye = "bye: server shutting down\n";
        } else {
            std::printf("server: %s:%d failed: %s\n", conn.host().c_str(), conn.port(), e.what());
            co_return;  // the socket is already closed (state error)
        }
    }
    if (goodbye != nullptr) {
        std::printf("server: %s:%d %s", conn.host().c_str(), conn.port(), goodbye);
        // Cleanup I/O after a stop: shielded, or it would be cancelled before it starts.
        co_await tisock::with_stop_token({}, conn.async_write(bytes_of(goodbye)));
    }
    std::error_code ignored;
    conn.close(ignored);  // never throws: the socket may have failed meanwhile
}

// Accepts until the group is stopped; each connection becomes a child of the group.
tisock::task<void> accept_loop(tisock::tcp listener, tisock::task_group& sessions, std::chrono::milliseconds idle) {
    for (;;) {
        tisock::tcp conn = co_await listener.async_accept();  // operation_canceled on stop: ends quietly
        sessions.spawn(session(std::move(conn), idle));
    }
}

tisock::task<void> serve(tisock::reactor& r, tisock::tcp listener, tisock::task_group& sessions,
                         std::chrono::milliseconds idle) {
    sessions.spawn(accept_loop(listener, sessions, idle));
    co_await sessions.join();  // every session and the accept loop have ended
    listener.close();
    std::printf("server: stopped; every session closed\n");
    (void)r;
}

// ---- the demonstration's clients ---------------------------------------------------------

tisock::task<std::string> read_line(tisock::tcp& s) {
    std::string line;
    std::array<std::byte, 1> b;
    while (line.empty() || line.back() != '\n') {
        if (co_await s.async_read(b) == 0) break;
        line += char(b[0]);
    }
    co_return line;
}

// Sends two lines and prints the echoes; then, if `stay`, keeps the connection open and
// prints what the server says when it goes (idle, or shutting down).
tisock::task<void> client(tisock::reactor& r, int port, int id, bool stay) {
    tisock::tcp s(r, {.host = "127.0.0.1", .port = port});
    co_await s.async_connect();
    for (int i = 0; i < 2; ++i) {
        const std::string msg = "client " + std::to_string(id) + " line " + std::to_string(i) + "\n";
        co_await s.async_write(bytes_of(msg));
        std::printf("client %d: %s", id, (co_await read_line(s)).c_str());
    }
    if (stay) std::printf("client %d: server said %s", id, (co_await read_line(s)).c_str());
    s.close();
}

tisock::task<void> demonstration(tisock::reactor& r, int port) {
    // Client 0 stays quiet past the idle timeout; then 1 and 2 connect and stay until the
    // server shuts down, which the process asks for itself.
    co_await client(r, port, 0, true);
    tisock::task_group clients(r);
    clients.spawn(client(r, port, 1, true));
    clients.spawn(client(r, port, 2, true));
    co_await r.sleep_for(100ms);  // both are talking by now
    std::printf("demo: sending SIGTERM to myself\n");
    ::kill(::getpid(), SIGTERM);
    co_await clients.join();
}

int open_descriptors() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d) != nullptr) ++n;
        ::closedir(d);
    }
    return n;
}

}  // namespace

int main(int argc, char** argv) {
    int port = 0;
    std::chrono::milliseconds idle = 300ms;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--port") == 0) port = std::atoi(argv[i + 1]);
        if (std::strcmp(argv[i], "--idle-ms") == 0) idle = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    }
    const bool demo = argc == 1;

    // Before any thread starts: SIGINT and SIGTERM are only ever taken by sigwait below.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    const int descriptors_before = open_descriptors();
    {
        tisock::reactor r;
        tisock::tcp listener(r, {.host = "127.0.0.1", .port = port});
        listener.listen();
        std::printf("server: listening on 127.0.0.1:%d, idle timeout %lld ms\n", listener.port(),
                    static_cast<long long>(idle.count()));
        std::fflush(stdout);  // a script waits for this line
        tisock::task_group sessions(r);
        std::thread watcher([&] {
            int sig = 0;
            sigwait(&signals, &sig);
            std::printf("server: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            std::fflush(stdout);
            sessions.request_stop();  // thread-safe; the sessions see it from the run loop
        });
        if (demo) tisock::spawn(r, demonstration(r, listener.port()));
        tisock::sync_wait(r, serve(r, listener, sessions, idle));
        r.run();  // the demonstration's clients finish reading the goodbyes
        watcher.join();
    }
    const int left = open_descriptors() - descriptors_before;
    std::printf("exit: %d descriptor(s) left\n", left);
    return left == 0 ? 0 : 1;
}
