// Titanium's Ti.Stream over memory: tisock::buffer_stream (Ti.BufferStream) and the
// synchronous Ti.Stream functions read, read_all, write, write_stream and pump
// (spec/titanium-notes.md §1.3, §1.4, §3.2).
//
// A memory stream's read and write complete at once, so nothing here needs a socket or the
// reactor: this header includes neither, and code that only streams over buffers does not
// pay for epoll, tcp and the coroutine machinery (tests/compile_hygiene.sh checks this). The
// socket forms are in stream.hpp, which includes this header.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <tisock/buffer.hpp>
#include <tisock/detail/range.hpp>
#include <tisock/error.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>

namespace tisock {

enum class stream_mode { read, write, append };

// A Ti.IOStream over a caller-owned buffer, which must outlive the stream.
//  - read: reads from the start; the position is kept across calls; -1 at the end.
//  - write: overwrites from position 0 onwards, growing the buffer past its end.
//  - append: every write lands at the buffer's current end.
// A stream is readable only in read mode and writable only in the other two; I/O in the
// wrong mode or after close() throws tisock::state_error.
class buffer_stream {
public:
    buffer_stream(buffer& source, stream_mode mode) : source_(&source), mode_(mode) {}
    buffer_stream(buffer&&, stream_mode) = delete;  // the stream would outlive a temporary

    // Reads into into[offset, offset + length), or as much of it as the stream holds; returns
    // the number of bytes read, or -1 when the stream was already at its end. As in
    // Titanium, `offset` past the end of `into` throws and `length` is clamped to the room
    // left in `into` (the buffer is never resized).
    std::int64_t read(buffer& into) { return read(into, 0, into.length()); }
    std::int64_t read(buffer& into, std::size_t offset, std::size_t length) {
        require(stream_mode::read, "buffer_stream::read");
        const std::size_t room = room_in("buffer_stream::read", "into", into, offset, length);
        if (position_ >= source_->length()) return -1;
        const std::size_t n = std::min(room, source_->length() - position_);
        into.copy(*source_, offset, position_, n);
        position_ += n;
        return static_cast<std::int64_t>(n);
    }

    // Writes from[offset, offset + length) (clamped to `from`) at the stream's position and
    // returns the number of bytes written: all of them, since a buffer grows.
    std::size_t write(const buffer& from) { return write(from, 0, from.length()); }
    std::size_t write(const buffer& from, std::size_t offset, std::size_t length) {
        require(stream_mode::write, "buffer_stream::write");
        const std::size_t n = room_in("buffer_stream::write", "from", from, offset, length);
        if (mode_ == stream_mode::append) {
            source_->append(from, offset, n);
            position_ = source_->length();
            return n;
        }
        if (source_->length() < position_ + n) source_->set_length(position_ + n);
        source_->copy(from, position_, offset, n);
        position_ += n;
        return n;
    }

    bool is_readable() const noexcept { return open_ && mode_ == stream_mode::read; }
    bool is_writable() const noexcept { return open_ && mode_ != stream_mode::read; }

    // Ends the stream; the buffer is untouched. Closing twice is harmless (Android's
    // BufferStream does not throw either).
    void close() noexcept { open_ = false; }

    bool is_open() const noexcept { return open_; }
    stream_mode mode() const noexcept { return mode_; }
    // The next byte read or written, relative to the start of the buffer.
    std::size_t position() const noexcept { return position_; }

private:
    void require_open(const char* where) const {
        if (!open_) throw state_error(std::string(where) + ": the stream is closed");
    }

    void require(stream_mode wanted, const char* where) const {
        require_open(where);
        if ((wanted == stream_mode::read) != (mode_ == stream_mode::read))
            throw state_error(std::string(where) + (wanted == stream_mode::read
                                                        ? ": the stream is not readable (opened for writing)"
                                                        : ": the stream is not writable (opened for reading)"));
    }

    // Titanium's rule for stream I/O: the offset must lie within the buffer, the length is
    // cut down to what is left after it.
    static std::size_t room_in(const char* where, const char* name, const buffer& b, std::size_t offset,
                               std::size_t length) {
        detail::check_offset(where, "offset", offset, name, b.length());
        return std::min(length, b.length() - offset);
    }

