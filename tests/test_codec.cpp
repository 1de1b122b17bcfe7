// tisock::codec against Titanium's ti.codec.test.js and Codec.yml examples
// (spec/titanium-notes.md §1.6, §3.4), plus range errors, charsets and invalid text.
// Test names starting with "ti:" reproduce a Titanium test vector.
#include "buffer_bytes.hpp"

#include <tisock/buffer.hpp>
#include <tisock/codec.hpp>

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

using tisock::buffer;
using namespace tisock_test;
namespace codec = tisock::codec;
using codec::byte_order;
using codec::charset;
using codec::number_type;

namespace {
constexpr byte_order be = byte_order::big_endian;
constexpr byte_order le = byte_order::little_endian;
constexpr charset all_charsets[] = {charset::utf8,    charset::utf16, charset::utf16be,
                                    charset::utf16le, charset::ascii, charset::latin1};
// "Wer reitet so spät durch Nacht und Wind?" - 40 characters, one of them non-ASCII.
constexpr std::string_view erlkoenig = "Wer reitet so sp\xC3\xA4t durch Nacht und Wind?";
constexpr std::string_view spaet = "sp\xC3\xA4t";
}  // namespace

TEST_CASE("ti: native byte order is the host's") {
    const byte_order native = codec::native_byte_order();
    CHECK((native == be || native == le));
    CHECK((native == be) == (std::endian::native == std::endian::big));
}

// ---- decodeNumber -------------------------------------------------------------------------

TEST_CASE("ti: decodeNumber of integers") {
    const buffer b = bytes({154, 120, 86, 52, 18, 0, 0, 0});
    CHECK(codec::decode_number(b, number_type::long_, 0, le) == 78187493530.0);
    CHECK(codec::decode_integer(b, number_type::long_, 0, le) == 78187493530);
    CHECK(codec::decode_number(b, number_type::int_, 1, be) == 2018915346.0);
    CHECK(codec::decode_integer(b, number_type::int_, 1, be) == 2018915346);
    CHECK(codec::decode_number(b, number_type::short_, 0, le) == 30874.0);
    CHECK(codec::decode_integer(b, number_type::short_, 0, le) == 30874);
}

TEST_CASE("ti: decodeNumber of doubles and floats") {
    buffer b = bytes({63, 213, 85, 85, 85, 85, 85, 85});
    CHECK(codec::decode_number(b, number_type::double_, 0, be) == 1.0 / 3.0);
    b.clear();
    b.set_length(8);
    const buffer digits = bytes({63, 243, 192, 202, 66, 131, 222, 27});
    b.copy(digits, 0);
    CHECK(codec::decode_number(b, number_type::double_, 0, be) == 1.23456789);
    const buffer f = bytes({25, 4, 158, 63});
    const double v = codec::decode_number(f, number_type::float_, 0, le);
    CHECK(std::round(v * 10000) / 10000 == doctest::Approx(1.2345));  // Titanium: toFixed(4)
    CHECK(v == static_cast<double>(1.2345f));
}

TEST_CASE("decode: integers are signed, as Java's byte/short/int/long") {
    CHECK(codec::decode_integer(bytes({0xFF}), number_type::byte) == -1);
    CHECK(codec::decode_integer(bytes({0x80, 0x00}), number_type::short_, 0, be) == -32768);
    CHECK(codec::decode_integer(bytes({0xFF, 0xFF, 0xFF, 0x7F}), number_type::int_, 0, le) == 0x7FFFFFFF);
    CHECK(codec::decode_integer(bytes({0xFF, 0xFF, 0xFF, 0xFF}), number_type::int_, 0, le) == -1);
    CHECK(codec::decode_number(bytes({0x80}), number_type::byte) == -128.0);
}

TEST_CASE("decode_integer is exact for long where a double is not") {
    const buffer max = bytes({0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF});
    CHECK(codec::decode_integer(max, number_type::long_, 0, be) == std::numeric_limits<std::int64_t>::max());
    const buffer odd = buffer::from_number(std::int64_t{(1LL << 53) + 1}, number_type::long_, be);
    CHECK(codec::decode_integer(odd, number_type::long_, 0, be) == (1LL << 53) + 1);
    CHECK(codec::decode_number(odd, number_type::long_, 0, be) == static_cast<double>(1LL << 53));
    const buffer min = buffer::from_number(std::numeric_limits<std::int64_t>::min(), number_type::long_, le);
    CHECK(codec::decode_integer(min, number_type::long_, 0, le) == std::numeric_limits<std::int64_t>::min());
}

