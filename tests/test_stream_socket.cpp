// Ti.Stream over real sockets: the callback and coroutine forms of stream::read, write,
// read_all, pump and write_stream (stream.hpp), over 127.0.0.1 and ::1.
//
// Every test runs both styles (callback and co_await) and ends by checking that no
// descriptor is left open and the reactor has no work left. Bulk transfers carry 16 MiB of
// pseudo-random bytes and compare an FNV-1a checksum, so a lost, duplicated or reordered
// chunk shows up. Every wait is bounded (run_until), so a hang is a failed REQUIRE.
#include "support.hpp"

#include <tisock/buffer.hpp>
#include <tisock/stream.hpp>
#include <tisock/tcp.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using tisock::buffer;
using tisock::buffer_stream;
using tisock::io_event;
using tisock::pump_event;
using tisock::reactor;
using tisock::stream_mode;
using tisock::task;
using tisock::tcp;
using namespace tisock_test;
namespace stream = tisock::stream;

// ---- compile-time: no synchronous Ti.Stream function over a socket ----------------------
// A synchronous socket read on the thread that drives the reactor could only block forever,
// so these calls must not compile. The buffer_stream lines are the control: the same
// expressions compile for a memory stream, so the tests cannot pass for a wrong reason.
namespace {
template <class S>
concept sync_read = requires(S& s, buffer& b) { stream::read(s, b); };
template <class S>
concept sync_read_slice = requires(S& s, buffer& b) { stream::read(s, b, std::size_t(0), std::size_t(1)); };
template <class S>
concept sync_read_all = requires(S& s) { stream::read_all(s); };
template <class S>
concept sync_read_all_into = requires(S& s, buffer& b) { stream::read_all(s, b); };
template <class S>
concept sync_write = requires(S& s, const buffer& b) { stream::write(s, b); };
template <class S>
concept sync_write_stream = requires(S& s, buffer_stream& m) { stream::write_stream(s, m, std::size_t(1)); };
template <class S>
concept callback_read = requires(S& s, buffer& b, tisock::io_callback cb) { stream::read(s, b, cb); };
template <class S>
concept callback_read_temporary = requires(S& s, tisock::io_callback cb) { stream::read(s, buffer(4), cb); };
template <class S>
concept callback_read_all = requires(S& s, buffer& b, tisock::io_callback cb) { stream::read_all(s, b, cb); };
}  // namespace

static_assert(!sync_read<tcp>, "stream::read(socket, buffer) without a callback must not compile");
static_assert(!sync_read<const tcp>);
static_assert(!sync_read_slice<tcp>);
static_assert(!sync_read_all<tcp>, "stream::read_all(socket) without a callback must not compile");
static_assert(!sync_read_all_into<tcp>);
static_assert(!sync_write<tcp>);
static_assert(!sync_write_stream<tcp>);
static_assert(sync_read<buffer_stream> && sync_read_slice<buffer_stream> && sync_read_all<buffer_stream> &&
                  sync_read_all_into<buffer_stream> && sync_write_stream<buffer_stream>,
              "control: the synchronous forms exist for memory streams");
static_assert(callback_read<tcp> && callback_read_all<tcp>, "control: the callback forms exist for sockets");
static_assert(!callback_read_temporary<tcp>, "a read into a temporary buffer must not compile");

namespace {

constexpr std::size_t sixteen_mib = 16u << 20;
constexpr auto transfer_limit = 60000ms;  // generous: ASan debug builds move 16 MiB slowly

enum class style { callback, coroutine };
constexpr style both_styles[] = {style::callback, style::coroutine};

const char* name_of(style s) { return s == style::callback ? "callback" : "coroutine"; }

// 64-bit FNV-1a, incremental.
struct fnv1a {
    std::uint64_t hash = 0xcbf29ce484222325ull;
    void update(std::span<const std::byte> bytes) noexcept {
        for (std::byte b : bytes) {
            hash ^= std::to_integer<std::uint64_t>(b);
            hash *= 0x100000001b3ull;
        }
    }
};

std::uint64_t checksum(std::span<const std::byte> bytes) {
    fnv1a f;
    f.update(bytes);
    return f.hash;
}

// Pseudo-random bytes (xorshift64), so that a misplaced chunk changes the checksum.
buffer make_payload(std::size_t n, std::uint64_t seed = 0x9e3779b97f4a7c15ull) {
    buffer b(n);
    std::uint64_t x = seed;
    std::byte* p = b.data();
    for (std::size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = std::byte(x >> 24);
    }
    return b;
}

std::string text(const buffer& b) { return b.to_string(); }

// Descriptors before and after a scope: the test's reactor and sockets must all be gone.
struct descriptor_check {
    int before = open_descriptor_count();
    void verify() const { CHECK_MESSAGE(open_descriptor_count() == before, "a descriptor leaked"); }
};

// Runs `body(st, r)` once per style, each time with a reactor of its own; afterwards no
// descriptor may be left open. (The body closes its sockets and checks the reactor idle.)
template <class Body>
void in_each_style(Body body) {
    for (style st : both_styles) {
        INFO("style: ", std::string(name_of(st)));
        descriptor_check fds;
        {
            reactor r;
            body(st, r);
        }
        fds.verify();
    }
}

// As in_each_style, crossed with the two modes of the buffer_stream a socket is copied into.
template <class Body>
void in_each_style_and_mode(Body body) {
    for (style st : both_styles) {
        for (stream_mode mode : {stream_mode::write, stream_mode::append}) {
            INFO("style: ", std::string(name_of(st)));
            INFO(std::string(mode == stream_mode::write ? "write mode" : "append mode"));
            descriptor_check fds;
            {
                reactor r;
                body(st, mode, r);
            }
            fds.verify();
        }
    }
}

// A listener on `host` and the socket it accepted from a raw peer: the peer can close with
// SO_LINGER 0 (a reset, not a FIN).
struct raw_link {
    tcp listener;
    std::optional<tcp> inbound;
    raw_peer peer;

