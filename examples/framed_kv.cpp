// A small key-value service over a length-prefixed protocol, with tisock::codec framing and
// the Ti.Stream functions (stream::read/write and their coroutine forms).
//
// Protocol: every message is a 4-byte big-endian length (codec::encode_number with
// number_type::int_ and byte_order::big_endian) followed by that many bytes of UTF-8:
//   request  "SET <key> <value>" -> reply "OK"
//   request  "GET <key>"         -> reply the value, or "NOT_FOUND"
//   anything else                -> reply "ERR <reason>"
//
// The server is written with co_await. Two clients talk to it, one after the other:
//  - a Ti-style client written with callbacks: connect -> write framed requests ->
//    read(buffer&, callback) into a small buffer and cut frames out of what arrived (a
//    frame may come in pieces, or several in one read);
//  - a client written with co_await.
// Runs on 127.0.0.1 (port 0: the kernel picks one), prints the exchange, and exits by itself
// with status 0 when every reply was the expected one.
//
// `framed_kv --serve` runs only the server, until the process is stopped, for clients of
// your own (it prints the port it listens on).
#include <tisock/buffer.hpp>
#include <tisock/codec.hpp>
#include <tisock/reactor.hpp>
#include <tisock/stream.hpp>
#include <tisock/task.hpp>
#include <tisock/tcp.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace codec = tisock::codec;
namespace stream = tisock::stream;
using tisock::buffer;

constexpr std::size_t header_size = 4;
constexpr std::size_t max_payload = 64 * 1024;  // a peer announcing more is misbehaving
constexpr std::size_t first_read_size = 512;     // a frame's buffer starts at this, then doubles

// ---- framing ---------------------------------------------------------------------------

buffer frame(std::string_view payload) {
    buffer b(header_size);
    codec::encode_number(b, std::uint32_t(payload.size()), codec::number_type::int_, 0, codec::byte_order::big_endian);
    b.append(buffer::from_string(payload));
    return b;
}

std::size_t payload_length(const buffer& b, std::size_t position = 0) {
    // decode_integer reads int_ as signed; the length is an unsigned 32-bit quantity.
    return std::size_t(std::uint32_t(
        codec::decode_integer(b, codec::number_type::int_, position, codec::byte_order::big_endian)));
}

// Cuts complete frames off the front of `pending` (bytes received so far); keeps a partial
// frame for the next read.
std::vector<std::string> take_frames(buffer& pending) {
    std::vector<std::string> frames;
    std::size_t at = 0;
    while (pending.length() - at >= header_size) {
        const std::size_t n = payload_length(pending, at);
        if (n > max_payload) throw std::runtime_error("frame too large");
        if (pending.length() - at - header_size < n) break;
        frames.push_back(codec::decode_string(pending, codec::charset::utf8, at + header_size, n));
        at += header_size + n;
    }
    pending = pending.clone(at);
    return frames;
}

// ---- the server (co_await) -------------------------------------------------------------

std::string execute(std::map<std::string, std::string>& store, std::string_view request) {
    const std::size_t space = request.find(' ');
    const std::string_view verb = request.substr(0, space);
    const std::string_view rest = space == std::string_view::npos ? std::string_view() : request.substr(space + 1);
    if (verb == "SET") {
        const std::size_t split = rest.find(' ');
        if (split == std::string_view::npos || split == 0) return "ERR usage: SET <key> <value>";
        store[std::string(rest.substr(0, split))] = std::string(rest.substr(split + 1));
        return "OK";
    }
    if (verb == "GET") {
        if (rest.empty() || rest.find(' ') != std::string_view::npos) return "ERR usage: GET <key>";
        auto it = store.find(std::string(rest));
        return it == store.end() ? "NOT_FOUND" : it->second;
    }
    return "ERR unknown command";
}

