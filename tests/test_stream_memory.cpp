// tisock::buffer_stream and the synchronous Ti.Stream functions against Titanium's
// ti.stream.test.js and IOStream.yml (spec/titanium-notes.md §1.3, §1.4, §3.2; blob and file
// streams have no C++ counterpart). Test names starting with "ti:" reproduce a Titanium test.
#include "buffer_bytes.hpp"

// memory_stream.hpp alone, not stream.hpp: these functions must work without the reactor.
#include <tisock/memory_stream.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

using tisock::buffer;
using tisock::buffer_stream;
using tisock::pump_event;
using tisock::stream_mode;
using namespace tisock_test;
namespace stream = tisock::stream;

namespace {
std::string jack_text() {
    std::string s;
    for (int i = 0; i < 4; ++i) s += "All work and no play makes Jack a dull boy ";
    return s;  // 172 bytes, as ASCII as the Titanium fixture
}

struct ti_fixture {
    buffer source = buffer::from_string(jack_text());
};
}  // namespace

// The synchronous functions accept memory streams only: a socket (or anything else that has
// not opted in) must pick the socket forms.
static_assert(stream::memory_input_stream<buffer_stream> && stream::memory_output_stream<buffer_stream>);
namespace {
struct looks_like_a_stream {
    std::int64_t read(buffer&, std::size_t, std::size_t) { return -1; }
    std::size_t write(const buffer&, std::size_t, std::size_t) { return 0; }
    bool is_readable() const { return true; }
    bool is_writable() const { return true; }
};
}  // namespace
static_assert(!stream::memory_input_stream<looks_like_a_stream>, "memory streams opt in explicitly");
static_assert(!stream::memory_output_stream<int>);

TEST_CASE_FIXTURE(ti_fixture, "ti: basicBufferStream") {
    buffer_stream rstream(source, stream_mode::read);
    buffer_stream wstream(source, stream_mode::write);
    buffer_stream astream(source, stream_mode::append);
    CHECK(rstream.is_readable());
    CHECK_FALSE(rstream.is_writable());
    CHECK_FALSE(wstream.is_readable());
    CHECK(wstream.is_writable());
    CHECK_FALSE(astream.is_readable());
    CHECK(astream.is_writable());

    buffer dest(30);
    CHECK(rstream.read(dest, 0, 20) == 20);
    CHECK(values_of(dest, 0, 20) == values_of(source, 0, 20));

    // A write stream overwrites its buffer from position 0.
    CHECK(wstream.write(dest, 0, dest.length()) == 30);
    CHECK(values_of(source, 0, 30) == values_of(dest));

    // An append stream grows its buffer.
    const std::size_t before = source.length();
    CHECK(astream.write(buffer::from_string("appendme"), 0, 8) == 8);
    CHECK(source.length() == before + 8);
    CHECK(source.clone(before).to_string() == "appendme");
    CHECK_NOTHROW(astream.close());
}

TEST_CASE("ti: IOStream.yml read example: offsets into the destination, position kept") {
    buffer text = buffer::from_string("World Titanium");
    buffer_stream in(text, stream_mode::read);
    buffer in_buffer = buffer::from_string("Hello [           ]");
    CHECK(in.read(in_buffer, 10, 6) == 6);
    CHECK(in_buffer.to_string() == "Hello [   World   ]");
    CHECK(in.read(in_buffer, 8, 8) == 8);
    CHECK(in_buffer.to_string() == "Hello [ Titanium  ]");
    CHECK(in.read(in_buffer) == -1);
}

TEST_CASE_FIXTURE(ti_fixture, "ti: IOStream.yml loop idiom reads everything, then -1 for good") {
    buffer_stream in(source, stream_mode::read);
    buffer chunk(50);
    std::string seen;
    std::int64_t size = 0;
    int reads = 0;
    while ((size = in.read(chunk)) > -1) {
        ++reads;
        seen += chunk.clone(0, static_cast<std::size_t>(size)).to_string();
    }
    CHECK(reads == 4);  // 50 + 50 + 50 + 22
    CHECK(seen == jack_text());
    CHECK(in.read(chunk) == -1);
    CHECK(in.read(chunk, 10, 5) == -1);
}

