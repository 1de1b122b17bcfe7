// Error conventions of tisock (see README "Errors"):
//  - misuse in the wrong state          -> tisock::state_error (a std::logic_error)
//  - invalid host / port / arguments    -> std::invalid_argument naming the problem
//  - synchronous system failures        -> std::system_error with the OS error code
//  - asynchronous failures              -> std::error_code (callbacks) or std::system_error (co_await)
//  - name resolution failures           -> codes in tisock::resolver_category() (gai_strerror text)
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <netdb.h>

#include <stdexcept>
#include <string>
#include <system_error>

namespace tisock {

// Thrown when an operation is not allowed in the object's current state. The object is
// left exactly as it was.
class state_error : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

namespace detail {
class resolver_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tisock.resolver"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
};
}  // namespace detail

// The category of getaddrinfo() failures (EAI_* values); message() is gai_strerror's.
inline const std::error_category& resolver_category() noexcept {
    static const detail::resolver_category_impl category;
    return category;
}

namespace detail {
inline std::error_code errno_code(int err) noexcept { return {err, std::system_category()}; }

[[noreturn]] inline void throw_errno(int err, const char* what) {
    throw std::system_error(errno_code(err), what);
}
}  // namespace detail

}  // namespace tisock
