// tisock::buffer against Titanium's ti.buffer.test.js (spec/titanium-notes.md §3.3) and the
// range rules of API.md. Test names starting with "ti:" reproduce a Titanium test vector.
#include "buffer_bytes.hpp"

#include <tisock/buffer.hpp>
#include <tisock/codec.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

using tisock::buffer;
using namespace tisock_test;
namespace codec = tisock::codec;

namespace {
// The fixtures of ti.buffer.test.js: a 20-byte destination and a 5-byte source whose first
// bytes are 100, 101 (the rest are made distinct so that the right bytes are checked).
struct ti_fixture {
    buffer b1{20};
    buffer b5 = bytes({100, 101, 102, 103, 104});
};
}  // namespace

TEST_CASE("ti: createBuffer() is empty; {length: 100} is 100 zero bytes") {
    CHECK(buffer{}.length() == 0);
    const buffer b(100);
    CHECK(b.length() == 100);
    for (std::size_t i = 0; i < b.length(); ++i) CHECK(b[i] == 0);
}

TEST_CASE("ti: index access reads and writes byte values 0..255") {
    buffer b(256);
    for (std::size_t i = 0; i < 256; ++i) b[i] = static_cast<std::uint8_t>(i);
    for (std::size_t i = 0; i < 256; ++i) CHECK(b[i] == i);
}

TEST_CASE("index stores wrap modulo 256 like Ti.Buffer's setter (256 -> 0, -1 -> 255, 300 -> 44)") {
    buffer b(3);
    const int stored[] = {256, -1, 300};
    for (std::size_t i = 0; i < 3; ++i) b[i] = static_cast<std::uint8_t>(stored[i]);
    CHECK(values_of(b) == values({0, 255, 44}));
    b[0] += 255;  // arithmetic through the reference wraps too
    b[0] += 2;
    CHECK(b[0] == 1);
}

TEST_CASE("index out of range throws out_of_range naming the index") {
    buffer b(4);
    const buffer& cb = b;
    CHECK_OUT_OF_RANGE(b[4], "index");
    CHECK_OUT_OF_RANGE((void)cb[4], "index");
    CHECK_OUT_OF_RANGE((void)buffer{}[0], "index");
}

TEST_CASE_FIXTURE(ti_fixture, "ti: append") {
    CHECK_OUT_OF_RANGE(b1.append(b5, 0, 6), "src_length");
    CHECK_OUT_OF_RANGE(b1.append(b5, 5, 1), "src_offset");
    CHECK_OUT_OF_RANGE(b1.append(b5, 3, 5), "src_length");
    CHECK(b1.length() == 20);  // failed appends change nothing

    CHECK(b1.append(b5) == 5);
    CHECK(b1.length() == 25);
    CHECK(b1[20] == 100);
    CHECK(b1[21] == 101);
    CHECK(values_of(b1, 20) == values_of(b5));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: append a slice") {
    CHECK(b1.append(b5, 3, 2) == 2);
    CHECK(b1.length() == 22);
    CHECK(b1[20] == b5[3]);
    CHECK(b1[21] == b5[4]);
}

TEST_CASE("append: src_offset past the end names it; empty slices are fine") {
    buffer b(2);
    const buffer src = bytes({1, 2, 3});
    CHECK_OUT_OF_RANGE(b.append(src, 4), "src_offset");
    CHECK(b.append(src, 3) == 0);  // offset == length: an empty slice, as Java's arraycopy allows
    CHECK(b.append(src, 1, 0) == 0);
    CHECK(b.append(buffer{}) == 0);
    CHECK(b.length() == 2);
}

TEST_CASE("append of a buffer to itself doubles it") {
    buffer b = bytes({1, 2, 3});
    CHECK(b.append(b) == 3);
    CHECK(values_of(b) == values({1, 2, 3, 1, 2, 3}));
    CHECK(b.append(b, 4, 2) == 2);
    CHECK(values_of(b) == values({1, 2, 3, 1, 2, 3, 2, 3}));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: insert") {
    CHECK_OUT_OF_RANGE(b1.insert(b5, 99), "offset");
    CHECK_OUT_OF_RANGE(b1.insert(b5, 0, 0, 99), "src_length");
    CHECK_OUT_OF_RANGE(b1.insert(b5, 0, 4, 2), "src_length");
    CHECK_OUT_OF_RANGE(b1.insert(b5, 0, 6), "src_offset");
    CHECK(b1.length() == 20);

    CHECK(b1.insert(b5, 3) == 5);
    CHECK(b1.length() == 25);
    CHECK(b1[3] == b5[0]);
    CHECK(b1[4] == b5[1]);
    CHECK(values_of(b1, 3, 5) == values_of(b5));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: insert a slice") {
    CHECK(b1.insert(b5, 3, 1, 2) == 2);
    CHECK(b1.length() == 22);
    CHECK(b1[3] == b5[1]);
    CHECK(b1[4] == b5[2]);
}

