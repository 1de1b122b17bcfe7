// Range checking shared by buffer, codec and buffer_stream.
//
// Titanium reports every bad offset/length as an exception; the API contract makes that
// std::out_of_range whose message names the offending argument, so callers can tell
// "offset" from "src_length" without parsing numbers. Every check is written so that it
// cannot overflow: offset + length is never computed before offset <= size is known.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace tisock::detail {

inline constexpr std::size_t npos = std::size_t(-1);

[[noreturn]] inline void throw_past_end(const char* where, const char* offset_name, std::size_t offset,
                                        const char* of, std::size_t size) {
    throw std::out_of_range(std::string(where) + ": " + offset_name + " (" + std::to_string(offset) +
                            ") is past the end of " + of + " (length " + std::to_string(size) + ")");
}

// Checks `offset <= size`; names the argument otherwise.
inline void check_offset(const char* where, const char* offset_name, std::size_t offset, const char* of,
                         std::size_t size) {
    if (offset > size) throw_past_end(where, offset_name, offset, of, size);
}

// Validates the slice [offset, offset + length) of something `size` bytes long and returns
// its length; `npos` means "up to the end". The message names both arguments when their sum
// is what overflows, since either one may be the mistake.
[[noreturn, gnu::cold, gnu::noinline]] inline void throw_bad_slice(const char* where, const char* offset_name,
                                                                   const char* length_name, const char* of,
                                                                   std::size_t size, std::size_t offset,
                                                                   std::size_t length) {
    check_offset(where, offset_name, offset, of, size);
    throw std::out_of_range(std::string(where) + ": " + offset_name + " (" + std::to_string(offset) + ") + " +
                            length_name + " (" + std::to_string(length) + ") exceeds the length of " + of + " (" +
                            std::to_string(size) + ")");
}

// The check runs on every socket read and write: it stays inline, the message is built
// out of line.
inline std::size_t checked_slice(const char* where, const char* offset_name, const char* length_name,
                                 const char* of, std::size_t size, std::size_t offset, std::size_t length) {
    if (offset <= size) [[likely]] {
        const std::size_t room = size - offset;
        if (length == npos) return room;
        if (length <= room) [[likely]] return length;
    }
    throw_bad_slice(where, offset_name, length_name, of, size, offset, length);
}

}  // namespace tisock::detail