TEST_CASE("decode_integer refuses float and double") {
    const buffer b(8);
    CHECK_THROWS_AS(codec::decode_integer(b, number_type::float_), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_integer(b, number_type::double_), std::invalid_argument);
}

TEST_CASE("decode: position range errors name the position") {
    const buffer b(8);
    for (number_type t : {number_type::byte, number_type::short_, number_type::int_, number_type::float_,
                          number_type::long_, number_type::double_}) {
        CAPTURE(static_cast<int>(t));
        CHECK_OUT_OF_RANGE(codec::decode_number(b, t, 9), "position");
        CHECK_OUT_OF_RANGE(codec::decode_number(b, t, 8), "position");  // past the last byte
        CHECK_OUT_OF_RANGE(codec::decode_number(b, t, buffer::npos), "position");
        if (t != number_type::float_ && t != number_type::double_)
            CHECK_OUT_OF_RANGE(codec::decode_integer(b, t, 8), "position");
    }
    CHECK_OUT_OF_RANGE(codec::decode_number(b, number_type::int_, 5), "position");  // 5 + 4 > 8
    CHECK(codec::decode_number(b, number_type::int_, 4) == 0.0);                     // 4 + 4 fits exactly
    CHECK_OUT_OF_RANGE(codec::decode_number(buffer{}, number_type::byte), "position");
    CHECK_THROWS_AS(codec::decode_number(b, static_cast<number_type>(-1)), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_number(b, number_type::int_, 0, static_cast<byte_order>(3)),
                    std::invalid_argument);
}

// ---- encodeNumber -------------------------------------------------------------------------

TEST_CASE("ti: encodeNumber of a long in both byte orders") {
    const std::int64_t value = 78187493530;  // 0x123456789A
    buffer b(8);
    CHECK(codec::encode_number(b, value, number_type::long_, 0, be) == 8);
    CHECK(values_of(b) == values({0, 0, 0, 18, 52, 86, 120, 154}));
    CHECK(codec::encode_number(b, value, number_type::long_, 0, le) == 8);
    CHECK(values_of(b) == values({154, 120, 86, 52, 18, 0, 0, 0}));
    // A JavaScript number is a double: the same bytes come from one.
    CHECK(codec::encode_number(b, 78187493530.0, number_type::long_, 0, be) == 8);
    CHECK(values_of(b) == values({0, 0, 0, 18, 52, 86, 120, 154}));
}

TEST_CASE("ti: encodeNumber at a position returns the position after it") {
    buffer b(10);
    CHECK(codec::encode_number(b, std::int64_t{78187493530}, number_type::long_, 2, be) == 10);
    CHECK(values_of(b) == values({0, 0, 0, 0, 0, 18, 52, 86, 120, 154}));
}

TEST_CASE("ti: integer encodes keep the low bits") {
    buffer b(4);
    CHECK(codec::encode_number(b, std::int64_t{78187493530}, number_type::int_, 0, be) == 4);
    CHECK(values_of(b) == values({52, 86, 120, 154}));
    buffer s(2);
    CHECK(codec::encode_number(s, 214375, number_type::short_, 0, be) == 2);  // 0x34567
    CHECK(values_of(s) == values({69, 103}));                                // 0x4567
    buffer one(2);
    CHECK(codec::encode_number(one, 63, number_type::byte, 1) == 2);
    CHECK(one[1] == 63);
}

TEST_CASE("ti: encodeNumber of doubles and floats") {
    buffer d(8);
    CHECK(codec::encode_number(d, 1.0 / 3.0, number_type::double_, 0, be) == 8);
    CHECK(values_of(d) == values({63, 213, 85, 85, 85, 85, 85, 85}));
    const buffer v = buffer::from_number(1.23456789, number_type::double_, be);
    CHECK(values_of(v) == values({63, 243, 192, 202, 66, 131, 222, 27}));
    buffer f(4);
    CHECK(codec::encode_number(f, 1.2345, number_type::float_, 0, be) == 4);
    CHECK(values_of(f) == values({63, 158, 4, 25}));
}

TEST_CASE("ti: Codec.yml byte order example 0xFEDCBA98") {
    buffer b(4);
    codec::encode_number(b, 0xFEDCBA98u, number_type::int_, 0, be);
    CHECK(values_of(b) == values({0xFE, 0xDC, 0xBA, 0x98}));
    codec::encode_number(b, 0xFEDCBA98u, number_type::int_, 0, le);
    CHECK(values_of(b) == values({0x98, 0xBA, 0xDC, 0xFE}));
}

