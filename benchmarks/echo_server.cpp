// tisock-echo: the echo server benchmarks/run measures against epoll_echo, written with
// tisock.
//
//   tisock-echo --port P [--mode coroutine|coroutine-token|callback]
//
// Listens on 127.0.0.1:P, single-threaded (one reactor, one thread driving it), echoes
// every byte back. Exits with status 0 on SIGTERM or SIGINT and prints the allocation
// report (alloc_counter.hpp) to stderr - the same flags and the same report as epoll_echo,
// so benchmarks/run treats both alike.
//
//  - coroutine: an accept loop coroutine spawns one echo coroutine per connection, which
//    reads into a buffer shared by all connections and writes it back with try_write,
//    until end of stream (see echo() for why sharing is safe). The awaiters live in the
//    frame: no allocation per message, and a small frame per idle connection.
//  - coroutine-token: the same, each connection's coroutine spawned with a stop token (one
//    std::stop_source for the server, never stopped): what observing a token costs, per
//    connection (its stop scope and stop_callback) and per operation (benchmarks/RESULTS.md).
//  - callback: accept() re-armed in `accepted`; Ti.IOStream read(buffer&, cb) into a
//    per-connection 4 KiB buffer, then write(buffer, cb). The callback API allocates per call:
//    each read and each write is a heap operation holding its std::function, and
//    write() takes its buffer by value (it owns the bytes until they are sent), so the
//    reply is a copy of the bytes read - the read buffer cannot be lent to it. Expect
//    about 3 allocations per message; the report prints the measured figure.
//
// Termination: the SIGTERM/SIGINT handler calls reactor::stop(), which is
// async-signal-safe (it wakes the reactor through its own eventfd, as epoll_echo does).
#include "alloc_counter.hpp"

#include <signal.h>
#include <sys/resource.h>

#include <tisock/buffer.hpp>
#include <tisock/reactor.hpp>
#include <tisock/task.hpp>
#include <tisock/tcp.hpp>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>
#include <vector>
#include <atomic>
#include <stop_token>

namespace {

constexpr std::size_t buffer_size = 64 * 1024;  // as epoll_echo's read buffer (shared)
// Callback mode reads into a buffer per connection (Ti.IOStream's read(buffer&) owns no
// storage): 4 KiB, a realistic size, so that per-connection costs are not a 64 KiB buffer's.
constexpr std::size_t callback_buffer_size = 4 * 1024;
// Exact in tisock: connections beyond it are reset while nobody accepts. A load generator
// opening thousands of connections at once must not be refused.
constexpr int listen_queue_size = 1 << 16;

enum class mode { coroutine, coroutine_token, callback };

std::atomic<tisock::reactor*> running_reactor{nullptr};  // for the termination signal handler

struct options {
    int port = 0;
    mode how = mode::coroutine;
};

[[noreturn]] void usage(const char* problem) {
    std::fprintf(stderr, "tisock-echo: %s\nusage: tisock-echo --port P [--mode coroutine|callback]\n", problem);
    std::exit(2);
}

options parse_options(int argc, char** argv) {
    options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (i + 1 >= argc) usage("an option needs a value");
        const std::string_view value = argv[++i];
        if (arg == "--port") {
            opt.port = std::atoi(value.data());
        } else if (arg == "--mode") {
            if (value == "coroutine") {
                opt.how = mode::coroutine;
            } else if (value == "coroutine-token") {
                opt.how = mode::coroutine_token;
            } else if (value == "callback") {
                opt.how = mode::callback;
            } else {
                usage("--mode is coroutine, coroutine-token or callback");
            }
        } else {
            usage("unknown option");
        }
    }
    if (opt.port <= 0 || opt.port > 65535) usage("--port P (1..65535) is required");
    return opt;
}

// Holding 10,000 connections needs more than the usual soft limit of 1024 descriptors.
void raise_nofile_limit() {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
    lim.rlim_cur = lim.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
}

tisock_bench::steady_state stats;

// ---- coroutine mode ------------------------------------------------------------------------

// One read buffer for every connection, as epoll_echo has: the bytes of a read are written
// back (try_write) before the coroutine waits again, so no other read can land in between.
// Only an unsent remainder (the peer is not reading fast enough) is copied out, into this
// connection's own storage. An idle connection holds no buffer at all.
std::array<std::byte, buffer_size> shared_buffer;

