// The socket's public vocabulary: its states and the options it is created with.
// (Separate from detail/socket_impl.hpp so that code naming these types does not pull in
// the reactor.)
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

namespace tisock {

enum class state { initialized, connected, listening, closed, error };

inline std::string_view to_string(state s) {
    switch (s) {
        case state::initialized: return "initialized";
        case state::connected: return "connected";
        case state::listening: return "listening";
        case state::closed: return "closed";
        case state::error: return "error";
    }
    return "unknown";
}

class tcp;
using error_callback = std::function<void(tcp& socket, const std::string& error, std::error_code code)>;

struct tcp_options {
    std::string host{};
    int port = 0;
    std::chrono::milliseconds timeout{0};  // 0 = none; bounds connect and each write
    int listen_queue_size = 128;           // max pending inbound connections
    std::function<void(tcp& socket)> connected{};
    error_callback error{};
    std::function<void(tcp& listener, tcp inbound)> accepted{};
    // listen() sets SO_REUSEPORT (SO_REUSEPORT_LB on FreeBSD): one listener per reactor and
    // thread on one host:port, the kernel spreading new connections among them (Linux).
    bool reuse_port = false;
};

struct accept_options {
    error_callback error{};
    std::chrono::milliseconds timeout{0};
};

}  // namespace tisock