TEST_CASE("encode: two's complement truncation of any integer type") {
    buffer b(8);
    codec::encode_number(b, 300, number_type::byte);
    CHECK(b[0] == 44);
    codec::encode_number(b, -1, number_type::short_, 0, be);
    CHECK(values_of(b, 0, 2) == values({0xFF, 0xFF}));
    codec::encode_number(b, std::numeric_limits<unsigned long long>::max(), number_type::long_, 0, be);
    CHECK(values_of(b) == values({255, 255, 255, 255, 255, 255, 255, 255}));
    codec::encode_number(b, -2, number_type::int_, 0, le);
    CHECK(values_of(b, 0, 4) == values({0xFE, 0xFF, 0xFF, 0xFF}));
    codec::encode_number(b, true, number_type::byte);
    CHECK(b[0] == 1);
    codec::encode_number(b, 'A', number_type::byte);
    CHECK(b[0] == 65);
}

TEST_CASE("encode: floating values into integer types convert like Java's (long) cast") {
    buffer b(8);
    const auto as_long = [&](double v) {
        codec::encode_number(b, v, number_type::long_, 0, be);
        return codec::decode_integer(b, number_type::long_, 0, be);
    };
    CHECK(as_long(1.9) == 1);
    CHECK(as_long(-1.9) == -1);
    CHECK(as_long(std::nan("")) == 0);
    CHECK(as_long(1e30) == std::numeric_limits<std::int64_t>::max());
    CHECK(as_long(-1e30) == std::numeric_limits<std::int64_t>::min());
    CHECK(as_long(std::numeric_limits<double>::infinity()) == std::numeric_limits<std::int64_t>::max());
    codec::encode_number(b, 257.5f, number_type::byte);
    CHECK(b[0] == 1);
}

TEST_CASE("encode: integers into float and double round trip through IEEE 754") {
    buffer b(8);
    codec::encode_number(b, 3, number_type::double_, 0, le);
    CHECK(codec::decode_number(b, number_type::double_, 0, le) == 3.0);
    codec::encode_number(b, -7, number_type::float_, 4, be);
    CHECK(codec::decode_number(b, number_type::float_, 4, be) == -7.0);
    codec::encode_number(b, 1e300, number_type::float_, 0, be);  // too large for a float: infinity
    CHECK(std::isinf(codec::decode_number(b, number_type::float_, 0, be)));
    codec::encode_number(b, std::nan(""), number_type::double_, 0, be);
    CHECK(std::isnan(codec::decode_number(b, number_type::double_, 0, be)));
}

TEST_CASE("encode: every type and order round trips") {
    buffer b(16);
    for (byte_order order : {be, le}) {
        CAPTURE(static_cast<int>(order));
        CHECK(codec::encode_number(b, -100, number_type::byte, 3, order) == 4);
        CHECK(codec::decode_integer(b, number_type::byte, 3, order) == -100);
        CHECK(codec::encode_number(b, -12345, number_type::short_, 3, order) == 5);
        CHECK(codec::decode_integer(b, number_type::short_, 3, order) == -12345);
        CHECK(codec::encode_number(b, -123456789, number_type::int_, 3, order) == 7);
        CHECK(codec::decode_integer(b, number_type::int_, 3, order) == -123456789);
        CHECK(codec::encode_number(b, std::int64_t{-1234567890123}, number_type::long_, 3, order) == 11);
        CHECK(codec::decode_integer(b, number_type::long_, 3, order) == -1234567890123);
        CHECK(codec::encode_number(b, 0.5f, number_type::float_, 3, order) == 7);
        CHECK(codec::decode_number(b, number_type::float_, 3, order) == 0.5);
        CHECK(codec::encode_number(b, -2.25, number_type::double_, 3, order) == 11);
        CHECK(codec::decode_number(b, number_type::double_, 3, order) == -2.25);
    }
}

