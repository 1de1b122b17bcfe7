// The pure half of Ti.Codec: the codec enums and the number/text conversions over byte spans.
//
// buffer.hpp needs these for buffer::from_string / from_number, and codec.hpp's public
// functions take a buffer&, so the two public headers would include each other. Keeping the
// conversions here, with no knowledge of `buffer`, breaks that cycle: buffer.hpp includes
// this file, codec.hpp includes buffer.hpp, and each header compiles on its own.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace tisock::codec {

enum class number_type { byte, short_, int_, float_, long_, double_ };
enum class byte_order { big_endian, little_endian };
enum class charset { utf8, utf16, utf16be, utf16le, ascii, latin1 };

constexpr byte_order native_byte_order() noexcept {
    static_assert(std::endian::native == std::endian::big || std::endian::native == std::endian::little,
                  "tisock::codec supports big- and little-endian hosts only");
    return std::endian::native == std::endian::big ? byte_order::big_endian : byte_order::little_endian;
}

}  // namespace tisock::codec

namespace tisock::detail {

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "Ti.Codec's float and double are IEEE 754 binary32 and binary64");

// ---- numbers -----------------------------------------------------------------------------

inline std::size_t number_width(codec::number_type type) {
    switch (type) {
        case codec::number_type::byte: return 1;
        case codec::number_type::short_: return 2;
        case codec::number_type::int_:
        case codec::number_type::float_: return 4;
        case codec::number_type::long_:
        case codec::number_type::double_: return 8;
    }
    throw std::invalid_argument("codec: type is not a codec::number_type value");
}

inline bool is_floating(codec::number_type type) noexcept {
    return type == codec::number_type::float_ || type == codec::number_type::double_;
}

inline void check_byte_order(codec::byte_order order) {
    if (order != codec::byte_order::big_endian && order != codec::byte_order::little_endian)
        throw std::invalid_argument("codec: order is not a codec::byte_order value");
}

// Writes the low `dest.size()` bytes of `bits` in the given order.
inline void store_bits(std::span<std::byte> dest, std::uint64_t bits, codec::byte_order order) noexcept {
    const std::size_t n = dest.size();
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t at = order == codec::byte_order::big_endian ? n - 1 - i : i;
        dest[at] = static_cast<std::byte>(bits >> (8 * i));
    }
}

inline std::uint64_t load_bits(std::span<const std::byte> source, codec::byte_order order) noexcept {
    const std::size_t n = source.size();
    std::uint64_t bits = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t at = order == codec::byte_order::big_endian ? n - 1 - i : i;
        bits |= std::to_integer<std::uint64_t>(source[at]) << (8 * i);
    }
    return bits;
}

// Two's-complement bits of an arithmetic value, as Titanium computes them before keeping the
// low N bits. Floating values convert like Java's (long) cast - truncation toward zero,
// saturation, NaN -> 0 - because a plain C++ cast of an out-of-range double is undefined.
template <class T>
std::uint64_t integer_bits(T value) noexcept {
    if constexpr (std::is_floating_point_v<T>) {
        const double v = static_cast<double>(value);
        if (std::isnan(v)) return 0;
        if (v >= 0x1p63) return static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
        if (v < -0x1p63) return static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::min());
        return static_cast<std::uint64_t>(static_cast<std::int64_t>(v));
    } else {
        return static_cast<std::uint64_t>(value);  // modular: keeps the low bits of any integer
    }
}

// Encodes `value` as `type` into exactly number_width(type) bytes.
template <class T>
    requires std::is_arithmetic_v<T>
void encode_number_bytes(std::span<std::byte> dest, T value, codec::number_type type, codec::byte_order order) {
    check_byte_order(order);
    switch (type) {
        case codec::number_type::float_:
            store_bits(dest, std::bit_cast<std::uint32_t>(static_cast<float>(value)), order);
            return;
        case codec::number_type::double_:
            store_bits(dest, std::bit_cast<std::uint64_t>(static_cast<double>(value)), order);
            return;
        default:
            store_bits(dest, integer_bits(value), order);
            return;
    }
}

// Sign-extends the `width`-byte two's-complement integer in the low bits of `bits`
// (Titanium's integer types are Java's signed byte/short/int/long).
inline std::int64_t sign_extend(std::uint64_t bits, std::size_t width) noexcept {
    const auto unused = static_cast<unsigned>(64 - 8 * width);
    return static_cast<std::int64_t>(bits << unused) >> unused;
}

// ---- text --------------------------------------------------------------------------------

[[noreturn]] inline void throw_bad_text(const char* where, const std::string& why) {
    throw std::invalid_argument(std::string(where) + ": " + why);
}

