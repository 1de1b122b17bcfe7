// The spec's "Create a socket to listen" example (tcp-socket-spec.md, Pseudo Code
// Examples), with callbacks: a listener with listenQueueSize 10 that accepts connections
// one accept() at a time, checks each inbound socket against a whitelist, keeps the
// whitelisted ones (reading from them with Ti.IOStream's read(buffer, callback)) and
// re-arms accept() while it holds fewer than the maximum number of connections.
//
// The whitelist. The spec whitelists hosts ('192.168.0.1', ...). This example runs on
// 127.0.0.1 only, where every peer's host is 127.0.0.1, so to show a rejection the
// whitelist holds peer *endpoints* (host:port) instead. A client's local port is known as
// soon as connect() returns (the kernel picks it in the connect system call), and the
// `accepted` callback can only run later, from the reactor, so each trusted client is put
// on the whitelist right after its connect() - the intruder is not.
//
// Clients: "alice" and "bob" are whitelisted and send a line each; "mallory" is not, and
// the server closes her connection at once (she reads end of stream). With a maximum of 2
// connections the listener stops accepting after bob. When both have finished sending,
// the server closes everything and the program exits with status 0.
#include <tisock/tisock.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <list>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr std::size_t max_connections = 2;  // the spec checks `connections.length < 10`

std::string endpoint_of(const std::string& host, int port) { return host + ":" + std::to_string(port); }

// One accepted, whitelisted connection: the read buffer must outlive each read.
struct connection {
    tisock::tcp socket;
    tisock::buffer chunk;
    std::string text;
    bool finished = false;
};

// A client that connects, optionally sends one line, and reads until the server closes.
struct client {
    std::string name;
    tisock::tcp socket;
    tisock::buffer chunk;
    bool saw_end_of_stream = false;
};

}  // namespace