TEST_CASE_FIXTURE(ti_fixture, "ti: asyncRead (synchronous here): Ti.Stream.read fills the buffer") {
    buffer_stream in(source, stream_mode::read);
    buffer dest(50);
    CHECK(stream::read(in, dest) == 50);
    CHECK(values_of(dest) == values_of(source, 0, 50));
    // With an offset and length, the next bytes of the stream land at dest[10..29].
    CHECK(stream::read(in, dest, 10, 20) == 20);
    CHECK(values_of(dest, 10, 20) == values_of(source, 50, 20));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: asyncWrite (synchronous here): the write stream continues at its position") {
    buffer dest(source.length());
    buffer_stream out(dest, stream_mode::write);
    CHECK(stream::write(out, source, 10, 20) == 20);
    CHECK(values_of(dest, 0, 20) == values_of(source, 10, 20));
    CHECK(stream::write(out, source) == source.length());
    CHECK(dest.length() == 20 + source.length());  // grew beyond its original length
    CHECK(values_of(dest, 20) == values_of(source));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: readAll returns a buffer with everything") {
    buffer_stream in(source, stream_mode::read);
    const buffer all = stream::read_all(in);
    CHECK(all.length() == source.length());
    CHECK(values_of(all) == values_of(source));
    CHECK(stream::read_all(in).length() == 0);  // at the end: nothing left
}

TEST_CASE_FIXTURE(ti_fixture, "ti: readAll into a buffer resizes it when needed") {
    buffer_stream in(source, stream_mode::read);
    buffer dest(10);
    CHECK(stream::read_all(in, dest) == source.length());
    CHECK(dest.length() == source.length());
    CHECK(values_of(dest) == values_of(source));

    // A larger buffer keeps its length; only the first bytes are written.
    buffer small = buffer::from_string("abc");
    buffer_stream in2(small, stream_mode::read);
    buffer big(8);
    big.fill(7);
    CHECK(stream::read_all(in2, big) == 3);
    CHECK(values_of(big) == values({'a', 'b', 'c', 7, 7, 7, 7, 7}));
}

TEST_CASE("read_all of a large buffer, from the current position") {
    buffer large = counting(100000);
    buffer_stream in(large, stream_mode::read);
    buffer skip(1000);
    CHECK(in.read(skip) == 1000);
    const buffer rest = stream::read_all(in);
    CHECK(rest.length() == 99000);
    CHECK(values_of(rest) == values_of(large, 1000));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: writeStream copies a stream into a write stream") {
    buffer dest(100);
    buffer_stream in(source, stream_mode::read);
    buffer_stream out(dest, stream_mode::write);
    CHECK(stream::write_stream(in, out, 10) == source.length());
    CHECK(dest.length() == source.length());
    CHECK(values_of(dest, 0, 100) == values_of(source, 0, 100));

    buffer dest2(100);
    buffer_stream in2(source, stream_mode::read);
    buffer_stream out2(dest2, stream_mode::write);
    const std::size_t written = stream::write_stream(in2, out2, 20);
    CHECK(written == dest2.length());  // dest2 grew to the source's length
    CHECK(values_of(dest2) == values_of(source));
}

TEST_CASE("writeStream: an input at its end gives 0 (Android; iOS throws)") {
    buffer empty;
    buffer dest(4);
    buffer_stream in(empty, stream_mode::read);
    buffer_stream out(dest, stream_mode::append);
    CHECK(stream::write_stream(in, out, 8) == 0);
    CHECK(dest.length() == 4);
}

TEST_CASE_FIXTURE(ti_fixture, "ti: pump delivers chunks of at most max_chunk_size, then -1") {
    buffer_stream in(source, stream_mode::read);
    int calls = 0;
    int final_calls = 0;
    std::int64_t running = 0;
    stream::pump(
        in,
        [&](const pump_event<buffer_stream>& e) {
            ++calls;
            CHECK(&e.source == &in);
            CHECK(e.success);
            CHECK(e.code.value() == 0);
            CHECK(e.error.empty());
            if (e.bytes_processed == -1) {
                ++final_calls;
                CHECK(e.chunk.length() == 0);
                CHECK(e.total_bytes_processed == static_cast<std::int64_t>(source.length()));
                return;
            }
            CHECK(e.bytes_processed >= 0);
            CHECK(e.bytes_processed <= 20);
            CHECK(e.chunk.length() == static_cast<std::size_t>(e.bytes_processed));
            CHECK(values_of(e.chunk) ==
                  values_of(source, static_cast<std::size_t>(running), static_cast<std::size_t>(e.bytes_processed)));
            running += e.bytes_processed;
            CHECK(running == e.total_bytes_processed);
        },
        20);
    CHECK(calls == 9 + 1);  // 8 chunks of 20, one of 12, the end
    CHECK(final_calls == 1);
    CHECK(running == static_cast<std::int64_t>(source.length()));
}