    raw_link(reactor& r, const char* host, tisock::accept_options accept = {}) : listener(make_listener(r, host)) {
        listener.set_accepted([this](tcp&, tcp in) { inbound = in; });
        listener.accept(std::move(accept));
        peer = raw_peer::connect(host, listener.port());
        REQUIRE(run_until(r, [&] { return inbound.has_value(); }));
    }
    raw_link(const raw_link&) = delete;
    raw_link& operator=(const raw_link&) = delete;

    // Closes the listener and lets go of the accepted socket.
    void release() {
        listener.close();
        inbound.reset();
    }
};

// Everything a pump handler saw, checked against Titanium's PumpCallbackArgs rules.
struct pump_log {
    std::size_t max_chunk = 0;
    int chunk_calls = 0;
    int final_calls = 0;
    int calls_after_final = 0;
    int bad_chunk_size = 0;      // 0 bytes, more than max_chunk, or chunk.length() != bytes_processed
    int bad_total = 0;           // total_bytes_processed != running sum
    int wrong_source = 0;
    int moved_storage = 0;       // chunk.data() differs from the first call's
    const std::byte* first_data = nullptr;
    std::int64_t running = 0;
    fnv1a sum;
    std::optional<tisock::tcp> expected_source;
    // The final call.
    bool final_success = false;
    std::error_code final_code;
    std::string final_error;
    std::int64_t final_total = -2;
    std::size_t final_chunk_length = 1;

    void on(const pump_event<tcp>& e) {
        if (final_calls > 0) ++calls_after_final;
        if (expected_source && !(e.source == *expected_source)) ++wrong_source;
        if (e.bytes_processed == -1) {
            ++final_calls;
            final_success = e.success;
            final_code = e.code;
            final_error = e.error;
            final_total = e.total_bytes_processed;
            final_chunk_length = e.chunk.length();
            return;
        }
        ++chunk_calls;
        if (e.bytes_processed <= 0 || std::size_t(e.bytes_processed) > max_chunk ||
            e.chunk.length() != std::size_t(e.bytes_processed) || !e.success)
            ++bad_chunk_size;
        running += e.bytes_processed;
        if (e.total_bytes_processed != running) ++bad_total;
        if (first_data == nullptr) first_data = e.chunk.data();
        if (e.chunk.data() != first_data) ++moved_storage;
        sum.update(e.chunk.span());
    }

    // The checks common to every pump that reached the end of its stream.
    void check_ended_well(std::int64_t expected_total, std::uint64_t expected_sum) const {
        CHECK(final_calls == 1);
        CHECK(calls_after_final == 0);
        CHECK(bad_chunk_size == 0);
        CHECK(bad_total == 0);
        CHECK(wrong_source == 0);
        CHECK(moved_storage == 0);
        CHECK(running == expected_total);
        CHECK(final_total == expected_total);
        CHECK(final_success);
        CHECK(!final_code);
        CHECK(final_error.empty());
        CHECK(final_chunk_length == 0);
        CHECK(sum.hash == expected_sum);
    }
};

// The sending side of a transfer: all of `data`, then end of stream. Both forms own their
// copy of the bytes (callers pass temporaries).
task<void> send_then_shutdown(tcp s, buffer data) {
    const std::size_t n = co_await stream::async_write(s, data);
    CHECK(n == data.length());
    co_await s.async_shutdown();
}

void send_then_shutdown(const tcp& s, const buffer& data, int& done_calls) {
    stream::write(s, data, [&done_calls, expected = data.length()](const io_event& e) {
        ++done_calls;
        CHECK(e.success);
        CHECK(e.bytes_processed == std::int64_t(expected));
        e.source.shutdown();
    });
}

// Starts the sender in `st`; returns a predicate that tells when it is done.
struct sender {
    outcome out;
    int done_calls = 0;

    void start(reactor& r, style st, const tcp& s, const buffer& data) {
        if (st == style::coroutine) {
            tisock_test::start(r, send_then_shutdown(s, data), out);
        } else {
            send_then_shutdown(s, data, done_calls);
        }
    }
    bool finished(style st) const { return st == style::coroutine ? out.done : done_calls == 1; }
    void check(style st) const {
        if (st == style::coroutine) {
            CHECK_MESSAGE(!out.error, out.what());
        } else {
            CHECK(done_calls == 1);
        }
    }
};

}  // namespace

// ---- pump --------------------------------------------------------------------------------

namespace {
task<void> pump_into(tcp source, buffer_stream& out, pump_log& log, std::size_t max_chunk, std::size_t& returned) {
    returned = co_await stream::async_pump(
        source,
        [&out, &log](const pump_event<tcp>& e) {
            log.on(e);
            if (e.bytes_processed > 0) stream::write(out, e.chunk);
        },
        max_chunk);
}

// A buffer_stream in `mode` over `bytes`, which hold 7 bytes to begin with: append mode keeps
// them ("prefix:", `prefix` long) and writes after them; write mode overwrites from 0.
// Not copyable: `out` refers to `bytes`.
struct mode_sink {
    explicit mode_sink(stream_mode mode)
        : bytes(buffer::from_string(mode == stream_mode::append ? "prefix:" : "XXXXXXX")),
          prefix(mode == stream_mode::append ? bytes.length() : 0),
          out(bytes, mode) {}
    mode_sink(const mode_sink&) = delete;
    mode_sink& operator=(const mode_sink&) = delete;