    buffer* source_;
    stream_mode mode_;
    std::size_t position_ = mode_ == stream_mode::append ? source_->length() : 0;
    bool open_ = true;
};

// What a pump handler receives, once per chunk and a final time at the end of the stream
// (Titanium's PumpCallbackArgs). `chunk` holds this call's bytes and is reused by the next
// call: clone() it to keep it. On the final call `bytes_processed` is -1 and `chunk` is empty
// (never a dangling or null reference, unlike iOS's null buffer). Memory streams cannot fail
// asynchronously, so their events always have success == true; the code and error fields are
// there for the socket forms, which report failures in them.
template <class Source>
struct pump_event {
    Source& source;
    const buffer& chunk;
    std::int64_t bytes_processed;
    std::int64_t total_bytes_processed;
    bool success = true;
    std::error_code code{};
    std::string error{};
};

// Opt-in for the synchronous Ti.Stream functions: a stream qualifies when its read and write
// complete immediately without blocking. A socket must never opt in - its forms are the
// asynchronous ones in stream.hpp - which is why this is an explicit switch and not a structural test
// (tcp has read/write/is_readable members too).
template <class Stream>
inline constexpr bool enable_memory_stream = false;
template <>
inline constexpr bool enable_memory_stream<buffer_stream> = true;

namespace detail {
// Ti.Stream on iOS throws for a stream in the wrong mode (Android reports it through the
// callback, which a synchronous call does not have).
inline void require_stream(bool ok, const char* where, const char* what) {
    if (!ok) throw state_error(std::string(where) + ": the stream is not " + what);
}

inline void require_chunk_size(std::size_t max_chunk_size, const char* where) {
    if (max_chunk_size == 0) throw std::invalid_argument(std::string(where) + ": max_chunk_size must be positive");
}
}  // namespace detail

namespace stream {

template <class S>
concept memory_input_stream =
    enable_memory_stream<std::remove_cv_t<S>> && requires(S& s, buffer& into, std::size_t n) {
        { s.read(into, n, n) } -> std::same_as<std::int64_t>;
        { s.is_readable() } -> std::convertible_to<bool>;
    };

template <class S>
concept memory_output_stream =
    enable_memory_stream<std::remove_cv_t<S>> && requires(S& s, const buffer& from, std::size_t n) {
        { s.write(from, n, n) } -> std::same_as<std::size_t>;
        { s.is_writable() } -> std::convertible_to<bool>;
    };

// Ti.Stream.read: reads into into[offset, offset + length) (the whole of `into` by default);
// returns the bytes read or -1 at the end of the stream. `into` is never resized.
template <memory_input_stream S>
std::int64_t read(S& source, buffer& into, std::size_t offset, std::size_t length) {
    detail::require_stream(source.is_readable(), "stream::read", "readable");
    return source.read(into, offset, length);
}
template <memory_input_stream S>
std::int64_t read(S& source, buffer& into) {
    return stream::read(source, into, 0, into.length());
}

// Ti.Stream.readAll into a buffer: reads to the end of the stream into `into` from offset 0,
// growing `into` when the data does not fit (it never shrinks); returns the bytes read.
template <memory_input_stream S>
std::size_t read_all(S& source, buffer& into) {
    detail::require_stream(source.is_readable(), "stream::read_all", "readable");
    static constexpr std::size_t first_growth = 4096;
    const std::size_t original_length = into.length();
    std::size_t total = 0;
    for (;;) {
        // Read straight into `into`, doubling it when full: no intermediate copies.
        if (total == into.length()) into.set_length(std::max(2 * total, first_growth));
        const std::int64_t n = source.read(into, total, into.length() - total);
        if (n < 0) break;
        total += static_cast<std::size_t>(n);
    }
    into.set_length(std::max(original_length, total));
    return total;
}

// Ti.Stream.readAll: a new buffer with everything left in the stream.
template <memory_input_stream S>
buffer read_all(S& source) {
    buffer all;
    stream::read_all(source, all);
    return all;
}

// Ti.Stream.write: writes from[offset, offset + length) (all of `from` by default); returns
// the bytes written.
template <memory_output_stream S>
std::size_t write(S& dest, const buffer& from, std::size_t offset, std::size_t length) {
    detail::require_stream(dest.is_writable(), "stream::write", "writable");
    return dest.write(from, offset, length);
}
template <memory_output_stream S>
std::size_t write(S& dest, const buffer& from) {
    return stream::write(dest, from, 0, from.length());
}

// Ti.Stream.pump: calls handler(const pump_event<S>&) with successive chunks of at most
// max_chunk_size bytes, then once with bytes_processed == -1. The handler runs before pump
// returns (TIMOB-28324: a synchronous pump that never calls its handler is a bug). An
// exception from the handler or the stream ends the pump and propagates.
template <memory_input_stream S, class Handler>
    requires std::invocable<Handler&, const pump_event<S>&>
void pump(S& input, Handler&& handler, std::size_t max_chunk_size) {
    detail::require_chunk_size(max_chunk_size, "stream::pump");
    detail::require_stream(input.is_readable(), "stream::pump", "readable");
    buffer chunk;  // one allocation for the whole pump: shrinking keeps the capacity
    std::int64_t total = 0;
    for (;;) {
        chunk.set_length(max_chunk_size);
        const std::int64_t n = input.read(chunk, 0, max_chunk_size);
        if (n < 0) break;
        chunk.set_length(static_cast<std::size_t>(n));
        total += n;
        handler(pump_event<S>{input, chunk, n, total});
    }
    chunk.set_length(0);
    handler(pump_event<S>{input, chunk, -1, total});
}

// Ti.Stream.writeStream: copies `input` to `output` in chunks of at most max_chunk_size bytes
// until the end of `input`; returns the bytes written. An input already at its end gives 0
// (Android; iOS throws instead).
template <memory_input_stream In, memory_output_stream Out>
std::size_t write_stream(In& input, Out& output, std::size_t max_chunk_size) {
    detail::require_stream(output.is_writable(), "stream::write_stream", "writable");
    detail::require_chunk_size(max_chunk_size, "stream::write_stream");
    std::size_t total = 0;
    stream::pump(
        input,
        [&](const pump_event<In>& e) {
            if (e.bytes_processed > 0) total += output.write(e.chunk, 0, e.chunk.length());
        },
        max_chunk_size);
    return total;
}

}  // namespace stream
}  // namespace tisock
