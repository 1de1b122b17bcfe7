// tisock::buffer - Titanium's Ti.Buffer as a C++ value type.
//
// A growable array of bytes with Titanium's offsets, lengths, return values and range errors
// (spec/titanium-notes.md §1.5, §2.3, §3.3). Unlike a Ti.Buffer, copies are deep: a buffer
// behaves like a std::vector<std::byte>, and a reference is what you pass to share one.
// The bytes are contiguous and exposed through data()/span(), so a socket can read into a
// buffer directly.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <tisock/detail/codec_core.hpp>
#include <tisock/detail/range.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace tisock {

class buffer {
public:
    static constexpr std::size_t npos = std::size_t(-1);

    // Titanium's creation-only `type` property: the number type of from_number, the charset
    // of from_string, or nothing for a buffer created by length. clone() keeps it.
    using encoding = std::variant<std::monostate, codec::number_type, codec::charset>;

    buffer() = default;
    explicit buffer(std::size_t length) : bytes_(length) {}

    // The encoded text; with a non-zero `length`, a buffer of that length holding the text at
    // offset 0 followed by zeros (Ti.createBuffer({value, length})). Text that does not fit
    // throws std::out_of_range; invalid text throws std::invalid_argument.
    static buffer from_string(std::string_view utf8_text, codec::charset cs = codec::charset::utf8,
                              std::size_t length = 0) {
        const std::size_t needed = detail::encoded_length(utf8_text, cs);
        if (length != 0 && needed > length)
            throw std::out_of_range("buffer::from_string: the encoded text needs " + std::to_string(needed) +
                                    " bytes, more than length (" + std::to_string(length) + ")");
        buffer b(length == 0 ? needed : length);
        detail::encode_text(b.span().first(needed), utf8_text, cs);
        b.type_ = cs;
        return b;
    }

    // The number encoded at offset 0; the buffer is the type's width long, or `length` bytes
    // (zero-padded) when that is given. Integer types keep the low bits of `value`.
    template <class T>
        requires std::is_arithmetic_v<T>
    static buffer from_number(T value, codec::number_type type,
                              codec::byte_order order = codec::native_byte_order(), std::size_t length = 0) {
        const std::size_t width = detail::number_width(type);
        if (length != 0 && width > length)
            throw std::out_of_range("buffer::from_number: the number needs " + std::to_string(width) +
                                    " bytes, more than length (" + std::to_string(length) + ")");
        buffer b(length == 0 ? width : length);
        detail::encode_number_bytes(b.span().first(width), value, type, order);
        b.order_ = order;
        b.type_ = type;
        return b;
    }

    std::size_t length() const noexcept { return bytes_.size(); }

    // Zero-extends or truncates (Ti.Buffer's `length = n`).
    void set_length(std::size_t length) { bytes_.resize(length); }

    // Checked like every other access: Titanium throws on an index outside the buffer.
    // Stores through the reference wrap modulo 256, as Ti.Buffer's index setter does.
    std::uint8_t& operator[](std::size_t i) {
        check_index(i);
        // uint8_t is unsigned char, which may alias any object, including a std::byte.
        return reinterpret_cast<std::uint8_t&>(bytes_[i]);
    }
    std::uint8_t operator[](std::size_t i) const {
        check_index(i);
        return std::to_integer<std::uint8_t>(bytes_[i]);
    }

    // Appends src[src_offset, src_offset + src_length); returns the number of bytes appended.
    std::size_t append(const buffer& src, std::size_t src_offset = 0, std::size_t src_length = npos) {
        const std::size_t n = src.checked_source_slice("buffer::append", src_offset, src_length);
        splice(length(), src, src_offset, n);
        return n;
    }

    // Inserts the slice before byte `offset` (0..length()), shifting the rest right; returns the
    // number of bytes inserted.
    std::size_t insert(const buffer& src, std::size_t offset, std::size_t src_offset = 0,
                       std::size_t src_length = npos) {
        detail::check_offset("buffer::insert", "offset", offset, "the buffer", length());
        const std::size_t n = src.checked_source_slice("buffer::insert", src_offset, src_length);
        splice(offset, src, src_offset, n);
        return n;
    }