inline std::string hex_code_point(char32_t cp) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out = "U+";
    const int width = cp > 0xFFFF ? 6 : 4;
    for (int shift = 4 * (width - 1); shift >= 0; shift -= 4) out += digits[(cp >> shift) & 0xF];
    return out;
}

inline bool is_surrogate(char32_t cp) noexcept { return cp >= 0xD800 && cp <= 0xDFFF; }

// Decodes the code point starting at text[i] and advances i. Rejects everything Unicode
// calls ill-formed UTF-8: stray continuation bytes, truncated sequences, overlong forms,
// encoded surrogates and values above U+10FFFF (Java and Foundation would silently
// substitute U+FFFD instead, which is the garbage the contract forbids).
inline char32_t next_utf8(std::string_view text, std::size_t& i, const char* where) {
    const auto byte_at = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    const std::size_t start = i;
    const unsigned char lead = byte_at(i++);
    if (lead < 0x80) return lead;
    std::size_t extra = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
        extra = 1, cp = lead & 0x1Fu, min = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        extra = 2, cp = lead & 0x0Fu, min = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        extra = 3, cp = lead & 0x07u, min = 0x10000;
    } else {
        throw_bad_text(where, "invalid UTF-8 lead byte at offset " + std::to_string(start));
    }
    for (std::size_t k = 0; k < extra; ++k, ++i) {
        if (i >= text.size() || (byte_at(i) & 0xC0u) != 0x80u)
            throw_bad_text(where, "truncated UTF-8 sequence at offset " + std::to_string(start));
        cp = (cp << 6) | (byte_at(i) & 0x3Fu);
    }
    if (cp < min) throw_bad_text(where, "overlong UTF-8 sequence at offset " + std::to_string(start));
    if (is_surrogate(cp) || cp > 0x10FFFF)
        throw_bad_text(where, "UTF-8 encodes " + hex_code_point(cp) + ", not a Unicode scalar value, at offset " +
                                  std::to_string(start));
    return cp;
}