    buffer bytes;
    std::size_t prefix;
    buffer_stream out;
};
}  // namespace

TEST_CASE("pump: 16 MiB from a socket into a buffer_stream (write and append modes), intact") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer payload = make_payload(sixteen_mib);
    const std::uint64_t expected = checksum(payload.span());
    in_each_style_and_mode([&](style st, stream_mode mode, reactor& r) {
        socket_trio t = connect_trio(r, host);
        mode_sink sink(mode);
        pump_log log;
        log.max_chunk = 10000;  // not a power of two: chunks cannot be the kernel's pieces by luck
        log.expected_source = t.inbound;
        std::size_t returned = 0;
        outcome pumped;
        if (st == style::coroutine) {
            start(r, pump_into(t.inbound, sink.out, log, log.max_chunk, returned), pumped);
        } else {
            stream::pump(
                t.inbound,
                [&sink, &log](const pump_event<tcp>& e) {
                    log.on(e);
                    if (e.bytes_processed > 0) stream::write(sink.out, e.chunk);
                },
                log.max_chunk);
            CHECK(log.chunk_calls + log.final_calls == 0);  // callbacks run from the reactor only
        }
        sender s;
        s.start(r, st, t.client, payload);
        REQUIRE(run_until(r, [&] { return log.final_calls > 0 && s.finished(st); }, transfer_limit));
        if (st == style::coroutine) {
            REQUIRE(run_until(r, [&] { return pumped.done; }));
            CHECK_MESSAGE(!pumped.error, pumped.what());
            CHECK(returned == sixteen_mib);
        }
        s.check(st);
        log.check_ended_well(std::int64_t(sixteen_mib), expected);
        CHECK(log.chunk_calls >= int(sixteen_mib / log.max_chunk));
        REQUIRE(sink.bytes.length() == sink.prefix + sixteen_mib);
        CHECK(checksum(sink.bytes.span().subspan(sink.prefix)) == expected);
        if (mode == stream_mode::append) CHECK(text(sink.bytes.clone(0, sink.prefix)) == "prefix:");
        CHECK(t.inbound.state() == tisock::state::connected);  // end of stream is not an error
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("pump: a peer reset ends the pump with one final call, success false and the error code") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        error_log errors;
        raw_link link(r, host, {.error = errors.callback()});

        pump_log log;
        log.max_chunk = 4096;
        log.expected_source = *link.inbound;
        std::size_t returned = 0;
        outcome pumped;
        buffer ignored;
        buffer_stream unused(ignored, stream_mode::append);
        if (st == style::coroutine) {
            start(r, pump_into(*link.inbound, unused, log, log.max_chunk, returned), pumped);
        } else {
            stream::pump(*link.inbound, [&log](const pump_event<tcp>& e) { log.on(e); }, log.max_chunk);
        }
        const buffer data = make_payload(50000, 7);
        REQUIRE(link.peer.send_all(text(data)));
        // Everything sent arrives before the reset, so the totals are exact.
        REQUIRE(run_until(r, [&] { return log.running == 50000; }));
        CHECK(log.final_calls == 0);
        link.peer.reset();
        REQUIRE(run_until(r, [&] { return log.final_calls > 0 && (st == style::callback || pumped.done); }));
        run_for_at_least(r, 50ms);  // a second final call would show up here

        CHECK(log.final_calls == 1);
        CHECK(log.calls_after_final == 0);
        CHECK(log.bad_chunk_size == 0);
        CHECK(log.bad_total == 0);
        CHECK(log.wrong_source == 0);
        CHECK(log.moved_storage == 0);
        CHECK(log.sum.hash == checksum(data.span()));
        CHECK_FALSE(log.final_success);
        CHECK(log.final_code == std::errc::connection_reset);
        CHECK_FALSE(log.final_error.empty());
        CHECK(log.final_total == 50000);
        CHECK(log.final_chunk_length == 0);
        if (st == style::coroutine) {
            CHECK_MESSAGE(!pumped.error, pumped.what());  // reported to the handler, not thrown
            CHECK(returned == 50000);
        }
        // The failure went through the socket's state machine as well.
        CHECK(link.inbound->state() == tisock::state::error);
        CHECK(errors.count == 1);
        CHECK(errors.code == std::errc::connection_reset);
        link.release();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("pump: an immediate end of stream gives just the final call, with success") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        pump_log log;
        log.max_chunk = 16;
        std::size_t returned = 99;
        outcome pumped;
        buffer ignored;
        buffer_stream unused(ignored, stream_mode::append);
        if (st == style::coroutine) {
            start(r, pump_into(t.inbound, unused, log, log.max_chunk, returned), pumped);
        } else {
            stream::pump(t.inbound, [&log](const pump_event<tcp>& e) { log.on(e); }, log.max_chunk);
        }
        t.client.shutdown();
        REQUIRE(run_until(r, [&] { return log.final_calls > 0 && (st == style::callback || pumped.done); }));
        log.check_ended_well(0, fnv1a{}.hash);
        CHECK(log.chunk_calls == 0);
        if (st == style::coroutine) CHECK(returned == 0);
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("pump: max_chunk_size 0 is refused") {
    reactor r;
    socket_trio t = connect_trio(r, "127.0.0.1");
    int calls = 0;
    CHECK_THROWS_AS(stream::pump(t.inbound, [&calls](const pump_event<tcp>&) { ++calls; }, 0), std::invalid_argument);
    outcome pumped;
    start(r, [](tcp s, int& c) -> task<void> {
        co_await stream::async_pump(s, [&c](const pump_event<tcp>&) { ++c; }, 0);
    }(t.inbound, calls), pumped);
    REQUIRE(run_until(r, [&] { return pumped.done; }));
    CHECK(pumped.threw<std::invalid_argument>());
    CHECK(calls == 0);
    t.close_all();
    CHECK(reactor_is_idle(r));
}

// ---- write_stream ------------------------------------------------------------------------

namespace {
struct copy_result {
    int calls = 0;
    std::optional<io_event> last;  // io_event holds a tcp, which has no empty state
};

template <class In, class Out>
task<void> copy_stream(In& input, Out& output, std::size_t max_chunk, std::size_t& written) {
    written = co_await stream::async_write_stream(input, output, max_chunk);
}

// One write_stream from `input` to `output` in `st`: the callback form records into `cb`,
// the coroutine form (copy_stream) its count into `written` and its end into `copied`.
// Started once; not copyable, as the callback refers to it.
struct write_stream_run {
    copy_result cb;
    std::size_t written = 0;
    outcome copied;

    write_stream_run() = default;
    write_stream_run(const write_stream_run&) = delete;
    write_stream_run& operator=(const write_stream_run&) = delete;

    template <class In, class Out>
    void start(reactor& r, style st, In& input, Out& output, std::size_t max_chunk) {
        if (st == style::coroutine) {
            tisock_test::start(r, copy_stream(input, output, max_chunk, written), copied);
        } else {
            stream::write_stream(input, output, max_chunk, [this](const io_event& e) {
                ++cb.calls;
                cb.last = e;
            });
        }
    }
    bool done(style st) const { return st == style::coroutine ? copied.done : cb.calls > 0; }
};
}  // namespace

TEST_CASE("write_stream: 16 MiB from a socket into a buffer_stream, intact") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer payload = make_payload(sixteen_mib, 11);
    const std::uint64_t expected = checksum(payload.span());
    in_each_style_and_mode([&](style st, stream_mode mode, reactor& r) {
        socket_trio t = connect_trio(r, host);
        mode_sink sink(mode);
        write_stream_run copy;
        copy.start(r, st, t.inbound, sink.out, 65536);
        sender s;
        s.start(r, st, t.client, payload);
        REQUIRE(run_until(r, [&] { return s.finished(st) && copy.done(st); }, transfer_limit));
        s.check(st);
        if (st == style::coroutine) {
            CHECK_MESSAGE(!copy.copied.error, copy.copied.what());
            CHECK(copy.written == sixteen_mib);
        } else {
            run_for_at_least(r, 20ms);
            CHECK(copy.cb.calls == 1);
            CHECK(copy.cb.last->success);
            CHECK(copy.cb.last->bytes_processed == std::int64_t(sixteen_mib));
            CHECK(copy.cb.last->source == t.inbound);
        }
        REQUIRE(sink.bytes.length() == sink.prefix + sixteen_mib);
        CHECK(checksum(sink.bytes.span().subspan(sink.prefix)) == expected);
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("write_stream: 16 MiB from a buffer_stream into a socket, intact") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer payload = make_payload(sixteen_mib, 13);
    const std::uint64_t expected = checksum(payload.span());
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        buffer source = payload;
        buffer_stream in(source, stream_mode::read);
        copy_result cb;
        std::size_t written = 0;
        outcome copied;
        if (st == style::coroutine) {
            start(r, [](buffer_stream& i, tcp o, std::size_t& w) -> task<void> {
                co_await copy_stream(i, o, 100000, w);
                co_await o.async_shutdown();
            }(in, t.client, written), copied);
        } else {
            stream::write_stream(in, t.client, 100000, [&cb](const io_event& e) {
                ++cb.calls;
                cb.last = e;
                e.source.shutdown();
            });
        }
        // The receiving side: read_all in the same style.
        buffer sink(3);
        copy_result got;
        outcome received;
        std::size_t received_bytes = 0;
        if (st == style::coroutine) {
            start(r, [](tcp s, buffer& into, std::size_t& n) -> task<void> {
                n = co_await stream::async_read_all(s, into);
            }(t.inbound, sink, received_bytes), received);
        } else {
            stream::read_all(t.inbound, sink, [&got](const io_event& e) {
                ++got.calls;
                got.last = e;
            });
        }
        REQUIRE(run_until(
            r,
            [&] {
                return st == style::coroutine ? copied.done && received.done : cb.calls > 0 && got.calls > 0;
            },
            transfer_limit));
        if (st == style::coroutine) {
            CHECK_MESSAGE(!copied.error, copied.what());
            CHECK_MESSAGE(!received.error, received.what());
            CHECK(written == sixteen_mib);
            CHECK(received_bytes == sixteen_mib);
        } else {
            run_for_at_least(r, 20ms);
            CHECK(cb.calls == 1);
            CHECK(cb.last->success);
            CHECK(cb.last->bytes_processed == std::int64_t(sixteen_mib));
            CHECK(cb.last->source == t.client);
            CHECK(got.calls == 1);
            CHECK(got.last->success);
            CHECK(got.last->bytes_processed == std::int64_t(sixteen_mib));
        }
        CHECK(in.position() == sixteen_mib);
        REQUIRE(sink.length() == sixteen_mib);
        CHECK(checksum(sink.span()) == expected);
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

// client -> relay (inbound of the first listener) -> sink (inbound of the second listener).
TEST_CASE("relay: 16 MiB socket to socket with write_stream and with pump, intact") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer payload = make_payload(sixteen_mib, 17);
    const std::uint64_t expected = checksum(payload.span());
    for (style st : both_styles) {
        for (bool use_pump : {false, true}) {
            INFO("style: ", std::string(name_of(st)));
            INFO(std::string(use_pump ? "pump" : "write_stream"));
            descriptor_check fds;
            {
                reactor r;
                socket_trio front = connect_trio(r, host);  // client -> relay_in
                socket_trio back = connect_trio(r, host);   // relay_out -> sink
                tcp& relay_in = front.inbound;
                tcp& relay_out = back.client;
                bool relay_done = false;
                std::size_t relayed = 0;
                outcome relay_task;
                pump_log log;
                log.max_chunk = 32768;
                int relay_writes_failed = 0;
                if (use_pump) {
                    // The handler copies each chunk into its write (the chunk is reused);
                    // shutdown() waits for the queued writes, then ends the sink's stream.
                    auto handler = [&log, &relay_done, &relay_writes_failed, relay_out](const pump_event<tcp>& e) {
                        log.on(e);
                        if (e.bytes_processed > 0) {
                            stream::write(relay_out, e.chunk, [&relay_writes_failed](const io_event& w) {
                                if (!w.success) ++relay_writes_failed;
                            });
                        } else {
                            relay_out.shutdown([&relay_done](tcp&, std::error_code ec) {
                                CHECK(!ec);
                                relay_done = true;
                            });
                        }
                    };
                    if (st == style::coroutine) {
                        start(r, [](tcp in, decltype(handler) h, std::size_t max, std::size_t& n) -> task<void> {
                            n = co_await stream::async_pump(in, std::move(h), max);
                        }(relay_in, handler, log.max_chunk, relayed), relay_task);
                    } else {
                        stream::pump(relay_in, handler, log.max_chunk);
                    }
                } else if (st == style::coroutine) {
                    start(r, [](tcp in, tcp out, std::size_t& n, bool& done) -> task<void> {
                        co_await copy_stream(in, out, 32768, n);
                        co_await out.async_shutdown();
                        done = true;
                    }(relay_in, relay_out, relayed, relay_done), relay_task);
                } else {
                    stream::write_stream(relay_in, relay_out, 32768,
                                         [&relayed, &relay_done, relay_out](const io_event& e) {
                                             CHECK(e.success);
                                             relayed = std::size_t(e.bytes_processed);
                                             relay_out.shutdown();
                                             relay_done = true;
                                         });
                }
                buffer sink;
                int sink_calls = 0;
                std::int64_t sink_bytes = -2;
                stream::read_all(back.inbound, sink, [&](const io_event& e) {
                    ++sink_calls;
                    sink_bytes = e.bytes_processed;
                });
                sender s;
                s.start(r, st, front.client, payload);
                REQUIRE(run_until(r, [&] { return sink_calls > 0 && relay_done && s.finished(st); }, transfer_limit));
                if (st == style::coroutine) {
                    REQUIRE(run_until(r, [&] { return relay_task.done; }));
                    CHECK_MESSAGE(!relay_task.error, relay_task.what());
                }
                s.check(st);
                CHECK(sink_calls == 1);
                CHECK(sink_bytes == std::int64_t(sixteen_mib));
                REQUIRE(sink.length() == sixteen_mib);
                CHECK(checksum(sink.span()) == expected);
                if (use_pump) {
                    log.check_ended_well(std::int64_t(sixteen_mib), expected);
                    CHECK(relay_writes_failed == 0);
                    if (st == style::coroutine) CHECK(relayed == sixteen_mib);
                } else {
                    CHECK(relayed == sixteen_mib);
                }
                front.close_all();
                back.close_all();
                CHECK(reactor_is_idle(r));
            }
            fds.verify();
        }
    }
}

TEST_CASE("write_stream: an input already at its end gives 0 bytes") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        buffer sink;
        buffer_stream out(sink, stream_mode::write);
        write_stream_run copy;
        copy.written = 99;  // the coroutine form must set it to 0
        copy.start(r, st, t.inbound, out, 64);
        t.client.shutdown();
        REQUIRE(run_until(r, [&] { return copy.done(st); }));
        if (st == style::coroutine) {
            CHECK_MESSAGE(!copy.copied.error, copy.copied.what());
            CHECK(copy.written == 0);
        } else {
            CHECK(copy.cb.last->success);
            CHECK(copy.cb.last->bytes_processed == 0);
        }
        CHECK(sink.length() == 0);
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("write_stream: a reset of the input is reported as a failure") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        raw_link link(r, host);
        buffer sink;
        buffer_stream out(sink, stream_mode::write);
        write_stream_run copy;
        copy.start(r, st, *link.inbound, out, 1000);
        REQUIRE(link.peer.send_all("some bytes first"));
        REQUIRE(run_until(r, [&] { return sink.length() == 16; }));
        link.peer.reset();
        REQUIRE(run_until(r, [&] { return copy.done(st); }));
        run_for_at_least(r, 20ms);
        if (st == style::coroutine) {
            CHECK(copy.copied.code() == std::errc::connection_reset);
        } else {
            CHECK(copy.cb.calls == 1);
            CHECK_FALSE(copy.cb.last->success);
            CHECK(copy.cb.last->bytes_processed == -1);
            CHECK(copy.cb.last->code == std::errc::connection_reset);
            CHECK_FALSE(copy.cb.last->error.empty());
        }
        CHECK(text(sink) == "some bytes first");
        link.release();
        CHECK(reactor_is_idle(r));
    });
}