    // Overwrites bytes from `offset` with the slice; never grows the buffer, and throws when the
    // slice does not fit (Android's behaviour; iOS silently copies less). Returns the number of
    // bytes copied. `src` may be *this: overlapping ranges copy as if through a temporary.
    std::size_t copy(const buffer& src, std::size_t offset, std::size_t src_offset = 0,
                     std::size_t src_length = npos) {
        detail::check_offset("buffer::copy", "offset", offset, "the buffer", length());
        const std::size_t n = src.checked_source_slice("buffer::copy", src_offset, src_length);
        if (n > length() - offset)
            throw std::out_of_range("buffer::copy: offset (" + std::to_string(offset) + ") + src_length (" +
                                    std::to_string(n) + ") exceeds the length of the buffer (" +
                                    std::to_string(length()) + "); copy never grows the buffer");
        if (n != 0) std::memmove(data() + offset, src.data() + src_offset, n);
        return n;
    }

    // A new buffer with bytes [offset, offset + length), this byte order and type.
    buffer clone(std::size_t offset = 0, std::size_t length = npos) const {
        const std::size_t n =
            detail::checked_slice("buffer::clone", "offset", "length", "the buffer", this->length(), offset, length);
        buffer b;
        b.bytes_.assign(bytes_.begin() + static_cast<std::ptrdiff_t>(offset),
                        bytes_.begin() + static_cast<std::ptrdiff_t>(offset + n));
        b.order_ = order_;
        b.type_ = type_;
        return b;
    }

    void fill(std::uint8_t value, std::size_t offset = 0, std::size_t length = npos) {
        const std::size_t n =
            detail::checked_slice("buffer::fill", "offset", "length", "the buffer", this->length(), offset, length);
        std::fill_n(bytes_.begin() + static_cast<std::ptrdiff_t>(offset), n, std::byte{value});
    }

    // Zeroes every byte; the length stays (Ti.Buffer.clear).
    void clear() { std::fill(bytes_.begin(), bytes_.end(), std::byte{0}); }

    // Frees the storage; the length becomes 0 (Ti.Buffer.release).
    void release() { std::vector<std::byte>().swap(bytes_); }

    // The bytes as they are, trailing zeros included (Android's toString keeps them too).
    std::string to_string() const { return std::string(reinterpret_cast<const char*>(bytes_.data()), bytes_.size()); }

    std::byte* data() noexcept { return bytes_.data(); }
    const std::byte* data() const noexcept { return bytes_.data(); }
    std::span<std::byte> span() noexcept { return bytes_; }
    std::span<const std::byte> span() const noexcept { return bytes_; }

    // Titanium's creation-only `byteOrder`: from_number's order, native otherwise.
    codec::byte_order byte_order() const noexcept { return order_; }
    const encoding& type() const noexcept { return type_; }

private:
    static_assert(std::is_same_v<std::uint8_t, unsigned char>, "operator[] relies on uint8_t aliasing bytes");

    void check_index(std::size_t i) const {
        if (i >= length())
            throw std::out_of_range("buffer::operator[]: index (" + std::to_string(i) +
                                    ") is past the last byte (length " + std::to_string(length()) + ")");
    }

    std::size_t checked_source_slice(const char* where, std::size_t src_offset, std::size_t src_length) const {
        return detail::checked_slice(where, "src_offset", "src_length", "src", length(), src_offset, src_length);
    }

    // Inserts src[from, from + n) before byte `at`; all arguments already validated.
    void splice(std::size_t at, const buffer& src, std::size_t from, std::size_t n) {
        if (&src == this) {
            // vector::insert forbids iterators into the vector itself.
            const buffer slice = clone(from, n);
            splice(at, slice, 0, n);
            return;
        }
        const auto first = src.bytes_.begin() + static_cast<std::ptrdiff_t>(from);
        bytes_.insert(bytes_.begin() + static_cast<std::ptrdiff_t>(at), first, first + static_cast<std::ptrdiff_t>(n));
    }

    std::vector<std::byte> bytes_;
    codec::byte_order order_ = codec::native_byte_order();
    encoding type_{};
};

}  // namespace tisock