TEST_CASE("ti: insert, the blog example: [1,3].insert([2], 1) is [1,2,3]") {
    buffer b = bytes({1, 3});
    const buffer two = bytes({2});
    CHECK(b.insert(two, 1) == 1);
    CHECK(b.length() == 3);
    CHECK(values_of(b) == values({1, 2, 3}));
    CHECK(values_of(two) == values({2}));  // the source is unchanged
}

TEST_CASE("insert at the end appends; insert into itself uses the bytes from before") {
    buffer b = bytes({1, 2});
    CHECK(b.insert(bytes({9}), 2) == 1);
    CHECK(values_of(b) == values({1, 2, 9}));
    CHECK(b.insert(b, 1) == 3);
    CHECK(values_of(b) == values({1, 1, 2, 9, 2, 9}));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: copy") {
    CHECK_OUT_OF_RANGE(b1.copy(b5, 25), "offset");
    CHECK_OUT_OF_RANGE(b1.copy(b5, 19, 0, 5), "offset");  // Android throws; iOS would copy 1 byte
    CHECK_OUT_OF_RANGE(b1.copy(b5, 0, 0, 6), "src_length");
    CHECK_OUT_OF_RANGE(b1.copy(b5, 0, 5, 1), "src_offset");
    CHECK_OUT_OF_RANGE(b1.copy(b5, 0, 4, 2), "src_length");
    CHECK_OUT_OF_RANGE(b1.copy(b5, 0, 6), "src_offset");
    CHECK(values_of(b1) == values_of(buffer(20)));  // nothing was written by the failures

    CHECK(b1.copy(b5, 0) == 5);
    CHECK(b1.length() == 20);
    CHECK(values_of(b1, 0, 5) == values_of(b5));
}

TEST_CASE_FIXTURE(ti_fixture, "ti: copy a slice") {
    CHECK(b1.copy(b5, 15, 0, 2) == 2);
    CHECK(b1[15] == b5[0]);
    CHECK(b1[16] == b5[1]);
    CHECK(b1.length() == 20);
}

TEST_CASE("copy never grows, even when the default slice would overflow; overlapping self-copy") {
    buffer small(3);
    CHECK_OUT_OF_RANGE(small.copy(bytes({1, 2, 3, 4}), 0), "src_length");
    CHECK(small.copy(bytes({1, 2, 3, 4}), 0, 1) == 3);
    CHECK(values_of(small) == values({2, 3, 4}));
    CHECK(small.copy(buffer{}, 3) == 0);  // offset == length with nothing to copy

    buffer b = counting(6);
    CHECK(b.copy(b, 1, 0, 5) == 5);  // memmove semantics: overlapping ranges
    CHECK(values_of(b) == values({0, 0, 1, 2, 3, 4}));
    CHECK(b.copy(b, 0, 1) == 5);
    CHECK(values_of(b) == values({0, 1, 2, 3, 4, 4}));
}

TEST_CASE("ti: clone") {
    const buffer b1 = counting(20, 1);
    CHECK_OUT_OF_RANGE(b1.clone(25, 10), "offset");
    CHECK_OUT_OF_RANGE(b1.clone(10, 20), "length");
    CHECK_OUT_OF_RANGE(b1.clone(21), "offset");

    const buffer b2 = b1.clone();
    CHECK(b2.data() != b1.data());
    CHECK(b2.length() == b1.length());
    CHECK(b2.byte_order() == b1.byte_order());
    CHECK(b2.type() == b1.type());
    CHECK(values_of(b2) == values_of(b1));

    const buffer b3 = b1.clone(6, 13);
    CHECK(b3.length() == 13);
    CHECK(b3[0] == b1[6]);
    CHECK(b3[6] == b1[12]);
    CHECK(b3[12] == b1[18]);
    CHECK(b3.byte_order() == b1.byte_order());
    CHECK(b3.type() == b1.type());
    CHECK(b1.clone(20).length() == 0);
}

