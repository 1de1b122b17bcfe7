// tisock::codec - Titanium's Ti.Codec: numbers and text in and out of a tisock::buffer.
//
// Semantics follow spec/titanium-notes.md §1.6 and §3.4: encoders write at a position and
// return the position after the last byte written; they never grow the destination (a value
// that does not fit throws std::out_of_range naming the argument). Integers keep the low bits
// of the value (two's complement) and decode as signed. Text is UTF-8 on the C++ side;
// anything that is not valid text in the charset at hand throws std::invalid_argument.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <tisock/buffer.hpp>
#include <tisock/detail/codec_core.hpp>
#include <tisock/detail/range.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace tisock::detail {
// Validates that a `type` number fits at `position` in something `size` bytes long and
// returns its width.
inline std::size_t checked_number_slot(const char* where, const char* of, std::size_t size, std::size_t position,
                                       codec::number_type type) {
    const std::size_t width = number_width(type);
    check_offset(where, "position", position, of, size);
    if (width > size - position)
        throw std::out_of_range(std::string(where) + ": position (" + std::to_string(position) + ") + " +
                                std::to_string(width) + " bytes of the number exceeds the length of " + of + " (" +
                                std::to_string(size) + ")");
    return width;
}

inline std::uint64_t number_bits_at(const buffer& source, codec::number_type type, std::size_t position,
                                    codec::byte_order order, const char* where) {
    check_byte_order(order);
    const std::size_t width = checked_number_slot(where, "source", source.length(), position, type);
    return load_bits(source.span().subspan(position, width), order);
}

}  // namespace tisock::detail

namespace tisock::codec {

// Encodes `value` as `type` at `position`; returns position + the type's width.
template <class T>
    requires std::is_arithmetic_v<T>
std::size_t encode_number(buffer& dest, T value, number_type type, std::size_t position = 0,
                          byte_order order = native_byte_order()) {
    const std::size_t width = detail::checked_number_slot("codec::encode_number", "dest", dest.length(), position, type);
    detail::encode_number_bytes(dest.span().subspan(position, width), value, type, order);
    return position + width;
}

// The number of `type` at `position`. A long beyond ±2^53 loses precision in a double, as it
// does in JavaScript; decode_integer is exact.
inline double decode_number(const buffer& source, number_type type, std::size_t position = 0,
                            byte_order order = native_byte_order()) {
    const std::uint64_t bits = detail::number_bits_at(source, type, position, order, "codec::decode_number");
    switch (type) {
        case number_type::float_: return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(bits)));
        case number_type::double_: return std::bit_cast<double>(bits);
        default: return static_cast<double>(detail::sign_extend(bits, detail::number_width(type)));
    }
}

// The signed integer of integer type `type` at `position`. Float and double are refused with
// std::invalid_argument: there is no exact integer to return.
inline std::int64_t decode_integer(const buffer& source, number_type type, std::size_t position = 0,
                                   byte_order order = native_byte_order()) {
    if (detail::is_floating(type))
        throw std::invalid_argument("codec::decode_integer: type must be an integer type; use decode_number");
    const std::uint64_t bits = detail::number_bits_at(source, type, position, order, "codec::decode_integer");
    return detail::sign_extend(bits, detail::number_width(type));
}

// Encodes UTF-8 text in charset `cs` at `dest_position`; returns the position after it.
// Nothing is written unless all of it fits.
inline std::size_t encode_string(buffer& dest, std::string_view utf8_text, charset cs = charset::utf8,
                                 std::size_t dest_position = 0) {
    detail::check_offset("codec::encode_string", "dest_position", dest_position, "dest", dest.length());
    const std::size_t n = detail::encoded_length(utf8_text, cs);
    if (n > dest.length() - dest_position)
        throw std::out_of_range("codec::encode_string: dest_position (" + std::to_string(dest_position) + ") + " +
                                std::to_string(n) + " encoded bytes exceeds the length of dest (" +
                                std::to_string(dest.length()) + ")");
    detail::encode_text(dest.span().subspan(dest_position, n), utf8_text, cs);
    return dest_position + n;
}

// Decodes source[position, position + length) in charset `cs` to UTF-8 (npos: to the end).
// Zero bytes are characters like any other: they are not trimmed.
inline std::string decode_string(const buffer& source, charset cs = charset::utf8, std::size_t position = 0,
                                 std::size_t length = buffer::npos) {
    const std::size_t n = detail::checked_slice("codec::decode_string", "position", "length", "source",
                                                        source.length(), position, length);
    return detail::decode_text(source.span().subspan(position, n), cs);
}

// Titanium's charset constants and their common spellings, case-insensitively: utf8/utf-8,
// utf16/utf-16, utf16be/utf-16be, utf16le/utf-16le, ascii/us-ascii, and latin1/iso-latin-1/
// iso-8859-1 (Codec.yml documents "iso-latin-1", the test suite expects "latin1").
inline charset charset_from_name(std::string_view name) {
    struct entry {
        std::string_view name;
        charset cs;
    };
    static constexpr std::array<entry, 13> names{{
        {"utf8", charset::utf8},         {"utf-8", charset::utf8},         {"utf16", charset::utf16},
        {"utf-16", charset::utf16},      {"utf16be", charset::utf16be},    {"utf-16be", charset::utf16be},
        {"utf16le", charset::utf16le},   {"utf-16le", charset::utf16le},   {"ascii", charset::ascii},
        {"us-ascii", charset::ascii},    {"latin1", charset::latin1},      {"iso-latin-1", charset::latin1},
        {"iso-8859-1", charset::latin1},
    }};
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    for (const entry& e : names) {
        if (std::ranges::equal(e.name, name, {}, {}, lower)) return e.cs;
    }
    throw std::invalid_argument("codec::charset_from_name: unsupported charset name \"" + std::string(name) + "\"");
}

}  // namespace tisock::codec
