// Titanium's Ti.Stream over sockets: the callback and coroutine forms of read, read_all,
// write, write_stream and pump over tisock::tcp (spec/titanium-notes.md §1.3, §1.4, §3.2).
//
// The memory half (buffer_stream, pump_event and the synchronous functions) lives in
// memory_stream.hpp, which needs no reactor; this header includes it, so <tisock/stream.hpp>
// still brings in all of Ti.Stream (API.md names it for every stream name).
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <tisock/buffer.hpp>
#include <tisock/detail/range.hpp>
#include <tisock/error.hpp>
#include <tisock/memory_stream.hpp>
#include <tisock/task.hpp>
#include <tisock/tcp.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tisock {
namespace stream {

// Over a tisock::tcp, every function has a callback form that returns at once (its callback
// runs later, from the reactor) and a coroutine form (async_*). There is deliberately no
// synchronous read of a socket: on the thread that drives the reactor it could only block
// forever (the classic Titanium deadlock: a synchronous socket read on the UI thread).
// tcp does not opt in to enable_memory_stream, so the synchronous templates of
// memory_stream.hpp can never be chosen for a socket. The callback forms run the coroutine forms (spawned on the
// socket's reactor), so the logic exists once. Bytes go straight between the socket and the
// caller's buffers: no intermediate copies.

// Either kind of stream, for the functions that accept a socket on one side and a memory
// stream or a socket on the other.
template <class S>
concept input_stream = memory_input_stream<S> || std::same_as<std::remove_cv_t<S>, tcp>;
template <class S>
concept output_stream = memory_output_stream<S> || std::same_as<std::remove_cv_t<S>, tcp>;

}  // namespace stream

namespace detail {
template <class S>
inline constexpr bool is_socket = std::same_as<std::remove_cv_t<S>, tcp>;

// Every form over a socket checks its preconditions at the call (state_error), like the
// socket's own operations: the coroutine forms before they return their task, the callback
// forms before they start (inside a spawned runner a state_error would call std::terminate).
inline void require_socket_input(const tcp& source, const char* where) {
    require_stream(source.is_readable(), where, "readable");
    if (tcp_access::read_pending(source)) throw state_error(std::string(where) + ": a read is already pending on the socket");
}
template <class S>
void require_input(S& input, const char* where) {
    if constexpr (is_socket<S>) {
        require_socket_input(input, where);
    } else {
        require_stream(input.is_readable(), where, "readable");
    }
}
template <class S>
void require_output(S& output, const char* where) {
    require_stream(output.is_writable(), where, "writable");
    if constexpr (is_socket<S>) tcp_access::check_can_write(output, where);
}

// The coroutine bodies behind the checked forms below.
inline task<std::int64_t> read_socket(tcp source, std::span<std::byte> into) {
    std::size_t n = co_await source.async_read(into);
    co_return n == 0 && !into.empty() ? -1 : static_cast<std::int64_t>(n);
}
inline task<std::size_t> write_socket(tcp dest, std::span<const std::byte> from) { co_return co_await dest.async_write(from); }
template <class S>
task<std::int64_t> read_memory(S& source, buffer& into, std::size_t offset, std::size_t length) {
    co_return stream::read(source, into, offset, length);
}
template <class S>
task<std::size_t> write_memory(S& dest, const buffer& from, std::size_t offset, std::size_t length) {
    co_return stream::write(dest, from, offset, length);
}
}  // namespace detail

namespace stream {

// Ti.Stream.read (coroutine form): reads into into[offset, offset + length) at most once;
// returns the bytes read, or -1 at the end of the stream. Failures throw std::system_error.
// `into` must outlive the read.
template <input_stream S>
task<std::int64_t> async_read(S& source, buffer& into, std::size_t offset = 0, std::size_t length = buffer::npos) {
    if constexpr (detail::is_socket<S>) {
        length = detail::checked_slice("stream::async_read", "offset", "length", "into", into.length(), offset, length);
        detail::require_socket_input(source, "stream::async_read");
        return detail::read_socket(source, into.span().subspan(offset, length));
    } else {
        detail::require_stream(source.is_readable(), "stream::async_read", "readable");
        return detail::read_memory(source, into, offset, length == buffer::npos ? into.length() - offset : length);
    }
}

// Ti.Stream.write (coroutine form): writes from[offset, offset + length) completely; returns
// the bytes written. `from` must outlive the write.
template <output_stream S>
task<std::size_t> async_write(S& dest, const buffer& from, std::size_t offset = 0, std::size_t length = buffer::npos) {
    length = detail::checked_slice("stream::async_write", "offset", "length", "from", from.length(), offset, length);
    detail::require_output(dest, "stream::async_write");
    if constexpr (detail::is_socket<S>) {
        return detail::write_socket(dest, from.span().subspan(offset, length));
    } else {
        return detail::write_memory(dest, from, offset, length);
    }
}

}  // namespace stream

