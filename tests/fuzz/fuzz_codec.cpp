// libFuzzer target for tisock::buffer and tisock::codec (clang only; see run_codec.sh).
//
// The first input byte picks a driver:
//   0: the rest is raw bytes; decode_string in every charset must return valid UTF-8 (checked
//      by an independent validator) or throw std::invalid_argument, and what decodes must
//      encode back to the same bytes (modulo the utf16 byte-order mark).
//   1: the rest is text; encode_string in every charset must succeed with decode(encode(x))
//      == x, or throw std::invalid_argument.
//   2: the rest is a program of buffer/codec operations with arbitrary offsets and lengths,
//      run against a std::vector model: each must match the model or throw std::out_of_range
//      exactly when the model says the arguments are out of range.
// Any other exception, a mismatch (abort) or a sanitizer report is a finding.
#include <tisock/buffer.hpp>
#include <tisock/codec.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using tisock::buffer;
namespace codec = tisock::codec;
using model = std::vector<std::uint8_t>;

constexpr std::array all_charsets{codec::charset::utf8,    codec::charset::utf16, codec::charset::utf16be,
                                  codec::charset::utf16le, codec::charset::ascii, codec::charset::latin1};

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fuzz_codec: %s\n", what);
    std::abort();
}
void expect(bool ok, const char* what) {
    if (!ok) fail(what);
}

// Independent of tisock's decoder on purpose: Unicode 15, table 3-7 (well-formed sequences).
bool is_valid_utf8(std::string_view s) {
    std::size_t i = 0;
    const auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const auto in = [](unsigned v, unsigned lo, unsigned hi) { return v >= lo && v <= hi; };
    while (i < s.size()) {
        const unsigned b = at(i);
        std::size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (b <= 0x7F) len = 1;
        else if (in(b, 0xC2, 0xDF)) len = 2;
        else if (b == 0xE0) len = 3, lo = 0xA0;
        else if (in(b, 0xE1, 0xEC) || in(b, 0xEE, 0xEF)) len = 3;
        else if (b == 0xED) len = 3, hi = 0x9F;
        else if (b == 0xF0) len = 4, lo = 0x90;
        else if (in(b, 0xF1, 0xF3)) len = 4;
        else if (b == 0xF4) len = 4, hi = 0x8F;
        else return false;
        if (i + len > s.size()) return false;
        for (std::size_t k = 1; k < len; ++k) {
            const unsigned c = at(i + k);
            if (!(k == 1 ? in(c, lo, hi) : in(c, 0x80, 0xBF))) return false;
        }
        i += len;
    }
    return true;
}

buffer buffer_of(std::span<const std::uint8_t> bytes) {
    buffer b(bytes.size());
    if (!bytes.empty()) std::memcpy(b.data(), bytes.data(), bytes.size());
    return b;
}

model model_of(const buffer& b) {
    model m(b.length());
    if (!m.empty()) std::memcpy(m.data(), b.data(), m.size());
    return m;
}