// Reads exactly `length` bytes; nullopt at a clean end of stream before the first byte,
// throws if the stream ends in the middle. The buffer grows as bytes arrive (doubling, up to
// `length`) instead of being allocated whole at once: a peer that announces 64 KiB and then
// sends nothing costs a small buffer, not 64 KiB.
tisock::task<std::optional<buffer>> read_exactly(tisock::tcp& socket, std::size_t length) {
    buffer into;
    std::size_t got = 0;
    while (got < length) {
        if (got == into.length()) into.set_length(std::min(length, std::max(2 * got, first_read_size)));
        const std::int64_t n = co_await stream::async_read(socket, into, got, into.length() - got);
        if (n < 0) {
            if (got == 0) co_return std::nullopt;
            throw std::runtime_error("end of stream in the middle of a frame");
        }
        got += std::size_t(n);
    }
    co_return into;
}

// Reads one frame; nullopt at a clean end of stream.
tisock::task<std::optional<std::string>> read_frame(tisock::tcp& socket) {
    const std::optional<buffer> header = co_await read_exactly(socket, header_size);
    if (!header) co_return std::nullopt;
    const std::size_t n = payload_length(*header);
    if (n > max_payload) throw std::runtime_error("frame too large");
    const std::optional<buffer> payload = co_await read_exactly(socket, n);
    if (!payload) throw std::runtime_error("end of stream after a header");
    co_return codec::decode_string(*payload);
}

tisock::task<void> serve(tisock::tcp connection, std::map<std::string, std::string>& store) {
    try {
        int requests = 0;
        while (std::optional<std::string> request = co_await read_frame(connection)) {
            const std::string reply = execute(store, *request);
            std::printf("server: \"%s\" -> \"%s\"\n", request->c_str(), reply.c_str());
            const buffer out = frame(reply);
            co_await stream::async_write(connection, out);
            ++requests;
        }
        std::printf("server: client done after %d requests; closing\n", requests);
    } catch (const std::exception& e) {
        // A spawned task must not let an exception escape (it would call std::terminate).
        std::printf("server: connection failed: %s\n", e.what());
    }
    if (connection.state() == tisock::state::connected) connection.close();
}

tisock::task<void> accept_loop(tisock::reactor& r, tisock::tcp listener, std::map<std::string, std::string>& store) {
    try {
        for (;;) {
            tisock::tcp connection = co_await listener.async_accept();
            std::printf("server: accepted %s:%d\n", connection.host().c_str(), connection.port());
            tisock::spawn(r, serve(connection, store));
        }
    } catch (const std::system_error& e) {
        if (e.code() != std::errc::operation_canceled) std::printf("server: accept failed: %s\n", e.what());
    }
}

// ---- a client with callbacks (Ti style) ------------------------------------------------

struct exchange {
    std::string request;
    std::string expected;
};

// Sends every request at once (writes queue in order), then reads replies until it has one
// per request. `done(ok)` runs once at the end.
class callback_client {
public:
    callback_client(tisock::reactor& r, int port, std::vector<exchange> script, std::function<void(bool)> done)
        : script_(std::move(script)), done_(std::move(done)),
          socket_(r, {.host = "127.0.0.1",
                      .port = port,
                      .timeout = 5s,
                      .connected = [this](tisock::tcp& s) { on_connected(s); },
                      .error = [this](tisock::tcp&, const std::string& error, std::error_code) {
                          finish(false, "socket error: " + error);
                      }}) {}

    void start() { socket_.connect(); }

private:
    void on_connected(tisock::tcp& s) {
        std::printf("callback client: connected from %s:%d\n", s.local_host().c_str(), s.local_port());
        for (const exchange& x : script_) {
            stream::write(s, frame(x.request), [this](const tisock::io_event& e) {
                if (!e.success) finish(false, "write failed: " + e.error);
            });
        }
        read_more(s);
    }

    void read_more(const tisock::tcp& s) {
        // A small read buffer on purpose: replies arrive in pieces and get reassembled.
        stream::read(s, chunk_, [this](const tisock::io_event& e) { on_read(e); });
    }

