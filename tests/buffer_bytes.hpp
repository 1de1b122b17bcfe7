// Helpers shared by the buffer, codec and stream tests: build a buffer from byte values and
// read its bytes back as plain ints, so that doctest prints mismatches as lists of numbers.
#pragma once

#include <tisock/buffer.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace tisock_test {

inline tisock::buffer bytes(std::initializer_list<int> values) {
    tisock::buffer b(values.size());
    std::size_t i = 0;
    for (int v : values) b[i++] = static_cast<std::uint8_t>(v);
    return b;
}

inline std::vector<int> values_of(const tisock::buffer& b, std::size_t offset = 0,
                                  std::size_t length = tisock::buffer::npos) {
    const tisock::buffer slice = b.clone(offset, length);
    std::vector<int> out;
    for (std::size_t i = 0; i < slice.length(); ++i) out.push_back(slice[i]);
    return out;
}

inline std::vector<int> values(std::initializer_list<int> v) { return std::vector<int>(v); }

// A buffer holding 0, 1, 2, ... (mod 256): every byte differs from its neighbours, so a
// misplaced copy shows.
inline tisock::buffer counting(std::size_t length, int start = 0) {
    tisock::buffer b(length);
    for (std::size_t i = 0; i < length; ++i) b[i] = static_cast<std::uint8_t>(start + static_cast<int>(i));
    return b;
}

}  // namespace tisock_test

// Asserts that `expr` throws std::out_of_range whose message names `argument`.
#define CHECK_OUT_OF_RANGE(expr, argument) \
    CHECK_THROWS_WITH_AS(expr, doctest::Contains(argument), std::out_of_range)