namespace detail {
inline task<std::size_t> read_all_body(tcp source, buffer& into) {
    static constexpr std::size_t first_growth = 16 * 1024;
    const std::size_t original_length = into.length();
    std::size_t total = 0;
    for (;;) {
        if (total == into.length()) into.set_length(std::max(2 * total, first_growth));
        std::size_t n = co_await source.async_read(into.span().subspan(total));
        if (n == 0) break;
        total += n;
    }
    into.set_length(std::max(original_length, total));
    co_return total;
}
inline task<buffer> read_all_body(tcp source) {
    buffer all;
    co_await read_all_body(std::move(source), all);
    co_return all;
}
}  // namespace detail

namespace stream {

// Ti.Stream.readAll (coroutine form): reads until the end of the stream into `into` from
// offset 0, growing it as needed (never shrinking it); returns the bytes read.
inline task<std::size_t> async_read_all(tcp source, buffer& into) {
    detail::require_socket_input(source, "stream::async_read_all");
    return detail::read_all_body(std::move(source), into);
}

inline task<buffer> async_read_all(tcp source) {
    detail::require_socket_input(source, "stream::async_read_all");
    return detail::read_all_body(std::move(source));
}

}  // namespace stream

namespace detail {
template <class Handler>
task<std::size_t> pump_body(tcp source, Handler handler, std::size_t max_chunk_size) {
    buffer chunk(max_chunk_size);
    std::int64_t total = 0;
    std::error_code failure;
    for (;;) {
        chunk.set_length(max_chunk_size);
        std::size_t n = 0;
        try {
            n = co_await source.async_read(chunk.span());
        } catch (const std::system_error& e) {
            failure = e.code();
            break;
        }
        if (n == 0) break;
        chunk.set_length(n);
        total += static_cast<std::int64_t>(n);
        handler(pump_event<tcp>{source, chunk, static_cast<std::int64_t>(n), total});
    }
    chunk.set_length(0);
    handler(pump_event<tcp>{source, chunk, -1, total, !failure, failure, failure ? failure.message() : std::string()});
    co_return static_cast<std::size_t>(total);
}
}  // namespace detail

namespace stream {

// Ti.Stream.pump (coroutine form): calls handler(const pump_event<tcp>&) with each chunk of at
// most max_chunk_size bytes as it arrives, then once with bytes_processed == -1: at the end of
// the stream with success == true, or after a failure with success == false and the error
// (the failure is reported, not thrown). The chunk's storage is reused: clone() to keep it.
// Returns the total bytes pumped.
template <class Handler>
    requires std::invocable<Handler&, const pump_event<tcp>&>
task<std::size_t> async_pump(tcp source, Handler handler, std::size_t max_chunk_size) {
    detail::require_chunk_size(max_chunk_size, "stream::async_pump");
    detail::require_socket_input(source, "stream::async_pump");
    return detail::pump_body(std::move(source), std::move(handler), max_chunk_size);
}

}  // namespace stream

namespace detail {
template <class In, class Out>
task<std::size_t> write_stream_body(In& input, Out& output, std::size_t max_chunk_size) {
    buffer chunk(max_chunk_size);
    std::size_t total = 0;
    for (;;) {
        chunk.set_length(max_chunk_size);
        std::int64_t n = co_await stream::async_read(input, chunk, 0, max_chunk_size);
        if (n < 0) break;
        total += co_await stream::async_write(output, chunk, 0, static_cast<std::size_t>(n));
    }
    co_return total;
}
}  // namespace detail

namespace stream {

// Ti.Stream.writeStream (coroutine form): copies `input` to `output` in chunks of at most
// max_chunk_size bytes until the end of `input`; at least one side is a socket. Returns the
// bytes written; failures throw std::system_error. Both streams must outlive the copy.
template <input_stream In, output_stream Out>
task<std::size_t> async_write_stream(In& input, Out& output, std::size_t max_chunk_size) {
    detail::require_chunk_size(max_chunk_size, "stream::async_write_stream");
    detail::require_input(input, "stream::async_write_stream");
    detail::require_output(output, "stream::async_write_stream");
    return detail::write_stream_body(input, output, max_chunk_size);
}

}  // namespace stream