TEST_CASE("encode: position range errors name the position; nothing is written") {
    buffer b(8);
    CHECK_OUT_OF_RANGE(codec::encode_number(b, 1, number_type::int_, 9), "position");
    CHECK_OUT_OF_RANGE(codec::encode_number(b, 1, number_type::int_, 5), "position");
    CHECK_OUT_OF_RANGE(codec::encode_number(b, 1, number_type::double_, 1), "position");
    CHECK_OUT_OF_RANGE(codec::encode_number(b, 1, number_type::byte, 8), "position");
    CHECK_OUT_OF_RANGE(codec::encode_number(b, 1, number_type::byte, buffer::npos), "position");
    buffer empty;
    CHECK_OUT_OF_RANGE(codec::encode_number(empty, 1, number_type::byte), "position");
    CHECK(values_of(b) == values_of(buffer(8)));
    CHECK_THROWS_AS(codec::encode_number(b, 1, static_cast<number_type>(6)), std::invalid_argument);
    CHECK_THROWS_AS(codec::encode_number(b, 1, number_type::int_, 0, static_cast<byte_order>(2)),
                    std::invalid_argument);
}

// ---- decodeString / encodeString ----------------------------------------------------------

TEST_CASE("ti: decodeString UTF-8") {
    CHECK(codec::decode_string(bytes({115, 112, 195, 164, 116}), charset::utf8) == spaet);
    CHECK(codec::decode_string(bytes({115, 112, 195, 164, 116})) == spaet);  // the default charset
}

TEST_CASE("ti: decodeString UTF-16 honours either byte-order mark") {
    CHECK(codec::decode_string(bytes({255, 254, 115, 0, 112, 0, 228, 0, 116, 0}), charset::utf16) == spaet);
    CHECK(codec::decode_string(bytes({254, 255, 0, 115, 0, 112, 0, 228, 0, 116}), charset::utf16) == spaet);
    // Without a mark, Java's "UTF-16" reads big-endian.
    CHECK(codec::decode_string(bytes({0, 115, 0, 112, 0, 228, 0, 116}), charset::utf16) == spaet);
}

TEST_CASE("ti: decodeString with a length stops there") {
    const buffer b = buffer::from_string("The system is down", charset::utf8, 100);
    CHECK(b.length() == 100);
    CHECK(codec::decode_string(b, charset::utf8, 0, 18) == "The system is down");
    // The whole buffer decodes too, zeros included (nothing is trimmed).
    CHECK(codec::decode_string(b) == std::string("The system is down") + std::string(82, '\0'));
}

TEST_CASE("ti: encodeString UTF-8 returns the position after the text") {
    buffer b(1024);
    CHECK(codec::encode_string(b, erlkoenig) == 41);
    const std::size_t a_umlaut = erlkoenig.find('\xC3');
    CHECK(b[a_umlaut] == 195);
    CHECK(b[a_umlaut + 1] == 164);
    b.set_length(41);  // Codec.yml's idiom: trim to the returned length
    CHECK(codec::decode_string(b) == erlkoenig);
}

TEST_CASE("ti: encodeString UTF-16 includes the byte-order mark and round trips") {
    buffer b(1024);
    CHECK(codec::encode_string(b, erlkoenig, charset::utf16) == 2 * 40 + 2);
    b.set_length(82);
    CHECK(b[0] == 0xFE);
    CHECK(b[1] == 0xFF);
    CHECK(codec::decode_string(b, charset::utf16) == erlkoenig);
}

TEST_CASE("ti: Codec.yml: \"Ti\" in UTF-16BE and UTF-16LE") {
    CHECK(values_of(buffer::from_string("Ti", charset::utf16be)) == values({0x00, 0x54, 0x00, 0x69}));
    CHECK(values_of(buffer::from_string("Ti", charset::utf16le)) == values({0x54, 0x00, 0x69, 0x00}));
}

TEST_CASE("encode_string at a dest_position; range errors; nothing written when it does not fit") {
    buffer b(6);
    CHECK(codec::encode_string(b, "ab", charset::utf8, 4) == 6);
    CHECK(values_of(b) == values({0, 0, 0, 0, 'a', 'b'}));
    CHECK(codec::encode_string(b, "", charset::utf8, 6) == 6);  // empty text at the very end
    CHECK_OUT_OF_RANGE(codec::encode_string(b, "x", charset::utf8, 7), "dest_position");
    CHECK_OUT_OF_RANGE(codec::encode_string(b, "xyz", charset::utf8, 4), "dest_position");
    CHECK_OUT_OF_RANGE(codec::encode_string(b, "abcdefg"), "dest");
    CHECK_OUT_OF_RANGE(codec::encode_string(b, "abc", charset::utf16, 0), "dest");  // 8 bytes > 6
    CHECK(values_of(b) == values({0, 0, 0, 0, 'a', 'b'}));
    // Invalid text is reported as such even when it would not fit either.
    CHECK_THROWS_AS(codec::encode_string(b, "\xFF"), std::invalid_argument);
    CHECK_THROWS_AS(codec::encode_string(b, "ok", static_cast<charset>(42)), std::invalid_argument);
}