// ---- read_all ----------------------------------------------------------------------------

namespace {
// Sends `data` from t.client (in `st`), read_all's it into `into` on t.inbound; returns the
// bytes read_all reported.
std::int64_t read_all_of(reactor& r, style st, socket_trio& t, const buffer& data, buffer& into) {
    sender s;
    s.start(r, st, t.client, data);
    std::int64_t reported = -2;
    int calls = 0;
    outcome read;
    if (st == style::coroutine) {
        start(r, [](tcp in, buffer& b, std::int64_t& n) -> task<void> {
            n = std::int64_t(co_await stream::async_read_all(in, b));
        }(t.inbound, into, reported), read);
    } else {
        stream::read_all(t.inbound, into, [&](const io_event& e) {
            ++calls;
            CHECK(e.success);
            CHECK(e.source == t.inbound);
            reported = e.bytes_processed;
        });
    }
    REQUIRE(run_until(r, [&] { return s.finished(st) && (st == style::coroutine ? read.done : calls > 0); },
                      transfer_limit));
    s.check(st);
    if (st == style::coroutine) {
        CHECK_MESSAGE(!read.error, read.what());
    } else {
        run_for_at_least(r, 20ms);
        CHECK(calls == 1);
    }
    return reported;
}
}  // namespace

TEST_CASE("read_all: reads until the peer closes, growing the buffer") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer data = make_payload((3u << 20) + 123, 23);  // many times the first growth
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        buffer into = buffer::from_string("tiny");
        CHECK(read_all_of(r, st, t, data, into) == std::int64_t(data.length()));
        REQUIRE(into.length() == data.length());
        CHECK(checksum(into.span()) == checksum(data.span()));
        CHECK(t.inbound.state() == tisock::state::connected);
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("read_all: a larger buffer keeps its length; bytes past the data are untouched") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer data = buffer::from_string("All work and no play makes Jack a dull boy");
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        buffer into(100000);
        into.fill(0xEE);
        CHECK(read_all_of(r, st, t, data, into) == std::int64_t(data.length()));
        REQUIRE(into.length() == 100000);
        CHECK(text(into.clone(0, data.length())) == text(data));
        buffer tail = into.clone(data.length());
        CHECK(std::all_of(tail.span().begin(), tail.span().end(), [](std::byte b) { return b == std::byte{0xEE}; }));
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("read_all: an empty stream gives 0 bytes and leaves the buffer as it was") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        buffer into = buffer::from_string("keep");
        CHECK(read_all_of(r, st, t, buffer(), into) == 0);
        CHECK(text(into) == "keep");
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("async_read_all(socket) returns a new buffer with everything") {
    TISOCK_LOOPBACK_HOSTS(host);
    descriptor_check fds;
    {
        reactor r;
        socket_trio t = connect_trio(r, host);
        const buffer data = make_payload(200000, 29);
        sender s;
        s.start(r, style::coroutine, t.client, data);
        std::optional<buffer> all;
        outcome read;
        start(r, [](tcp in, std::optional<buffer>& out) -> task<void> {
            out = co_await stream::async_read_all(in);
        }(t.inbound, all), read);
        REQUIRE(run_until(r, [&] { return read.done && s.finished(style::coroutine); }, transfer_limit));
        CHECK_MESSAGE(!read.error, read.what());
        REQUIRE(all.has_value());
        REQUIRE(all->length() == data.length());
        CHECK(checksum(all->span()) == checksum(data.span()));
        t.close_all();
        CHECK(reactor_is_idle(r));
    }
    fds.verify();
}

