// What `co_await a` gives, for any awaitable, and how results are held by sync_wait and the
// combinators (API.md v3: void is std::monostate, T& is std::reference_wrapper<T>).
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <exception>
#include <functional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace tisock::detail {

// The awaiter `co_await a` uses: a's member or free operator co_await, or a itself.
template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
        return std::forward<A>(a).operator co_await();
    } else if constexpr (requires { operator co_await(std::forward<A>(a)); }) {
        return operator co_await(std::forward<A>(a));
    } else {
        return std::forward<A>(a);
    }
}

// The type of `co_await a` for an expression of type A (A& for a named lvalue).
template <class A>
using await_result_t = decltype(get_awaiter(std::declval<A>()).await_resume());

// How a result of type R is held in tuples, variants, vectors and tisock::result.
template <class R>
struct stored {
    using type = std::remove_cvref_t<R>;
};
template <>
struct stored<void> {
    using type = std::monostate;
};
template <class T>
struct stored<T&> {
    using type = std::reference_wrapper<T>;
};
template <class R>
using stored_t = typename stored<R>::type;

// How sync_wait and as_result hand an rvalue-reference result back: by value.
template <class R>
using returned_t = std::conditional_t<std::is_rvalue_reference_v<R>, std::remove_reference_t<R>, R>;

// What a combinator keeps of an argument: an lvalue is referenced, an rvalue moved in.
template <class A>
using kept_t = std::conditional_t<std::is_lvalue_reference_v<A>, A, std::remove_cvref_t<A>>;

// A std::system_error with operation_canceled: a cancelled operation.
inline bool is_cancellation(const std::exception_ptr& e) noexcept {
    if (!e) return false;
    try {
        std::rethrow_exception(e);
    } catch (const std::system_error& error) {
        return error.code() == std::errc::operation_canceled;
    } catch (...) {
        return false;
    }
}

}  // namespace tisock::detail
