// libFuzzer target: host and port validation and numeric address parsing (invalid hosts
// and ports). Never resolves or connects: arbitrary hosts must not turn into network traffic.
// Input: 2 bytes of port (big-endian, offset so that negatives and >65535 occur), then the
// host text, embedded NULs included.
#include <tisock/detail/address.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

using namespace tisock::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    int port = ((data[0] << 8) | data[1]) - 1024;  // -1024 .. 64511, plus a wide case below
    if (data[0] == 0xff) port = 65536 + data[1];
    std::string_view host(reinterpret_cast<const char*>(data + 2), size - 2);

    for (port_use use : {port_use::connect, port_use::listen}) {
        try {
            check_port(port, use);
            if (port < (use == port_use::connect ? 1 : 0) || port > 65535) std::abort();  // accepted a bad port
        } catch (const std::invalid_argument& e) {
            if (std::string_view(e.what()).find("port") == std::string_view::npos) std::abort();
        }
    }

    int safe_port = port < 0 || port > 65535 ? 80 : port;
    try {
        host_spec spec = classify_host(host, safe_port);
        if (host.empty() || host.find('\0') != std::string_view::npos) std::abort();
        if (spec.numeric) {
            // A literal must format back to an address that parses to the same bytes.
            std::string text = format_host(spec.literal.storage);
            endpoint again;
            if (text.empty() || !parse_numeric(text, safe_port, again)) std::abort();
            if (format_port(spec.literal.storage) != safe_port) std::abort();
            (void)is_wildcard(spec.literal);
        } else if (!is_hostname(host)) {
            std::abort();  // a name the validator rejects must never reach the resolver
        }
    } catch (const std::invalid_argument& e) {
        if (std::string_view(e.what()).find("host") == std::string_view::npos) std::abort();
    }
    return 0;
}