TEST_CASE("read_all: a reset is reported as a failure") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        raw_link link(r, host);
        buffer into;
        int calls = 0;
        std::optional<io_event> last;
        outcome read;
        if (st == style::coroutine) {
            start(r, [](tcp in, buffer& b) -> task<void> { co_await stream::async_read_all(in, b); }(*link.inbound, into),
                  read);
        } else {
            stream::read_all(*link.inbound, into, [&](const io_event& e) {
                ++calls;
                last = e;
            });
        }
        REQUIRE(link.peer.send_all("partial"));
        run_for_at_least(r, 20ms);
        link.peer.reset();
        REQUIRE(run_until(r, [&] { return st == style::coroutine ? read.done : calls > 0; }));
        if (st == style::coroutine) {
            CHECK(read.code() == std::errc::connection_reset);
        } else {
            run_for_at_least(r, 20ms);
            CHECK(calls == 1);
            CHECK_FALSE(last->success);
            CHECK(last->bytes_processed == -1);
            CHECK(last->code == std::errc::connection_reset);
        }
        link.release();
        CHECK(reactor_is_idle(r));
    });
}

// ---- read and write ----------------------------------------------------------------------

namespace {
// One stream::read in `st`: bytes_processed of the callback, or the coroutine's result.
std::int64_t read_once(reactor& r, style st, const tcp& s, buffer& into, std::size_t offset, std::size_t length) {
    std::int64_t result = -2;
    if (st == style::coroutine) {
        outcome out;
        start(r, [](tcp in, buffer& b, std::size_t o, std::size_t l, std::int64_t& n) -> task<void> {
            n = co_await stream::async_read(in, b, o, l);
        }(s, into, offset, length, result), out);
        REQUIRE(run_until(r, [&] { return out.done; }));
        CHECK_MESSAGE(!out.error, out.what());
    } else {
        int calls = 0;
        stream::read(s, into, offset, length, [&](const io_event& e) {
            ++calls;
            CHECK(e.success);
            CHECK(!e.code);
            CHECK(e.source == s);
            result = e.bytes_processed;
        });
        CHECK(calls == 0);
        REQUIRE(run_until(r, [&] { return calls > 0; }));
    }
    return result;
}
}  // namespace