std::string_view text_of(std::span<const std::uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// ---- driver 0: arbitrary bytes through every decoder ------------------------------------------
void decode_everything(std::span<const std::uint8_t> bytes) {
    const buffer raw = buffer_of(bytes);
    for (codec::charset cs : all_charsets) {
        std::string text;
        try {
            text = codec::decode_string(raw, cs);
        } catch (const std::invalid_argument&) {
            continue;
        }
        expect(is_valid_utf8(text), "decode_string returned invalid UTF-8");
        const buffer again = buffer::from_string(text, cs);  // must not throw: it came from cs
        expect(codec::decode_string(again, cs) == text, "decode(encode(decode(x))) != decode(x)");
        if (cs != codec::charset::utf16) {
            expect(model_of(again) == model(bytes.begin(), bytes.end()), "encode(decode(x)) != x");
        }
    }
}

// ---- driver 1: arbitrary text through every encoder --------------------------------------------
void encode_everything(std::span<const std::uint8_t> bytes) {
    const std::string_view text = text_of(bytes);
    const bool valid = is_valid_utf8(text);
    for (codec::charset cs : all_charsets) {
        buffer b;
        try {
            b = buffer::from_string(text, cs);
        } catch (const std::invalid_argument&) {
            continue;
        }
        expect(valid, "invalid UTF-8 was encoded");
        expect(codec::decode_string(b, cs) == text, "decode(encode(x)) != x");
        // encode_string into a larger buffer agrees with from_string and returns the end.
        buffer dest(b.length() + 3);
        expect(codec::encode_string(dest, text, cs, 3) == dest.length(), "encode_string end position");
        expect(model_of(dest.clone(3)) == model_of(b), "encode_string bytes != from_string bytes");
    }
}

// ---- driver 2: programs of buffer operations against a model -----------------------------------
class program {
public:
    explicit program(std::span<const std::uint8_t> bytes) : in_(bytes) {}

    bool done() const { return in_.empty(); }
    std::uint8_t byte() {
        if (in_.empty()) return 0;
        const std::uint8_t b = in_.front();
        in_ = in_.subspan(1);
        return b;
    }
    // Mostly small sizes, sometimes the edge values where overflow bugs hide.
    std::size_t size_arg() {
        const std::uint8_t b = byte();
        switch (b) {
            case 0xFF: return buffer::npos;
            case 0xFE: return buffer::npos - 1;
            case 0xFD: return buffer::npos / 2 + 1;
            case 0xFC: return std::size_t{byte()} * 256 + byte();
            default: return b % 48;
        }
    }
    std::uint64_t value_arg() {
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = v << 8 | byte();
        return v;
    }

private:
    std::span<const std::uint8_t> in_;
};

// Expected-result helpers: does [offset, offset + length) lie inside `size`? (npos = to the end)
bool slice_ok(std::size_t size, std::size_t offset, std::size_t length) {
    return offset <= size && (length == buffer::npos || length <= size - offset);
}
std::size_t slice_len(std::size_t size, std::size_t offset, std::size_t length) {
    return length == buffer::npos ? size - offset : length;
}

template <class F>
void expect_range_error(bool should_throw, F&& op, const char* what) {
    try {
        op();
    } catch (const std::out_of_range&) {
        if (!should_throw) fail(what);
        return;
    }
    if (should_throw) fail(what);
}

constexpr std::size_t max_length = 1 << 16;  // keeps set_length from exhausting memory

void run_program(std::span<const std::uint8_t> bytes) {
    program p(bytes);
    std::array<buffer, 3> bufs{};
    std::array<model, 3> models{};
    for (int steps = 0; !p.done() && steps < 256; ++steps) {
        const std::uint8_t op = p.byte();
        const std::size_t d = p.byte() % 3;
        const std::size_t s = p.byte() % 3;
        buffer& dst = bufs[d];
        model& md = models[d];
        const buffer& src = bufs[s];
        const model ms = models[s];  // a copy: src and dst may be the same buffer
        switch (op % 12) {
            case 0: {  // append
                const std::size_t so = p.size_arg(), sl = p.size_arg();
                const bool ok = slice_ok(ms.size(), so, sl) && md.size() + slice_len(ms.size(), so, sl) <= max_length;
                if (!ok && slice_ok(ms.size(), so, sl)) break;  // would only exceed our memory cap
                expect_range_error(!ok, [&] {
                    const std::size_t n = dst.append(src, so, sl);
                    expect(n == slice_len(ms.size(), so, sl), "append return value");
                    md.insert(md.end(), ms.begin() + static_cast<std::ptrdiff_t>(so),
                              ms.begin() + static_cast<std::ptrdiff_t>(so + n));
                }, "append range");
                break;
            }
            case 1: {  // insert
                const std::size_t at = p.size_arg(), so = p.size_arg(), sl = p.size_arg();
                const bool ok = at <= md.size() && slice_ok(ms.size(), so, sl);
                if (ok && md.size() + slice_len(ms.size(), so, sl) > max_length) break;
                expect_range_error(!ok, [&] {
                    const std::size_t n = dst.insert(src, at, so, sl);
                    expect(n == slice_len(ms.size(), so, sl), "insert return value");
                    md.insert(md.begin() + static_cast<std::ptrdiff_t>(at), ms.begin() + static_cast<std::ptrdiff_t>(so),
                              ms.begin() + static_cast<std::ptrdiff_t>(so + n));
                }, "insert range");
                break;
            }
            case 2: {  // copy
                const std::size_t at = p.size_arg(), so = p.size_arg(), sl = p.size_arg();
                const bool ok = at <= md.size() && slice_ok(ms.size(), so, sl) &&
                                slice_len(ms.size(), so, sl) <= md.size() - at;
                expect_range_error(!ok, [&] {
                    const std::size_t n = dst.copy(src, at, so, sl);
                    expect(n == slice_len(ms.size(), so, sl), "copy return value");
                    std::copy_n(ms.begin() + static_cast<std::ptrdiff_t>(so), n,
                                md.begin() + static_cast<std::ptrdiff_t>(at));
                }, "copy range");
                break;
            }
            case 3: {  // clone
                const std::size_t o = p.size_arg(), l = p.size_arg();
                expect_range_error(!slice_ok(ms.size(), o, l), [&] {
                    const buffer c = src.clone(o, l);
                    expect(model_of(c) == model(ms.begin() + static_cast<std::ptrdiff_t>(o),
                                                ms.begin() + static_cast<std::ptrdiff_t>(o + c.length())),
                           "clone bytes");
                    expect(c.byte_order() == src.byte_order() && c.type() == src.type(), "clone metadata");
                }, "clone range");
                break;
            }
            case 4: {  // fill
                const std::uint8_t v = p.byte();
                const std::size_t o = p.size_arg(), l = p.size_arg();
                expect_range_error(!slice_ok(md.size(), o, l), [&] {
                    dst.fill(v, o, l);
                    std::fill_n(md.begin() + static_cast<std::ptrdiff_t>(o), slice_len(md.size(), o, l), v);
                }, "fill range");
                break;
            }
            case 5: {  // set_length / clear / release
                const std::size_t n = p.size_arg() % (max_length + 1);
                const std::uint8_t which = p.byte() % 3;
                if (which == 0) dst.set_length(n), md.resize(n);
                if (which == 1) dst.clear(), std::fill(md.begin(), md.end(), std::uint8_t{0});
                if (which == 2) dst.release(), md.clear();
                break;
            }
            case 6: {  // operator[]
                const std::size_t i = p.size_arg();
                const std::uint8_t v = p.byte();
                expect_range_error(i >= md.size(), [&] {
                    dst[i] = v;
                    md[i] = v;
                    expect(std::as_const(dst)[i] == v, "index store");
                }, "index range");
                break;
            }
            case 7: {  // encode_number / decode_number / decode_integer
                const auto type = static_cast<codec::number_type>(p.byte() % 6);
                const auto order = static_cast<codec::byte_order>(p.byte() % 2);
                const std::size_t pos = p.size_arg();
                const std::uint64_t bits = p.value_arg();
                const std::size_t width = tisock::detail::number_width(type);
                const bool ok = pos <= md.size() && width <= md.size() - pos;
                expect_range_error(!ok, [&] {
                    expect(codec::encode_number(dst, static_cast<std::int64_t>(bits), type, pos, order) == pos + width,
                           "encode_number end position");
                    for (std::size_t k = 0; k < width; ++k) md[pos + k] = dst[pos + k];
                    if (type != codec::number_type::float_ && type != codec::number_type::double_) {
                        const std::int64_t back = codec::decode_integer(dst, type, pos, order);
                        const int unused = static_cast<int>(64 - 8 * width);
                        expect(back == static_cast<std::int64_t>(bits << unused) >> unused, "integer round trip");
                        const std::size_t low = order == codec::byte_order::big_endian ? pos + width - 1 : pos;
                        expect(dst[low] == static_cast<std::uint8_t>(bits), "byte order of the low byte");
                    }
                    (void)codec::decode_number(dst, type, pos, order);
                }, "encode_number range");
                expect_range_error(!ok, [&] { (void)codec::decode_number(dst, type, pos, order); },
                                   "decode_number range");
                break;
            }
            case 8: {  // encode_string of a slice of the input program, as text
                const auto cs = all_charsets[p.byte() % all_charsets.size()];
                const std::size_t pos = p.size_arg();
                std::string text;
                for (std::size_t k = p.byte() % 8; k > 0; --k) text += static_cast<char>(p.byte());
                try {
                    const std::size_t end = codec::encode_string(dst, text, cs, pos);
                    expect(end <= md.size() && pos <= end, "encode_string end");
                    for (std::size_t k = pos; k < end; ++k) md[k] = dst[k];
                    expect(codec::decode_string(dst, cs, pos, end - pos) == text, "encode_string round trip");
                } catch (const std::invalid_argument&) {
                } catch (const std::out_of_range&) {
                    expect(pos > md.size() || tisock::detail::encoded_length(text, cs) > md.size() - pos,
                           "encode_string range");
                }
                break;
            }
            case 9: {  // decode_string of a slice
                const auto cs = all_charsets[p.byte() % all_charsets.size()];
                const std::size_t o = p.size_arg(), l = p.size_arg();
                try {
                    const std::string text = codec::decode_string(src, cs, o, l);
                    expect(slice_ok(ms.size(), o, l), "decode_string accepted a bad slice");
                    expect(is_valid_utf8(text), "decode_string returned invalid UTF-8");
                } catch (const std::invalid_argument&) {
                    expect(slice_ok(ms.size(), o, l), "bad slice reported as bad text");
                } catch (const std::out_of_range&) {
                    expect(!slice_ok(ms.size(), o, l), "decode_string range");
                }
                break;
            }
            case 10: {  // copy and move assignment
                if (&dst != &src) {
                    dst = (p.byte() & 1) ? src : buffer(src);
                    md = ms;
                }
                break;
            }
            case 11: {  // from_number / from_string with a length
                const std::size_t n = p.size_arg() % 64;
                const auto type = static_cast<codec::number_type>(p.byte() % 6);
                const std::size_t width = tisock::detail::number_width(type);
                expect_range_error(n != 0 && n < width, [&] {
                    dst = buffer::from_number(p.value_arg(), type, codec::byte_order::little_endian, n);
                    expect(dst.length() == (n == 0 ? width : n), "from_number length");
                    md = model_of(dst);
                }, "from_number range");
                break;
            }
        }
        for (std::size_t k = 0; k < bufs.size(); ++k)
            expect(model_of(bufs[k]) == models[k], "buffer diverged from its model");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::span<const std::uint8_t> rest(data + 1, size - 1);
    switch (data[0] % 3) {
        case 0: decode_everything(rest); break;
        case 1: encode_everything(rest); break;
        case 2: run_program(rest); break;
    }
    return 0;
}