TEST_CASE("ti: clone keeps the length, byte order, type and value of a number buffer") {
    const buffer b1 = buffer::from_number(305419896, codec::number_type::long_, codec::byte_order::big_endian);
    const buffer b2 = b1.clone();
    CHECK(b2.length() == 8);
    CHECK(b2.byte_order() == codec::byte_order::big_endian);
    CHECK(b2.type() == buffer::encoding{codec::number_type::long_});
    CHECK(codec::decode_integer(b2, codec::number_type::long_, 0, codec::byte_order::big_endian) == 305419896);
}

TEST_CASE("ti: fill") {
    buffer b1(20);
    CHECK_OUT_OF_RANGE(b1.fill(102, 0, 99), "length");
    CHECK_OUT_OF_RANGE(b1.fill(100, 19, 2), "length");
    CHECK_OUT_OF_RANGE(b1.fill(100, 21), "offset");
    CHECK(values_of(b1) == values_of(buffer(20)));

    b1.fill(100);
    for (std::size_t i = 0; i < 20; ++i) CHECK(b1[i] == 100);

    buffer b2(20);
    b2.fill(101, 5, 10);
    for (std::size_t i = 0; i < 20; ++i) CHECK(b2[i] == (i >= 5 && i < 15 ? 101 : 0));
    b2.fill(7, 15);  // from an offset to the end
    CHECK(b2[14] == 101);
    CHECK(b2[15] == 7);
    CHECK(b2[19] == 7);
}

TEST_CASE("ti: clear zeroes the bytes and keeps the length") {
    buffer b(100);
    b.fill(99);
    b.clear();
    CHECK(b.length() == 100);
    for (std::size_t i = 0; i < 100; ++i) CHECK(b[i] == 0);
}

TEST_CASE("ti: release leaves length 0") {
    buffer b(100);
    b.release();
    CHECK(b.length() == 0);
    CHECK(b.span().empty());
    b.set_length(2);  // still usable afterwards
    CHECK(values_of(b) == values({0, 0}));
}

TEST_CASE("set_length zero-extends and truncates") {
    buffer b = bytes({1, 2, 3});
    b.set_length(5);
    CHECK(values_of(b) == values({1, 2, 3, 0, 0}));
    b.set_length(2);
    CHECK(values_of(b) == values({1, 2}));
    b.set_length(4);  // bytes once truncated do not come back
    CHECK(values_of(b) == values({1, 2, 0, 0}));
    b.set_length(0);
    CHECK(b.length() == 0);
}

TEST_CASE("ti: toString gives the bytes as they are") {
    const buffer b = bytes({97, 112, 112, 99, 101, 108, 101, 114, 97, 116, 111, 114});
    CHECK(b.to_string() == "appcelerator");
    buffer padded = buffer::from_string("ab", codec::charset::utf8, 4);
    CHECK(padded.to_string() == std::string("ab\0\0", 4));  // Android keeps trailing NULs
}

TEST_CASE("ti: a string value defaults to UTF-8") {
    const buffer b = buffer::from_string("appcelerator");
    CHECK(b.length() == 12);
    CHECK(values_of(b) == values({97, 112, 112, 99, 101, 108, 101, 114, 97, 116, 111, 114}));
    CHECK(b.type() == buffer::encoding{codec::charset::utf8});
    CHECK(b.byte_order() == codec::native_byte_order());
}

TEST_CASE("ti: a string value in UTF-16 is 26 bytes: FE FF then big-endian units") {
    const buffer b = buffer::from_string("appcelerator", codec::charset::utf16);
    REQUIRE(b.length() == 26);
    CHECK(b[0] == 0xFE);
    CHECK(b[1] == 0xFF);
    CHECK(b.byte_order() == codec::native_byte_order());
    const std::string text = "appcelerator";
    for (std::size_t i = 0; i < text.size(); ++i) {
        CHECK(b[2 + 2 * i] == 0);
        CHECK(b[3 + 2 * i] == static_cast<unsigned char>(text[i]));
    }
}