int main() {
    using namespace std::chrono_literals;
    tisock::reactor r;

    std::vector<std::string> host_whitelist;       // "127.0.0.1:port" entries
    std::list<connection> connections;             // std::list: stable addresses for the reads
    int rejected = 0;
    int listener_errors = 0;

    tisock::tcp listening_socket{r, {.host = "127.0.0.1", .port = 0, .listen_queue_size = 10}};

    // acceptedParams: the spec's `error` for inbound sockets.
    const tisock::accept_options accepted_params{
        .error = [](tisock::tcp& socket, const std::string& error, std::error_code) {
            std::printf("server: connection %s:%d failed: %s\n", socket.host().c_str(), socket.port(), error.c_str());
        },
    };

    auto close_all_if_done = [&] {
        if (connections.size() < max_connections) return;
        if (!std::all_of(connections.begin(), connections.end(), [](const connection& c) { return c.finished; })) return;
        for (connection& c : connections) {
            std::printf("server: closing %s:%d (it sent \"%s\")\n", c.socket.host().c_str(), c.socket.port(),
                        c.text.c_str());
            c.socket.close();
        }
        std::printf("server: closing the listener\n");
        listening_socket.close();
    };

    // acceptedParams.read: reads until the client has sent everything (end of stream).
    std::function<void(connection&, const tisock::io_event&)> on_read = [&](connection& c, const tisock::io_event& e) {
        if (!e.success) {
            std::printf("server: read from %s:%d failed: %s\n", c.socket.host().c_str(), c.socket.port(),
                        e.error.c_str());
            c.finished = true;
        } else if (e.bytes_processed < 0) {
            c.finished = true;
        } else {
            c.text.append(reinterpret_cast<const char*>(c.chunk.data()), static_cast<std::size_t>(e.bytes_processed));
            std::printf("server: read %lld bytes from %s:%d\n", static_cast<long long>(e.bytes_processed),
                        c.socket.host().c_str(), c.socket.port());
            c.socket.read(c.chunk, [&on_read, &c](const tisock::io_event& next) { on_read(c, next); });
            return;
        }
        close_all_if_done();
    };

    listening_socket.set_error([&](tisock::tcp& socket, const std::string& error, std::error_code code) {
        ++listener_errors;
        std::printf("Listener error: %d (%s)\n", code.value(), error.c_str());
        std::printf("CONNECTION has been closed: %s:%d\n", socket.host().c_str(), socket.port());
    });

    listening_socket.set_accepted([&](tisock::tcp& listener, tisock::tcp inbound) {
        // We only have the peer's address once the connection has been accepted.
        const std::string peer = endpoint_of(inbound.host(), inbound.port());
        if (std::find(host_whitelist.begin(), host_whitelist.end(), peer) == host_whitelist.end()) {
            std::printf("server: attempted connection from socket not on whitelist: %s\n", peer.c_str());
            ++rejected;
            inbound.close();
        } else {
            std::printf("server: accepted connection from: %s\n", peer.c_str());
            connection& c = connections.emplace_back(connection{inbound, tisock::buffer(256), {}, false});
            c.socket.read(c.chunk, [&on_read, &c](const tisock::io_event& e) { on_read(c, e); });
        }
        // Check for a maximum number of connections.
        if (connections.size() < max_connections) {
            listener.accept(accepted_params);
        } else {
            std::printf("server: %zu connections, the maximum: no longer accepting\n", connections.size());
        }
    });

    try {
        listening_socket.listen();
        std::printf("server: now listening on: %s:%d (listen queue size %d)\n", listening_socket.host().c_str(),
                    listening_socket.port(), listening_socket.listen_queue_size());
        // Not a blocking accept as in BSD: it flags the listener, and `accepted` runs
        // when a connection is available.
        listening_socket.accept(accepted_params);
    } catch (const std::exception& e) {
        std::printf("Error occurred while configuring listener: %s\n", e.what());
        return 1;
    }

    // The clients, connected in this order: the kernel queues them in this order too.
    std::list<client> clients;
    auto start_client = [&](const std::string& name, bool trusted, const std::string& line) {
        client& c = clients.emplace_back(client{name, tisock::tcp{r, {.host = "127.0.0.1", .port = listening_socket.port()}}, tisock::buffer(64), false});
        c.socket.set_connected([&c, line](tisock::tcp& socket) {
            std::printf("%s: connected from %s:%d\n", c.name.c_str(), socket.local_host().c_str(), socket.local_port());
            if (!line.empty()) socket.write(tisock::buffer::from_string(line), {});
            // Send nothing more: the server reads end of stream; we keep reading.
            socket.shutdown();
            socket.read(c.chunk, [&c](const tisock::io_event& e) {
                if (e.success && e.bytes_processed < 0) {
                    std::printf("%s: the server closed the connection\n", c.name.c_str());
                    c.saw_end_of_stream = true;
                } else if (!e.success) {
                    std::printf("%s: read failed: %s\n", c.name.c_str(), e.error.c_str());
                } else {
                    std::printf("%s: unexpected data from the server\n", c.name.c_str());
                }
                e.source.close();
            });
        });
        c.socket.set_error([&c](tisock::tcp&, const std::string& error, std::error_code code) {
            std::printf("%s: Socket error: %d (%s)\n", c.name.c_str(), code.value(), error.c_str());
        });
        c.socket.connect();
        // The kernel has chosen the client's port inside connect(): whitelist it now,
        // before the listener can accept the connection.
        if (trusted) host_whitelist.push_back(endpoint_of("127.0.0.1", c.socket.local_port()));
    };
    start_client("alice", true, "hello from alice");
    start_client("mallory", false, "");
    start_client("bob", true, "hello from bob");

    r.run_for(10s);  // returns when everything is closed; the bound is for a hang

    const bool all_ended = std::all_of(clients.begin(), clients.end(), [](const client& c) { return c.saw_end_of_stream; });
    const bool ok = connections.size() == 2 && rejected == 1 && listener_errors == 0 && all_ended &&
                    connections.front().text == "hello from alice" && connections.back().text == "hello from bob" &&
                    listening_socket.state() == tisock::state::closed;
    std::printf("%s: %zu connections kept, %d rejected\n", ok ? "done" : "FAILED", connections.size(), rejected);
    return ok ? 0 : 1;
}