tisock::task<void> echo(tisock::tcp connection) {
    try {
        for (;;) {
            const std::size_t n = co_await connection.async_read(shared_buffer);
            if (n == 0) break;
            stats.on_message();
            const std::size_t sent = connection.try_write(std::span(shared_buffer).first(n));
            if (sent < n) {
                std::vector<std::byte> rest(shared_buffer.begin() + sent, shared_buffer.begin() + n);
                co_await connection.async_write(rest);
            }
        }
        connection.close();
    } catch (const std::system_error&) {
        // Reset by the peer: the socket is already closed (state error).
    }
}

tisock::task<void> accept_loop(tisock::reactor& r, tisock::tcp listener, std::stop_token token) {
    for (;;) {
        tisock::tcp connection = co_await listener.async_accept();
        stats.on_accept();
        tisock::spawn(r, echo(std::move(connection)), token);
    }
}

// ---- callback mode -------------------------------------------------------------------------

// One connection. Exactly one operation (a read or a write) is in flight at a time and
// its callback owns the connection; the list lets main free what is left at exit.
struct connection {
    explicit connection(tisock::tcp s) : socket(std::move(s)) {}
    tisock::tcp socket;
    tisock::buffer buf{callback_buffer_size};
    connection* prev = nullptr;
    connection* next = nullptr;
};

class callback_server {
public:
    explicit callback_server(tisock::tcp listener) : listener_(std::move(listener)) {
        listener_.set_accepted([this](tisock::tcp& l, tisock::tcp inbound) {
            stats.on_accept();
            l.accept();
            start_read(add(std::move(inbound)));
        });
        listener_.accept();
    }
    callback_server(const callback_server&) = delete;
    callback_server& operator=(const callback_server&) = delete;
    ~callback_server() {
        while (head_ != nullptr) remove(head_);
    }

private:
    // The callbacks capture two pointers: small enough for std::function's local storage
    // (no allocation for the callable itself, only for the operation that holds it).
    void start_read(connection* c) {
        c->socket.read(c->buf, [this, c](const tisock::io_event& e) { on_read(c, e); });
    }

    void on_read(connection* c, const tisock::io_event& e) {
        if (!e.success || e.bytes_processed < 0) return finish(c);
        stats.on_message();
        const auto n = static_cast<std::size_t>(e.bytes_processed);
        // write() owns its buffer: hand it a copy of the bytes read, keep `buf` for reading.
        c->socket.write(c->buf.clone(0, n), [this, c](const tisock::io_event& w) {
            if (!w.success) return finish(c);
            start_read(c);
        });
    }

    void finish(connection* c) {
        if (c->socket.state() == tisock::state::connected) c->socket.close();
        remove(c);
    }

    connection* add(tisock::tcp socket) {
        auto* c = new connection(std::move(socket));
        c->next = head_;
        if (head_ != nullptr) head_->prev = c;
        head_ = c;
        return c;
    }

    void remove(connection* c) {
        (c->prev != nullptr ? c->prev->next : head_) = c->next;
        if (c->next != nullptr) c->next->prev = c->prev;
        delete c;
    }

    tisock::tcp listener_;
    connection* head_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse_options(argc, argv);
    raise_nofile_limit();

    try {
        tisock::reactor r;
        tisock::tcp listener{r, {.host = "127.0.0.1", .port = opt.port, .listen_queue_size = listen_queue_size}};
        listener.listen();

        // reactor::stop() is async-signal-safe (an atomic store and a write to the wake-up
        // descriptor), so the handler calls it directly: no extra thread, which would also
        // make every libc socket call pay for pthread cancellation points (~90 instructions
        // per message measured with callgrind).
        running_reactor = &r;
        struct sigaction sa {};
        sa.sa_handler = [](int) { running_reactor.load()->stop(); };
        ::sigemptyset(&sa.sa_mask);
        ::sigaction(SIGTERM, &sa, nullptr);
        ::sigaction(SIGINT, &sa, nullptr);

        {
            // The callback server must be gone before the reactor: it owns the connections.
            std::unique_ptr<callback_server> callbacks;
            std::stop_source sessions;  // coroutine-token: observed, never stopped
            if (opt.how == mode::coroutine) {
                tisock::spawn(r, accept_loop(r, listener, {}));
            } else if (opt.how == mode::coroutine_token) {
                tisock::spawn(r, accept_loop(r, listener, sessions.get_token()));
            } else {
                callbacks = std::make_unique<callback_server>(listener);
            }
            // The accept never completes by itself, so run() returns only after stop().
            r.run();
        }
        stats.print(stderr);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tisock-echo: %s\n", e.what());
        return 1;
    }
    return 0;
}