TEST_CASE("ti: byteOrder of number buffers") {
    const int value = 305419896;  // 0x12345678
    const buffer long_be = buffer::from_number(value, codec::number_type::long_, codec::byte_order::big_endian);
    CHECK(long_be.byte_order() == codec::byte_order::big_endian);
    CHECK(long_be.length() == 8);
    CHECK(values_of(long_be) == values({0, 0, 0, 0, 18, 52, 86, 120}));

    const buffer long_le = buffer::from_number(value, codec::number_type::long_, codec::byte_order::little_endian);
    CHECK(long_le.byte_order() == codec::byte_order::little_endian);
    CHECK(values_of(long_le) == values({120, 86, 52, 18, 0, 0, 0, 0}));

    const buffer int_le = buffer::from_number(value, codec::number_type::int_, codec::byte_order::little_endian);
    CHECK(int_le.length() == 4);
    CHECK(values_of(int_le) == values({120, 86, 52, 18}));

    const buffer int_be = buffer::from_number(value, codec::number_type::int_, codec::byte_order::big_endian);
    CHECK(values_of(int_be) == values({18, 52, 86, 120}));
    CHECK(int_be.type() == buffer::encoding{codec::number_type::int_});
}

TEST_CASE("from_number: width per type, padding to length, length too small") {
    CHECK(buffer::from_number(1, codec::number_type::byte).length() == 1);
    CHECK(buffer::from_number(1, codec::number_type::short_).length() == 2);
    CHECK(buffer::from_number(1, codec::number_type::float_).length() == 4);
    CHECK(buffer::from_number(1, codec::number_type::double_).length() == 8);
    const buffer padded = buffer::from_number(0x0102, codec::number_type::short_, codec::byte_order::big_endian, 5);
    CHECK(values_of(padded) == values({1, 2, 0, 0, 0}));
    CHECK_OUT_OF_RANGE(buffer::from_number(1, codec::number_type::int_, codec::byte_order::big_endian, 3), "length");
    CHECK_THROWS_AS(buffer::from_number(1, static_cast<codec::number_type>(42)), std::invalid_argument);
    CHECK_THROWS_AS(buffer::from_number(1, codec::number_type::int_, static_cast<codec::byte_order>(7)),
                    std::invalid_argument);
}

TEST_CASE("from_string: {value, length} pads with zeros; text longer than length throws") {
    const buffer b = buffer::from_string("The system is down", codec::charset::utf8, 100);
    CHECK(b.length() == 100);
    CHECK(b.to_string().substr(0, 18) == "The system is down");
    for (std::size_t i = 18; i < 100; ++i) CHECK(b[i] == 0);
    CHECK_OUT_OF_RANGE(buffer::from_string("too long", codec::charset::utf8, 3), "length");
    CHECK(buffer::from_string("").length() == 0);
    CHECK(buffer::from_string("", codec::charset::utf16).length() == 0);  // Java: no BOM for no text
}

TEST_CASE("from_string: text the charset cannot hold throws invalid_argument") {
    CHECK_THROWS_AS(buffer::from_string("\xC3", codec::charset::utf8), std::invalid_argument);
    CHECK_THROWS_AS(buffer::from_string("\xC3\xA9", codec::charset::ascii), std::invalid_argument);
    CHECK_THROWS_AS(buffer::from_string("\xE2\x82\xAC", codec::charset::latin1), std::invalid_argument);
    CHECK_THROWS_AS(buffer::from_string("x", static_cast<codec::charset>(99)), std::invalid_argument);
}

TEST_CASE("a buffer is a value: copies are deep, moves leave an empty buffer") {
    buffer a = bytes({1, 2, 3});
    buffer b = a;
    b[0] = 9;
    CHECK(a[0] == 1);
    a = b;
    CHECK(a[0] == 9);
    b[0] = 5;
    CHECK(a[0] == 9);
    buffer c = std::move(a);
    CHECK(values_of(c) == values({9, 2, 3}));
    a = bytes({4});  // a moved-from buffer can be assigned again
    CHECK(values_of(a) == values({4}));
}

TEST_CASE("data() and span() expose the bytes in place, ready for socket I/O") {
    buffer b(4);
    CHECK(b.span().data() == b.data());
    CHECK(b.span().size() == 4);
    b.span()[2] = std::byte{0x7F};
    CHECK(b[2] == 0x7F);
    const buffer& cb = b;
    CHECK(cb.span().data() == cb.data());
    CHECK(std::to_integer<int>(cb.data()[2]) == 0x7F);
}

TEST_CASE("type() is empty for buffers made by length, and set by from_string/from_number") {
    CHECK(std::holds_alternative<std::monostate>(buffer(4).type()));
    CHECK(buffer::from_string("x", codec::charset::latin1).type() == buffer::encoding{codec::charset::latin1});
    CHECK(buffer::from_number(1.0, codec::number_type::double_).type() ==
          buffer::encoding{codec::number_type::double_});
    CHECK(buffer(4).byte_order() == codec::native_byte_order());
}