TEST_CASE("ti: IOStream.yml read example over a socket: offsets, then -1 at end of stream") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        sender s;
        s.start(r, st, t.client, buffer::from_string("World Titanium"));
        REQUIRE(run_until(r, [&] { return s.finished(st); }));  // on loopback: all in the peer's queue
        buffer in_buffer = buffer::from_string("Hello [           ]");
        CHECK(read_once(r, st, t.inbound, in_buffer, 10, 6) == 6);
        CHECK(text(in_buffer) == "Hello [   World   ]");
        CHECK(read_once(r, st, t.inbound, in_buffer, 8, 8) == 8);
        CHECK(text(in_buffer) == "Hello [ Titanium  ]");
        CHECK(read_once(r, st, t.inbound, in_buffer, 0, in_buffer.length()) == -1);
        CHECK(text(in_buffer) == "Hello [ Titanium  ]");
        // End of stream is not an error: it stays readable, and says -1 again.
        CHECK(t.inbound.state() == tisock::state::connected);
        CHECK(read_once(r, st, t.inbound, in_buffer, 3, 2) == -1);
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("read: the whole-buffer forms read at offset 0") {
    TISOCK_LOOPBACK_HOSTS(host);
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        sender s;
        s.start(r, st, t.client, buffer::from_string("abc"));
        REQUIRE(run_until(r, [&] { return s.finished(st); }));
        buffer into = buffer::from_string("........");
        std::int64_t n = -2;
        if (st == style::coroutine) {
            outcome out;
            start(r, [](tcp in, buffer& b, std::int64_t& got) -> task<void> {
                got = co_await stream::async_read(in, b);
            }(t.inbound, into, n), out);
            REQUIRE(run_until(r, [&] { return out.done; }));
            CHECK_MESSAGE(!out.error, out.what());
        } else {
            stream::read(t.inbound, into, [&n](const io_event& e) { n = e.bytes_processed; });
            REQUIRE(run_until(r, [&] { return n != -2; }));
        }
        CHECK(n == 3);
        CHECK(text(into) == "abc.....");
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("write: a slice of the buffer, and the rest of it from an offset") {
    TISOCK_LOOPBACK_HOSTS(host);
    const buffer source = buffer::from_string("All work and no play makes Jack a dull boy");
    in_each_style([&](style st, reactor& r) {
        socket_trio t = connect_trio(r, host);
        std::vector<std::int64_t> written;
        if (st == style::coroutine) {
            outcome out;
            start(r, [](tcp c, const buffer& b, std::vector<std::int64_t>& w) -> task<void> {
                w.push_back(std::int64_t(co_await stream::async_write(c, b, 10, 20)));
                w.push_back(std::int64_t(co_await stream::async_write(c, b, 27)));  // to the end
                co_await c.async_shutdown();
            }(t.client, source, written), out);
            REQUIRE(run_until(r, [&] { return out.done; }));
            CHECK_MESSAGE(!out.error, out.what());
        } else {
            int calls = 0;
            auto record = [&](const io_event& e) {
                ++calls;
                CHECK(e.success);
                CHECK(e.source == t.client);
                written.push_back(e.bytes_processed);
            };
            stream::write(t.client, source, 10, 20, record);
            stream::write(t.client, source, 27, source.length() - 27, record);
            t.client.shutdown();
            REQUIRE(run_until(r, [&] { return calls == 2; }));
        }
        CHECK(written == std::vector<std::int64_t>{20, std::int64_t(source.length()) - 27});
        buffer got;
        int calls = 0;
        stream::read_all(t.inbound, got, [&calls](const io_event&) { ++calls; });
        REQUIRE(run_until(r, [&] { return calls == 1; }));
        CHECK(text(got) == text(source.clone(10, 20)) + text(source.clone(27)));
        t.close_all();
        CHECK(reactor_is_idle(r));
    });
}

TEST_CASE("range errors: bad offsets throw out_of_range, nothing starts, the socket stays usable") {
    TISOCK_LOOPBACK_HOSTS(host);
    descriptor_check fds;
    {
        reactor r;
        socket_trio t = connect_trio(r, host);
        buffer ten(10);
        int calls = 0;
        auto count = [&calls](const io_event&) { ++calls; };

        // Callback forms: thrown at the call.
        CHECK_THROWS_AS(stream::read(t.inbound, ten, 11, 0, count), std::out_of_range);
        CHECK_THROWS_WITH_AS(stream::read(t.inbound, ten, 11, 0, count), doctest::Contains("offset"),
                             std::out_of_range);
        CHECK_THROWS_AS(stream::write(t.client, ten, 11, 0, count), std::out_of_range);
        CHECK_THROWS_WITH_AS(stream::write(t.client, ten, 11, 0, count), doctest::Contains("offset"),
                             std::out_of_range);

        // Coroutine forms: thrown where they are awaited.
        outcome bad_read, bad_write;
        start(r, [](tcp s, buffer& b) -> task<void> { co_await stream::async_read(s, b, 11, 0); }(t.inbound, ten),
              bad_read);
        start(r, [](tcp s, buffer& b) -> task<void> { co_await stream::async_write(s, b, 11); }(t.client, ten),
              bad_write);
        REQUIRE(run_until(r, [&] { return bad_read.done && bad_write.done; }));
        CHECK(bad_read.threw<std::out_of_range>());
        CHECK(bad_write.threw<std::out_of_range>());
        CHECK(bad_read.what().find("offset") != std::string::npos);

        run_for_at_least(r, 20ms);
        CHECK(calls == 0);

        // Nothing was left pending: a read and a write still work.
        CHECK(t.inbound.state() == tisock::state::connected);
        CHECK(t.client.state() == tisock::state::connected);
        std::int64_t wrote = -2, read = -2;
        stream::write(t.client, buffer::from_string("ok"), [&wrote](const io_event& e) { wrote = e.bytes_processed; });
        stream::read(t.inbound, ten, 4, 6, [&read](const io_event& e) { read = e.bytes_processed; });
        REQUIRE(run_until(r, [&] { return wrote != -2 && read != -2; }));
        CHECK(wrote == 2);
        CHECK(read == 2);
        CHECK(text(ten.clone(4, 2)) == "ok");
        t.close_all();
        CHECK(reactor_is_idle(r));
    }
    fds.verify();
}

TEST_CASE("read and write on a socket that is not connected throw state_error at the call") {
    descriptor_check fds;
    {
        reactor r;
        socket_trio t = connect_trio(r, "127.0.0.1");
        t.close_all();
        buffer b(4);
        int calls = 0;
        auto count = [&calls](const io_event&) { ++calls; };
        CHECK_THROWS_AS(stream::read(t.inbound, b, count), tisock::state_error);
        CHECK_THROWS_AS(stream::write(t.client, b, count), tisock::state_error);
        run_for_at_least(r, 20ms);
        CHECK(calls == 0);
        CHECK(reactor_is_idle(r));
    }
    fds.verify();
}

// The callback forms that run a coroutine underneath (read_all, pump, write_stream) must
// refuse a socket that is not connected at the call, like stream::read does: inside the
// spawned runner the state_error would escape the task and call std::terminate.
TEST_CASE("read_all, pump and write_stream on a socket that is not connected throw state_error at the call") {
    descriptor_check fds;
    {
        reactor r;
        tcp never_connected(r, {.host = "127.0.0.1", .port = 1});
        buffer b;
        buffer_stream memory_in(b, stream_mode::read);
        buffer_stream memory_out(b, stream_mode::append);
        int calls = 0;
        auto count = [&calls](const io_event&) { ++calls; };
        CHECK_THROWS_AS(stream::read_all(never_connected, b, count), tisock::state_error);
        CHECK_THROWS_AS(stream::pump(never_connected, [&calls](const pump_event<tcp>&) { ++calls; }, 16),
                        tisock::state_error);
        CHECK_THROWS_AS(stream::write_stream(never_connected, memory_out, 16, count), tisock::state_error);
        CHECK_THROWS_AS(stream::write_stream(memory_in, never_connected, 16, count), tisock::state_error);
        // A memory stream in the wrong mode is refused at the call too.
        socket_trio t = connect_trio(r, "127.0.0.1");
        CHECK_THROWS_AS(stream::write_stream(memory_out, t.client, 16, count), tisock::state_error);
        CHECK_THROWS_AS(stream::write_stream(t.inbound, memory_in, 16, count), tisock::state_error);
        run_for_at_least(r, 20ms);
        CHECK(calls == 0);
        t.close_all();
        CHECK(reactor_is_idle(r));
    }
    fds.verify();
}

TEST_CASE("callback forms refuse a socket with a read pending at the call; a clash inside one turn is reported, not fatal") {
    reactor r;
    const int fds_before = open_descriptor_count();
    {
        socket_trio t = connect_trio(r, "127.0.0.1");
        buffer pending(16);
        int read_calls = 0;
        t.inbound.read(pending, [&](const io_event&) { ++read_calls; });
        CHECK_THROWS_AS(tisock::stream::pump(t.inbound, [](const pump_event<tcp>&) {}, 16), tisock::state_error);
        buffer all;
        CHECK_THROWS_AS(tisock::stream::read_all(t.inbound, all, [](const io_event&) {}), tisock::state_error);

        // Two pumps started in the same turn: the check at the call cannot see the clash (neither
        // has started reading yet); the second one is reported through its final event.
        std::vector<bool> finals;
        std::string misuse;
        auto pump_into = [&](const pump_event<tcp>& e) {
            if (e.bytes_processed != -1) return;
            finals.push_back(e.success);
            if (!e.success) misuse = e.error;
        };
        tisock::stream::pump(t.client, pump_into, 16);
        tisock::stream::pump(t.client, pump_into, 16);
        REQUIRE(run_until(r, [&] { return finals.size() == 1; }));
        CHECK_FALSE(finals[0]);
        CHECK(misuse.find("already pending") != std::string::npos);

        t.close_all();  // ends the first pump (canceled) and the pending callback read
        REQUIRE(run_until(r, [&] { return finals.size() == 2 && read_calls == 1; }));
        CHECK_FALSE(finals[1]);
    }
    REQUIRE(run_until(r, [&] { return open_descriptor_count() == fds_before; }));
}
