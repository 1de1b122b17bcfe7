// Host and port validation, numeric address parsing and formatting.
//
// Ports are checked before anything is resolved: glibc's getaddrinfo silently turns the
// service "65536" into port 0. Hosts are IPv4/IPv6 literals (IPv6 optionally in brackets
// and with a %scope), or hostnames; anything else is rejected here with a message naming
// the host, never handed to the resolver.
#pragma once

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tisock/detail/sys.hpp>

namespace tisock::detail {

struct endpoint {
    sockaddr_storage storage{};
    socklen_t size = 0;

    int family() const noexcept { return storage.ss_family; }
    const sockaddr* addr() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
    sockaddr* addr() noexcept { return reinterpret_cast<sockaddr*>(&storage); }
};

enum class port_use { connect, listen };

inline void check_port(int port, port_use use) {
    int lowest = use == port_use::connect ? 1 : 0;
    if (port < lowest || port > 65535) {
        throw std::invalid_argument("tisock: port " + std::to_string(port) + " is out of range (" +
                                    std::to_string(lowest) + "..65535)");
    }
}

// "[::1]" -> "::1"; anything else unchanged.
inline std::string_view strip_brackets(std::string_view host) noexcept {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
    return host;
}

[[noreturn]] inline void throw_bad_host(std::string_view host, const char* why) {
    std::string shown;
    for (char c : host.substr(0, 80)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    throw std::invalid_argument("tisock: host \"" + shown + "\" " + why);
}

// Parses an IPv4 or IPv6 literal (brackets and %scope allowed). False if `host` is not one.
inline bool parse_numeric(std::string_view host, int port, endpoint& out) {
    std::string_view bare = strip_brackets(host);
    if (bare.empty() || bare.size() > INET6_ADDRSTRLEN + IF_NAMESIZE) return false;
    if (bare.find('\0') != std::string_view::npos) return false;
    std::string text(bare);
    out = endpoint{};
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
    if (bare.size() == host.size() && ::inet_pton(AF_INET, text.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<std::uint16_t>(port));
        out.size = sizeof(sockaddr_in);
        return true;
    }
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
    std::string addr = text, scope;
    if (auto pct = text.find('%'); pct != std::string::npos) {
        addr = text.substr(0, pct);
        scope = text.substr(pct + 1);
        if (scope.empty()) return false;
    }
    if (::inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) != 1) return false;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    if (!scope.empty()) {
        unsigned index = ::if_nametoindex(scope.c_str());
        if (index == 0) {
            char* end = nullptr;
            unsigned long n = std::strtoul(scope.c_str(), &end, 10);
            if (end == scope.c_str() || *end != '\0' || n == 0 || n > 0xffffffffUL) return false;
            index = static_cast<unsigned>(n);
        }
        v6->sin6_scope_id = index;
    }
    out.size = sizeof(sockaddr_in6);
    return true;
}

// A hostname as RFC 1123 allows it (letters, digits, '-', '.', plus '_' seen in the wild),
// at most 253 characters with labels of at most 63. The last label must not be all digits
// (RFC 1123 2.1): otherwise "256.1.1.1" or "1.2.3" - not literals for inet_pton - would
// reach getaddrinfo, which parses "1.2.3" as 1.2.0.3 (inet_aton) or asks DNS.
inline bool is_hostname(std::string_view host) noexcept {
    if (host.empty() || host.size() > 253) return false;
    std::size_t label = 0;
    bool digits_only = true;       // the current label
    bool last_was_numeric = false;  // the label before the last dot
    for (char c : host) {
        if (c == '.') {
            if (label == 0) return false;
            last_was_numeric = digits_only;
            label = 0;
            digits_only = true;
            continue;
        }
        bool digit = c >= '0' && c <= '9';
        bool ok = digit || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
        if (!ok || ++label > 63) return false;
        digits_only = digits_only && digit;
    }
    return label > 0 ? !digits_only : !last_was_numeric;  // a trailing dot ends an FQDN
}

inline bool is_wildcard(const endpoint& e) noexcept {
    if (e.family() == AF_INET) {
        return reinterpret_cast<const sockaddr_in*>(&e.storage)->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&e.storage);
    return std::memcmp(&v6->sin6_addr, &in6addr_any, sizeof in6addr_any) == 0;
}

// What a host string is, once validated: a literal (already parsed) or a name to resolve.
struct host_spec {
    bool numeric = false;
    endpoint literal;  // when numeric
};

inline host_spec classify_host(std::string_view host, int port) {
    if (host.empty()) throw std::invalid_argument("tisock: host is empty");
    if (host.find('\0') != std::string_view::npos) throw_bad_host(host, "contains a NUL character");
    host_spec spec;
    if (parse_numeric(host, port, spec.literal)) {
        spec.numeric = true;
        return spec;
    }
    if (!is_hostname(host)) throw_bad_host(host, "is not an IPv4/IPv6 address or a valid hostname");
    return spec;
}

// Blocking resolution (the resolver's workers, and listen(), which the spec makes blocking).
// Returns 0 or an EAI_* code; EAI_SYSTEM is turned into its errno by the caller.
inline int resolve_blocking(const std::string& host, int port, std::vector<endpoint>& out, int& sys_errno) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* list = nullptr;
    std::string service = std::to_string(port);
    int rc = sys::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
    if (rc == EAI_SYSTEM) sys_errno = errno;
    if (rc != 0) return rc;
    for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        endpoint e;
        std::memcpy(&e.storage, ai->ai_addr, ai->ai_addrlen);
        e.size = ai->ai_addrlen;
        out.push_back(e);
    }
    ::freeaddrinfo(list);
    return out.empty() ? EAI_NONAME : 0;
}

// A peer's IPv4 or IPv6 address, without its port, in 20 bytes instead of
// sockaddr_storage's 128 (kept by every accepted socket until its host is read; only the
// address goes into the text). family == AF_UNSPEC when empty.
struct inet_address {
    sa_family_t family = AF_UNSPEC;
    union {
        in_addr v4;
        in6_addr v6;
    } ip;

    inet_address() noexcept = default;
    explicit inet_address(const sockaddr_storage& s) noexcept {
        if (s.ss_family == AF_INET) {
            family = AF_INET;
            ip.v4 = reinterpret_cast<const sockaddr_in*>(&s)->sin_addr;
        } else if (s.ss_family == AF_INET6) {
            family = AF_INET6;
            ip.v6 = reinterpret_cast<const sockaddr_in6*>(&s)->sin6_addr;
        }
    }
};

inline std::string format_host(const inet_address& a) {
    char text[INET6_ADDRSTRLEN + 1] = {};
    if (a.family == AF_INET || a.family == AF_INET6) ::inet_ntop(a.family, &a.ip, text, sizeof text);
    return text;
}
inline std::string format_host(const sockaddr_storage& s) { return format_host(inet_address(s)); }

inline int format_port(const sockaddr_storage& s) noexcept {
    if (s.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&s)->sin_port);
    if (s.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&s)->sin6_port);
    return 0;
}

}  // namespace tisock::detail