TEST_CASE("ti: pump calls its handler before it returns (TIMOB-28324), also for an empty stream") {
    buffer empty;
    buffer_stream in(empty, stream_mode::read);
    int calls = 0;
    stream::pump(
        in,
        [&](const pump_event<buffer_stream>& e) {
            ++calls;
            CHECK(e.bytes_processed == -1);
            CHECK(e.total_bytes_processed == 0);
        },
        20);
    CHECK(calls == 1);
}

TEST_CASE("pump reuses one chunk buffer for every call") {
    buffer data = counting(100);
    buffer_stream in(data, stream_mode::read);
    std::vector<const buffer*> chunks;
    std::vector<const std::byte*> storage;
    stream::pump(
        in,
        [&](const pump_event<buffer_stream>& e) {
            chunks.push_back(&e.chunk);
            if (e.bytes_processed > 0) storage.push_back(e.chunk.data());
        },
        7);
    REQUIRE(chunks.size() == 15 + 1);
    for (const buffer* c : chunks) CHECK(c == chunks.front());
    for (const std::byte* p : storage) CHECK(p == storage.front());
}

TEST_CASE("an exception from the pump handler stops the pump and propagates") {
    buffer data = counting(100);
    buffer_stream in(data, stream_mode::read);
    int calls = 0;
    const auto throwing = [&](const pump_event<buffer_stream>&) {
        if (++calls == 2) throw std::runtime_error("stop");
    };
    CHECK_THROWS_AS(stream::pump(in, throwing, 10), std::runtime_error);
    CHECK(calls == 2);
    CHECK(in.position() == 20);
}

TEST_CASE("max_chunk_size must be positive") {
    buffer data(4);
    buffer dest;
    buffer_stream in(data, stream_mode::read);
    buffer_stream out(dest, stream_mode::write);
    CHECK_THROWS_AS(stream::pump(in, [](const pump_event<buffer_stream>&) {}, 0), std::invalid_argument);
    CHECK_THROWS_AS(stream::write_stream(in, out, 0), std::invalid_argument);
    CHECK(in.position() == 0);
}

TEST_CASE("append mode writes at the buffer's current end, even after it changed") {
    buffer b = buffer::from_string("ab");
    buffer_stream out(b, stream_mode::append);
    CHECK(out.position() == 2);
    CHECK(out.write(buffer::from_string("cd")) == 2);
    b.set_length(1);  // someone else shrinks the buffer
    CHECK(out.write(buffer::from_string("xy")) == 2);
    CHECK(b.to_string() == "axy");
}

TEST_CASE("write mode overwrites in place, grows at the end, and zero-fills a gap") {
    buffer b = buffer::from_string("abcdef");
    buffer_stream out(b, stream_mode::write);
    CHECK(out.write(buffer::from_string("XY")) == 2);
    CHECK(b.to_string() == "XYcdef");
    CHECK(out.write(buffer::from_string("123456"), 1, 5) == 5);
    CHECK(b.to_string() == "XY23456");
    CHECK(out.position() == 7);
    b.set_length(3);  // shrunk behind the stream's back: the next write lands at position 7
    CHECK(out.write(buffer::from_string("!")) == 1);
    CHECK(values_of(b) == values({'X', 'Y', '2', 0, 0, 0, 0, '!'}));
}