TEST_CASE("decode_string range errors name position and length") {
    const buffer b = bytes({'a', 'b', 'c'});
    CHECK_OUT_OF_RANGE(codec::decode_string(b, charset::utf8, 4), "position");
    CHECK_OUT_OF_RANGE(codec::decode_string(b, charset::utf8, 1, 3), "length");
    CHECK_OUT_OF_RANGE(codec::decode_string(b, charset::utf8, 0, 4), "length");
    CHECK(codec::decode_string(b, charset::utf8, 3).empty());
    CHECK(codec::decode_string(b, charset::utf8, 1, 1) == "b");
    CHECK(codec::decode_string(b, charset::latin1, 1) == "bc");
    CHECK_THROWS_AS(codec::decode_string(b, static_cast<charset>(6)), std::invalid_argument);
}

// ---- charsets -----------------------------------------------------------------------------

TEST_CASE("round trips through every charset that can hold the text") {
    const std::string_view ascii_text = "Hello, world! ~\x7F\x01";
    const std::string_view latin_text = "gr\xC3\xBC\xC3\x9F Gott \xC3\xBF\xC2\xA0";  // ü ß ÿ nbsp
    const std::string_view bmp_text = "\xE2\x82\xAC \xE4\xB8\xAD\xE6\x96\x87 \xEF\xBF\xBD";  // € 中文 U+FFFD
    const std::string_view astral = "\xF0\x9D\x84\x9E clef, \xF0\x9F\x98\x80 smile, \xF4\x8F\xBF\xBF max";
    for (charset cs : all_charsets) {
        CAPTURE(static_cast<int>(cs));
        for (std::string_view text : {ascii_text, latin_text, bmp_text, astral, std::string_view{}}) {
            CAPTURE(text);
            const bool fits = cs == charset::ascii    ? text == ascii_text || text.empty()
                              : cs == charset::latin1 ? text == ascii_text || text == latin_text || text.empty()
                                                      : true;
            if (!fits) {
                CHECK_THROWS_AS(buffer::from_string(text, cs), std::invalid_argument);
                continue;
            }
            const buffer b = buffer::from_string(text, cs);
            CHECK(codec::decode_string(b, cs) == text);
        }
    }
}

TEST_CASE("non-BMP characters become UTF-16 surrogate pairs") {
    const std::string_view clef = "\xF0\x9D\x84\x9E";  // U+1D11E
    CHECK(values_of(buffer::from_string(clef, charset::utf16be)) == values({0xD8, 0x34, 0xDD, 0x1E}));
    CHECK(values_of(buffer::from_string(clef, charset::utf16le)) == values({0x34, 0xD8, 0x1E, 0xDD}));
    CHECK(values_of(buffer::from_string(clef, charset::utf16)) == values({0xFE, 0xFF, 0xD8, 0x34, 0xDD, 0x1E}));
    CHECK(codec::decode_string(bytes({0x34, 0xD8, 0x1E, 0xDD}), charset::utf16le) == clef);
    CHECK(codec::decode_string(bytes({0xDB, 0xFF, 0xDF, 0xFF}), charset::utf16be) == "\xF4\x8F\xBF\xBF");
}

TEST_CASE("latin1 maps every byte to the code point of the same value and back") {
    buffer all(256);
    for (std::size_t i = 0; i < 256; ++i) all[i] = static_cast<std::uint8_t>(i);
    const std::string text = codec::decode_string(all, charset::latin1);
    CHECK(text.size() == 128 + 2 * 128);
    CHECK(values_of(buffer::from_string(text, charset::latin1)) == values_of(all));
    CHECK(values_of(buffer::from_string("\xC3\xA9", charset::latin1)) == values({0xE9}));
}

TEST_CASE("utf16be and utf16le keep a leading U+FEFF as a character; utf16 drops it") {
    CHECK(codec::decode_string(bytes({0xFE, 0xFF, 0, 'A'}), charset::utf16be) == "\xEF\xBB\xBF" "A");
    CHECK(codec::decode_string(bytes({0xFF, 0xFE, 'A', 0}), charset::utf16le) == "\xEF\xBB\xBF" "A");
    CHECK(codec::decode_string(bytes({0xFE, 0xFF}), charset::utf16).empty());
}