namespace detail {
// A user callback run inside a spawned runner threw: an exception escaping the task would
// call std::terminate, so it is rethrown from the run loop instead, out of run*() (API.md).
inline void rethrow_from_run_loop(const tcp& socket, std::exception_ptr e) {
    reactor_access::core(socket.get_reactor()).defer_call([e] { std::rethrow_exception(e); });
}

// Runs a coroutine form for a callback form: on the socket's reactor, from the run loop, and
// reports its result or failure as an io_event.
template <class Body>
void run_for_callback(const tcp& socket, Body body, io_callback done) {
    auto runner = [](tcp s, Body b, io_callback cb) -> task<void> {
        io_event e{s, -1, true, {}, {}};
        try {
            e.bytes_processed = co_await b();
        } catch (const std::system_error& ex) {
            e = io_event{s, -1, false, ex.code(), ex.code().message()};
        } catch (const state_error& ex) {
            // A misuse that the check at the call could not see yet (two readers started in
            // the same turn): reported, never std::terminate from a spawned task.
            e = io_event{s, -1, false, std::make_error_code(std::errc::operation_not_permitted), ex.what()};
        }
        if (cb) {
            try {
                cb(e);
            } catch (...) {
                rethrow_from_run_loop(s, std::current_exception());
            }
        }
    };
    spawn(socket.get_reactor(), runner(socket, std::move(body), std::move(done)));
}
}  // namespace detail

namespace stream {

// Callback forms over a socket.
inline void read(const tcp& source, buffer& into, io_callback done) { source.read(into, std::move(done)); }
inline void read(const tcp& source, buffer& into, std::size_t offset, std::size_t length, io_callback done) {
    source.read(into, offset, length, std::move(done));
}
inline void read(const tcp&, buffer&&, io_callback) = delete;  // `into` must outlive the read
inline void write(const tcp& dest, buffer data, io_callback done) { dest.write(std::move(data), std::move(done)); }
inline void write(const tcp& dest, buffer data, std::size_t offset, std::size_t length, io_callback done) {
    dest.write(std::move(data), offset, length, std::move(done));
}

// Ti.Stream.readAll (callback form): done(io_event) once, with the total in bytes_processed.
inline void read_all(const tcp& source, buffer& into, io_callback done) {
    detail::require_socket_input(source, "stream::read_all");
    detail::run_for_callback(
        source, [source, &into]() -> task<std::int64_t> { co_return std::int64_t(co_await async_read_all(source, into)); },
        std::move(done));
}

// Ti.Stream.pump (callback form): as async_pump, started from the run loop.
template <class Handler>
    requires std::invocable<Handler&, const pump_event<tcp>&>
void pump(const tcp& source, Handler handler, std::size_t max_chunk_size) {
    detail::require_chunk_size(max_chunk_size, "stream::pump");
    detail::require_socket_input(source, "stream::pump");
    spawn(source.get_reactor(), [](tcp s, Handler h, std::size_t n) -> task<void> {
        std::string misuse;
        bool in_handler = false;  // an exception from the user's handler leaves it set
        auto call = [&h, &in_handler](const pump_event<tcp>& e) {
            in_handler = true;
            h(e);
            in_handler = false;
        };
        try {
            co_await async_pump(s, call, n);
            co_return;
        } catch (const state_error& ex) {  // see detail::run_for_callback
            if (in_handler) {
                detail::rethrow_from_run_loop(s, std::current_exception());
                co_return;
            }
            misuse = ex.what();
        } catch (...) {
            detail::rethrow_from_run_loop(s, std::current_exception());
            co_return;
        }
        buffer empty;
        try {
            h(pump_event<tcp>{s, empty, -1, 0, false, std::make_error_code(std::errc::operation_not_permitted), misuse});
        } catch (...) {
            detail::rethrow_from_run_loop(s, std::current_exception());
        }
    }(source, std::move(handler), max_chunk_size));
}

// Ti.Stream.writeStream (callback form): done(io_event) once, with the total written.
// Both streams must outlive the copy.
template <input_stream In, output_stream Out>
    requires(std::same_as<std::remove_cv_t<In>, tcp> || std::same_as<std::remove_cv_t<Out>, tcp>)
void write_stream(In& input, Out& output, std::size_t max_chunk_size, io_callback done) {
    detail::require_chunk_size(max_chunk_size, "stream::write_stream");
    detail::require_input(input, "stream::write_stream");
    detail::require_output(output, "stream::write_stream");
    const tcp& socket = [&]() -> const tcp& {
        if constexpr (std::same_as<std::remove_cv_t<In>, tcp>) {
            return input;
        } else {
            return output;
        }
    }();
    detail::run_for_callback(
        socket,
        [&input, &output, max_chunk_size]() -> task<std::int64_t> {
            co_return std::int64_t(co_await async_write_stream(input, output, max_chunk_size));
        },
        std::move(done));
}

}  // namespace stream
}  // namespace tisock