TEST_CASE("read: offset past the destination throws naming it; length is clamped to the room") {
    buffer data = counting(10, 1);
    buffer_stream in(data, stream_mode::read);
    buffer dest(4);
    CHECK_OUT_OF_RANGE(in.read(dest, 5, 1), "offset");
    CHECK_OUT_OF_RANGE(stream::read(in, dest, 5, 1), "offset");
    CHECK(in.position() == 0);
    CHECK(in.read(dest, 1, 100) == 3);  // clamped to dest's room: never resizes dest
    CHECK(values_of(dest) == values({0, 1, 2, 3}));
    CHECK(dest.length() == 4);
    CHECK(in.read(dest, 4, 10) == 0);  // no room at all: nothing read, not the end
    CHECK(in.read(dest, 0, buffer::npos) == 4);
    CHECK(values_of(dest) == values({4, 5, 6, 7}));
}

TEST_CASE("read at the end returns -1 even with no room, so read loops always end") {
    buffer data = bytes({1});
    buffer_stream in(data, stream_mode::read);
    buffer none;
    CHECK(in.read(none) == 0);
    buffer one(1);
    CHECK(in.read(one) == 1);
    CHECK(in.read(none) == -1);
    CHECK(in.read(one) == -1);
}

TEST_CASE("write: offset past the source throws naming it; length is clamped") {
    buffer dest;
    buffer_stream out(dest, stream_mode::write);
    const buffer from = bytes({1, 2, 3});
    CHECK_OUT_OF_RANGE(out.write(from, 4, 1), "offset");
    CHECK_OUT_OF_RANGE(stream::write(out, from, 4, 0), "offset");
    CHECK(out.write(from, 1, 100) == 2);
    CHECK(values_of(dest) == values({2, 3}));
    CHECK(out.write(from, 3, 1) == 0);
}

TEST_CASE("a stream over a buffer can read into and write from that same buffer") {
    buffer b = bytes({1, 2, 3, 4});
    buffer_stream in(b, stream_mode::read);
    CHECK(in.read(b, 2, 2) == 2);
    CHECK(values_of(b) == values({1, 2, 1, 2}));
    buffer_stream app(b, stream_mode::append);
    CHECK(app.write(b) == 4);
    CHECK(values_of(b) == values({1, 2, 1, 2, 1, 2, 1, 2}));
    buffer_stream out(b, stream_mode::write);
    CHECK(out.write(b, 1, buffer::npos) == 7);  // copies over itself: memmove semantics
    CHECK(values_of(b) == values({2, 1, 2, 1, 2, 1, 2, 2}));
}

TEST_CASE("wrong-mode I/O throws state_error; the functions check the mode too") {
    buffer b(4);
    buffer scratch(4);
    buffer_stream in(b, stream_mode::read);
    buffer_stream out(b, stream_mode::write);
    buffer_stream app(b, stream_mode::append);
    CHECK_THROWS_AS(in.write(scratch), tisock::state_error);
    CHECK_THROWS_AS(out.read(scratch), tisock::state_error);
    CHECK_THROWS_AS(app.read(scratch), tisock::state_error);
    CHECK_THROWS_AS(stream::write(in, scratch), tisock::state_error);
    CHECK_THROWS_AS(stream::read(out, scratch), tisock::state_error);
    CHECK_THROWS_AS(stream::read_all(app), tisock::state_error);
    CHECK_THROWS_AS(stream::pump(out, [](const pump_event<buffer_stream>&) {}, 4), tisock::state_error);
    CHECK_THROWS_AS(stream::write_stream(in, in, 4), tisock::state_error);
    CHECK_THROWS_AS(stream::write_stream(out, out, 4), tisock::state_error);
    CHECK(values_of(b) == values({0, 0, 0, 0}));
}

TEST_CASE("after close(), I/O throws state_error and the stream is neither readable nor writable") {
    buffer b = bytes({1, 2});
    buffer scratch(2);
    buffer_stream in(b, stream_mode::read);
    buffer_stream out(b, stream_mode::append);
    in.close();
    out.close();
    CHECK_FALSE(in.is_open());
    CHECK_FALSE(in.is_readable());
    CHECK_FALSE(out.is_writable());
    CHECK_THROWS_AS(in.read(scratch), tisock::state_error);
    CHECK_THROWS_AS(out.write(scratch), tisock::state_error);
    CHECK_THROWS_AS(stream::read(in, scratch), tisock::state_error);
    CHECK_THROWS_AS(stream::write(out, scratch), tisock::state_error);
    CHECK_NOTHROW(in.close());  // closing twice is harmless
    CHECK(values_of(b) == values({1, 2}));  // the buffer survives its stream
}