TEST_CASE("invalid UTF-8 is refused, encoding and decoding") {
    const std::string_view bad[] = {
        "\x80",                  // stray continuation byte
        "\xC3",                  // truncated two-byte sequence
        "\xE2\x82",              // truncated three-byte sequence
        "\xC0\x80",              // overlong NUL
        "\xC1\xBF",              // overlong 0x7F
        "\xE0\x80\xAF",          // overlong '/'
        "\xF0\x80\x80\xAF",      // overlong '/'
        "\xED\xA0\x80",          // U+D800 (surrogate) encoded in UTF-8
        "\xED\xBF\xBF",          // U+DFFF
        "\xF4\x90\x80\x80",      // U+110000
        "\xF5\x80\x80\x80",      // lead byte beyond U+10FFFF
        "\xFF",                  // never valid
        "ok\xC3(",               // bad continuation in the middle
    };
    for (std::string_view text : bad) {
        CAPTURE(text);
        for (charset cs : all_charsets) CHECK_THROWS_AS(buffer::from_string(text, cs), std::invalid_argument);
        buffer bytes_of_text(text.size());
        for (std::size_t i = 0; i < text.size(); ++i) bytes_of_text[i] = static_cast<std::uint8_t>(text[i]);
        CHECK_THROWS_AS(codec::decode_string(bytes_of_text, charset::utf8), std::invalid_argument);
    }
}

TEST_CASE("invalid UTF-16 is refused: unpaired surrogates and odd lengths") {
    CHECK_THROWS_AS(codec::decode_string(bytes({0xD8, 0x00}), charset::utf16be), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0xDC, 0x00, 0, 'A'}), charset::utf16be), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0xD8, 0x00, 0, 'A'}), charset::utf16be), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0xD8, 0x00, 0xD8, 0x00}), charset::utf16be), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0x00, 0xD8}), charset::utf16le), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0xFF, 0xFE, 0x00, 0xDC}), charset::utf16), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0, 'A', 0}), charset::utf16be), std::invalid_argument);
    CHECK_THROWS_AS(codec::decode_string(bytes({0xFE, 0xFF, 0}), charset::utf16), std::invalid_argument);
}

TEST_CASE("characters a charset cannot hold are refused") {
    CHECK_THROWS_AS(buffer::from_string("caf\xC3\xA9", charset::ascii), std::invalid_argument);
    CHECK_THROWS_AS(buffer::from_string("\xE2\x82\xAC", charset::latin1), std::invalid_argument);  // U+20AC
    CHECK_THROWS_AS(buffer::from_string("\xC4\x80", charset::latin1), std::invalid_argument);      // U+0100
    CHECK_THROWS_AS(codec::decode_string(bytes({'o', 'k', 0x80}), charset::ascii), std::invalid_argument);
    CHECK(codec::decode_string(bytes({'o', 'k', 0x7F}), charset::ascii) == "ok\x7F");
}

TEST_CASE("charset_from_name: Titanium's names, common aliases, any case") {
    CHECK(codec::charset_from_name("utf8") == charset::utf8);
    CHECK(codec::charset_from_name("UTF-8") == charset::utf8);
    CHECK(codec::charset_from_name("utf16") == charset::utf16);
    CHECK(codec::charset_from_name("utf-16") == charset::utf16);
    CHECK(codec::charset_from_name("utf16be") == charset::utf16be);
    CHECK(codec::charset_from_name("UTF-16BE") == charset::utf16be);
    CHECK(codec::charset_from_name("utf16le") == charset::utf16le);
    CHECK(codec::charset_from_name("utf-16le") == charset::utf16le);
    CHECK(codec::charset_from_name("ascii") == charset::ascii);
    CHECK(codec::charset_from_name("US-ASCII") == charset::ascii);
    CHECK(codec::charset_from_name("latin1") == charset::latin1);          // ti.codec.test.js
    CHECK(codec::charset_from_name("iso-latin-1") == charset::latin1);     // Codec.yml
    CHECK(codec::charset_from_name("ISO-8859-1") == charset::latin1);
    for (std::string_view bad : {"", "utf", "utf-32", "latin-1x", "utf8 ", "ebcdic"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(codec::charset_from_name(bad), std::invalid_argument);
    }
}