// Hands the UTF-8 form of the scalar value `cp` to `emit`, one byte at a time.
template <class Emit>
void emit_utf8(char32_t cp, Emit&& emit) {
    const auto byte = [](char32_t bits) { return static_cast<std::byte>(bits); };
    if (cp < 0x80) {
        emit(byte(cp));
    } else if (cp < 0x800) {
        emit(byte(0xC0 | (cp >> 6)));
        emit(byte(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        emit(byte(0xE0 | (cp >> 12)));
        emit(byte(0x80 | ((cp >> 6) & 0x3F)));
        emit(byte(0x80 | (cp & 0x3F)));
    } else {
        emit(byte(0xF0 | (cp >> 18)));
        emit(byte(0x80 | ((cp >> 12) & 0x3F)));
        emit(byte(0x80 | ((cp >> 6) & 0x3F)));
        emit(byte(0x80 | (cp & 0x3F)));
    }
}

inline void append_utf8(std::string& out, char32_t cp) {
    emit_utf8(cp, [&out](std::byte b) { out += static_cast<char>(b); });
}

inline void check_charset(codec::charset cs) {
    switch (cs) {
        case codec::charset::utf8:
        case codec::charset::utf16:
        case codec::charset::utf16be:
        case codec::charset::utf16le:
        case codec::charset::ascii:
        case codec::charset::latin1: return;
    }
    throw std::invalid_argument("codec: cs is not a codec::charset value");
}

inline void emit_utf16_unit(auto& emit, char32_t unit, bool big_endian) {
    const auto high = static_cast<std::byte>(unit >> 8);
    const auto low = static_cast<std::byte>(unit & 0xFF);
    emit(big_endian ? high : low);
    emit(big_endian ? low : high);
}

// Transcodes UTF-8 `text` to `cs`, handing each output byte to `emit`. Counting and writing
// share this one walk so that validation and encoding can never disagree.
// Titanium's CHARSET_UTF16 is Java's "UTF-16": big-endian behind an FE FF mark - except for
// empty text, which Java encodes as zero bytes (no mark), and so do we.
template <class Emit>
void transcode_from_utf8(std::string_view text, codec::charset cs, Emit&& emit) {
    static constexpr const char* where = "codec: utf8_text";
    check_charset(cs);
    const bool big_endian = cs != codec::charset::utf16le;
    if (cs == codec::charset::utf16 && !text.empty()) emit_utf16_unit(emit, 0xFEFF, true);
    for (std::size_t i = 0; i < text.size();) {
        const char32_t cp = next_utf8(text, i, where);
        switch (cs) {
            case codec::charset::utf8:
                emit_utf8(cp, emit);
                break;
            case codec::charset::ascii:
            case codec::charset::latin1:
                if (cp > (cs == codec::charset::ascii ? 0x7Fu : 0xFFu))
                    throw_bad_text(where, hex_code_point(cp) + " cannot be encoded in " +
                                              (cs == codec::charset::ascii ? "ascii" : "latin1"));
                emit(static_cast<std::byte>(cp));
                break;
            case codec::charset::utf16:
            case codec::charset::utf16be:
            case codec::charset::utf16le:
                if (cp < 0x10000) {
                    emit_utf16_unit(emit, cp, big_endian);
                } else {
                    emit_utf16_unit(emit, 0xD800 + ((cp - 0x10000) >> 10), big_endian);
                    emit_utf16_unit(emit, 0xDC00 + ((cp - 0x10000) & 0x3FF), big_endian);
                }
                break;
        }
    }
}

// Validates `text` for `cs` and returns its encoded length in bytes.
inline std::size_t encoded_length(std::string_view text, codec::charset cs) {
    std::size_t n = 0;
    transcode_from_utf8(text, cs, [&n](std::byte) { ++n; });
    return n;
}

// Encodes `text` into `dest`, whose size must be encoded_length(text, cs).
inline void encode_text(std::span<std::byte> dest, std::string_view text, codec::charset cs) {
    std::size_t at = 0;
    transcode_from_utf8(text, cs, [&](std::byte b) { dest[at++] = b; });
}

inline std::string decode_utf16(std::span<const std::byte> bytes, bool big_endian, const char* where) {
    if (bytes.size() % 2 != 0)
        throw_bad_text(where, "odd number of bytes (" + std::to_string(bytes.size()) + ") for UTF-16");
    const auto unit_at = [&](std::size_t i) {
        const auto first = std::to_integer<char32_t>(bytes[i]);
        const auto second = std::to_integer<char32_t>(bytes[i + 1]);
        return big_endian ? (first << 8 | second) : (second << 8 | first);
    };
    std::string out;
    out.reserve(bytes.size());
    for (std::size_t i = 0; i < bytes.size(); i += 2) {
        char32_t cp = unit_at(i);
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            throw_bad_text(where, "unpaired low surrogate at offset " + std::to_string(i));
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            const char32_t low = i + 2 < bytes.size() ? unit_at(i + 2) : 0;
            if (low < 0xDC00 || low > 0xDFFF)
                throw_bad_text(where, "unpaired high surrogate at offset " + std::to_string(i));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            i += 2;
        }
        append_utf8(out, cp);
    }
    return out;
}

// Decodes `bytes` in charset `cs` to UTF-8. Bytes the charset cannot contain throw
// std::invalid_argument rather than turning into U+FFFD.
inline std::string decode_text(std::span<const std::byte> bytes, codec::charset cs) {
    static constexpr const char* where = "codec: source";
    switch (cs) {
        case codec::charset::utf8: {
            const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
            for (std::size_t i = 0; i < text.size();) next_utf8(text, i, where);
            return std::string(text);
        }
        case codec::charset::ascii:
        case codec::charset::latin1: {
            std::string out;
            out.reserve(bytes.size());
            for (std::size_t i = 0; i < bytes.size(); ++i) {
                const auto cp = std::to_integer<char32_t>(bytes[i]);
                if (cs == codec::charset::ascii && cp > 0x7F)
                    throw_bad_text(where, "byte " + std::to_string(cp) + " at offset " + std::to_string(i) +
                                              " is not ascii");
                append_utf8(out, cp);
            }
            return out;
        }
        case codec::charset::utf16: {
            // Java's "UTF-16" decoder: an FE FF or FF FE mark selects the order and is
            // dropped; without one the text is big-endian.
            if (bytes.size() >= 2) {
                const auto b0 = std::to_integer<unsigned>(bytes[0]);
                const auto b1 = std::to_integer<unsigned>(bytes[1]);
                if (b0 == 0xFE && b1 == 0xFF) return decode_utf16(bytes.subspan(2), true, where);
                if (b0 == 0xFF && b1 == 0xFE) return decode_utf16(bytes.subspan(2), false, where);
            }
            return decode_utf16(bytes, true, where);
        }
        case codec::charset::utf16be: return decode_utf16(bytes, true, where);
        case codec::charset::utf16le: return decode_utf16(bytes, false, where);
    }
    check_charset(cs);  // throws: `cs` is none of the enumerators
    return {};
}

}  // namespace tisock::detail
