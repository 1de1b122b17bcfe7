// The spec's "Create a socket to connect" example (tcp-socket-spec.md, Pseudo Code
// Examples), with callbacks:
//
//   var connectingSocket = Ti.Network.createTCP({
//     host: 'www.externalhost.com', port: 4747,
//     connected: function(e) { e.socket.write(Ti.createBuffer({data: "Well, hello there!"})); },
//     error: function(e) { ... "Socket error: " + e.errorCode ... }
//   });
//   connectingSocket.connect();
//
// There is no www.externalhost.com here, so the program first starts a small listener on
// 127.0.0.1 (port 0: the kernel picks a free one) that prints what it receives. Then it
// connects a second time, to the same port after the listener has closed, so that the
// error callback runs too (connection refused).
//
// Exits by itself with status 0 once both connects have reported.
#include <tisock/tisock.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

namespace {

int connected_count = 0;
int error_count = 0;
int written_count = 0;

// The spec's connecting socket. The callbacks use their `socket` parameter, not a captured
// handle: a callback holding a handle to its own socket would keep it alive forever.
tisock::tcp make_connecting_socket(tisock::reactor& r, int port) {
    return tisock::tcp{r, {
        .host = "127.0.0.1",
        .port = port,
        .timeout = std::chrono::seconds(5),
        .connected =
            [](tisock::tcp& socket) {
                ++connected_count;
                std::printf("client: connected to %s:%d\n", socket.host().c_str(), socket.port());
                // Ti.createBuffer({data: "Well, hello there!"}); the write owns the buffer.
                socket.write(tisock::buffer::from_string("Well, hello there!"), [](const tisock::io_event& e) {
                    if (!e.success) {
                        std::printf("client: write failed: %s\n", e.error.c_str());
                        return;
                    }
                    ++written_count;
                    std::printf("client: wrote %lld bytes, closing\n", static_cast<long long>(e.bytes_processed));
                    // Every byte is in the kernel: close() still delivers them, then a FIN.
                    e.source.close();
                });
            },
        .error =
            [](tisock::tcp& socket, const std::string& error, std::error_code code) {
                ++error_count;
                // Ti.UI.createAlertDialog({title: "Socket error: " + e.errorCode, message: e.error})
                std::printf("Socket error: %d (%s)\n", code.value(), error.c_str());
                std::printf("CONNECTION has been closed: %s:%d\n", socket.host().c_str(), socket.port());
            },
    }};
}

}  // namespace

int main() {
    using namespace std::chrono_literals;
    tisock::reactor r;

    // Something to connect to: accepts one connection and prints what it sends.
    std::string received;
    tisock::buffer chunk(64);
    tisock::tcp listener{r, {.host = "127.0.0.1", .port = 0}};
    std::function<void(const tisock::io_event&)> on_read = [&](const tisock::io_event& e) {
        if (!e.success) {
            std::printf("server: read failed: %s\n", e.error.c_str());
            return;
        }
        if (e.bytes_processed < 0) {  // end of stream: the client closed
            std::printf("server: received \"%s\"\n", received.c_str());
            e.source.close();
            listener.close();
            return;
        }
        received.append(reinterpret_cast<const char*>(chunk.data()), static_cast<std::size_t>(e.bytes_processed));
        e.source.read(chunk, on_read);
    };
    listener.set_accepted([&](tisock::tcp&, tisock::tcp inbound) {
        std::printf("server: accepted a connection from %s:%d\n", inbound.host().c_str(), inbound.port());
        inbound.read(chunk, on_read);
    });
    listener.listen();
    listener.accept();
    const int port = listener.port();
    std::printf("server: listening on %s:%d\n", listener.host().c_str(), port);

    // The spec's example: connect, write "Well, hello there!" once connected.
    tisock::tcp connecting_socket = make_connecting_socket(r, port);
    connecting_socket.connect();
    r.run_for(10s);  // returns as soon as everything is closed; the bound is for a hang

    // Again, now that nobody listens on that port: the error callback reports the refusal.
    tisock::tcp refused_socket = make_connecting_socket(r, port);
    refused_socket.connect();
    r.run_for(10s);

    const bool ok = connected_count == 1 && written_count == 1 && error_count == 1 && received == "Well, hello there!";
    std::printf("%s: connected=%d written=%d errors=%d\n", ok ? "done" : "FAILED", connected_count, written_count,
                error_count);
    return ok ? 0 : 1;
}