    void on_read(const tisock::io_event& e) {
        if (!e.success) return finish(false, "read failed: " + e.error);
        if (e.bytes_processed < 0) return finish(false, "the server closed the connection early");
        pending_.append(chunk_, 0, std::size_t(e.bytes_processed));
        for (std::string& reply : take_frames(pending_)) {
            const exchange& x = script_[replies_++];
            const bool match = reply == x.expected;
            std::printf("callback client: \"%s\" -> \"%s\"%s\n", x.request.c_str(), reply.c_str(),
                        match ? "" : "  (UNEXPECTED)");
            if (!match) ok_ = false;
        }
        if (replies_ == script_.size()) return finish(ok_, "all replies in");
        read_more(e.source);
    }

    void finish(bool ok, const std::string& why) {
        if (finished_) return;
        finished_ = true;
        std::printf("callback client: %s\n", why.c_str());
        if (socket_.state() == tisock::state::connected) socket_.close();
        done_(ok);
    }

    std::vector<exchange> script_;
    std::function<void(bool)> done_;
    tisock::tcp socket_;
    buffer chunk_{7};
    buffer pending_;
    std::size_t replies_ = 0;
    bool ok_ = true;
    bool finished_ = false;
};

// ---- a client with co_await ------------------------------------------------------------

tisock::task<bool> coroutine_client(tisock::reactor& r, int port, std::vector<exchange> script) {
    tisock::tcp socket{r, {.host = "127.0.0.1", .port = port, .timeout = 5s}};
    co_await socket.async_connect();
    std::printf("coroutine client: connected from %s:%d\n", socket.local_host().c_str(), socket.local_port());
    bool ok = true;
    for (const exchange& x : script) {
        const buffer request = frame(x.request);
        co_await stream::async_write(socket, request);
        std::optional<std::string> reply = co_await read_frame(socket);
        if (!reply) throw std::runtime_error("the server closed the connection early");
        const bool match = *reply == x.expected;
        std::printf("coroutine client: \"%s\" -> \"%s\"%s\n", x.request.c_str(), reply->c_str(),
                    match ? "" : "  (UNEXPECTED)");
        ok = ok && match;
    }
    socket.close();
    co_return ok;
}

}  // namespace

int main(int argc, char** argv) {
    const bool serve_only = argc > 1 && std::string_view(argv[1]) == "--serve";
    if (serve_only) std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);  // every line at once, even into a pipe

    tisock::reactor r;
    std::map<std::string, std::string> store;
    tisock::tcp listener{r, {.host = "127.0.0.1", .port = 0}};
    listener.listen();
    std::printf("server: listening on %s:%d\n", listener.host().c_str(), listener.port());
    tisock::spawn(r, accept_loop(r, listener, store));
    if (serve_only) {
        r.run();  // the accept loop always has an accept pending: returns only if one fails
        return 1;
    }

    std::optional<bool> callback_ok;
    callback_client first(r, listener.port(),
                          {{"SET greeting hello world", "OK"},
                           {"SET city Zürich", "OK"},
                           {"GET greeting", "hello world"},
                           {"GET city", "Zürich"},
                           {"GET nobody", "NOT_FOUND"},
                           {"FROB x", "ERR unknown command"}},
                          [&](bool ok) {
                              callback_ok = ok;
                              r.stop();  // back to main, which runs the second client
                          });
    first.start();
    r.run_for(10s);
    r.restart();

    bool coroutine_ok = false;
    try {
        coroutine_ok = tisock::sync_wait(r, coroutine_client(r, listener.port(),
                                                             {{"GET greeting", "hello world"},
                                                              {"SET greeting hi", "OK"},
                                                              {"GET greeting", "hi"},
                                                              {"GET city", "Zürich"}}));
    } catch (const std::exception& e) {
        std::printf("coroutine client failed: %s\n", e.what());
    }

    // Ends the accept loop; let it and the connections finish.
    listener.close();
    r.run_for(5s);

    const bool ok = callback_ok.value_or(false) && coroutine_ok;
    std::printf("%s\n", ok ? "done: every reply as expected" : "FAILED");
    return ok ? 0 : 1;
}
