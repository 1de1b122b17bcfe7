// The operations of a socket: what the two faces (callbacks, awaiters) hand to
// socket_impl, and how an operation reports. Their life, start to report, is in
// socket_impl.hpp: start_*() attach one to its slot, make_pending() makes it wait,
// complete_now()/complete_later() report it, forget() detaches one whose owner is gone.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include <tisock/socket_types.hpp>
#include <tisock/detail/operation.hpp>
#include <tisock/detail/timer_heap.hpp>

namespace tisock::detail {

class socket_impl;

// An owning (reference-counted) pointer to a socket; tcp handles and operations in flight
// hold one. Counting is not atomic: a socket belongs to one reactor thread.
class socket_ref {
public:
    socket_ref() noexcept = default;
    explicit socket_ref(socket_impl* p) noexcept;
    socket_ref(const socket_ref& o) noexcept : socket_ref(o.p_) {}
    socket_ref(socket_ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    socket_ref& operator=(socket_ref o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    ~socket_ref();
    socket_impl* get() const noexcept { return p_; }
    socket_impl* operator->() const noexcept { return p_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }
    void reset() noexcept { socket_ref().swap(*this); }
    void swap(socket_ref& o) noexcept { std::swap(p_, o.p_); }

private:
    socket_impl* p_ = nullptr;
};

enum class op_status : unsigned char {
    idle,     // not started, or finished
    pending,  // registered with its socket, counted as reactor work
    queued,   // finished; its completion waits in the reactor's ready queue
};

// An operation's outcome. Like std::error_code, but "no error" is built without calling
// std::system_category() (an out-of-line call into libstdc++), since an operation is
// constructed per read and per write. The value last: an operation's small fields go in
// the padding after it (socket_op).
class op_error {
public:
    op_error() noexcept = default;
    op_error(std::error_code ec) noexcept : category_(ec ? &ec.category() : nullptr), value_(ec.value()) {}
    explicit operator bool() const noexcept { return value_ != 0; }
    operator std::error_code() const noexcept {
        return category_ != nullptr ? std::error_code(value_, *category_) : std::error_code();
    }
    std::string message() const { return std::error_code(*this).message(); }

private:
    const std::error_category* category_ = nullptr;
    int value_ = 0;
};

enum class op_kind : unsigned char { read, write, connect, accept, shutdown };

// One operation on a socket, in either style. A coroutine's operation lives in its frame
// and report() resumes the coroutine; a callback's operation is allocated per call, and
// its finish function runs the callback and frees it (report()), or only frees it when
// the reactor is destroyed first (discard()).
struct socket_op : operation {
    socket_impl* socket;  // the socket it runs on
    // Keeps the socket alive while the operation is pending or its report is queued (set
    // by socket_impl::hold()). A callback's operation holds it for its whole life.
    socket_ref owner;
    std::size_t bytes = 0;
    [[no_unique_address]] op_error ec;  // status, kind and calls_back_ fill its padding
    op_status status = op_status::idle;
    op_kind kind;

    socket_op(op_kind k, socket_impl& s) noexcept : socket(&s), kind(k) { invoke = &run_queued; }

    // Coroutine style: the operation resumes `h` when it reports.
    void resume_when_done(std::coroutine_handle<> h) noexcept { target_.waiting = h; }
    // Callback style: finish(op, true) runs the callback and frees the operation;
    // finish(op, false) frees it without running anything (the reactor is destroyed).
    using finish_fn = void (*)(socket_op* self, bool run);
    void finish_with(finish_fn f) noexcept {
        target_.finish = f;
        calls_back_ = true;
    }

    // Runs the operation's report: resumes its coroutine or calls its callback.
    void report() {
        if (calls_back_) {
            target_.finish(this, true);
        } else {
            target_.waiting.resume();
        }
    }
    // The reactor is destroyed: a callback's operation is freed; a coroutine's belongs to
    // its frame, which its owner destroys.
    void discard() {
        if (calls_back_) target_.finish(this, false);
    }

private:
    static void run_queued(operation* o, bool run);  // after socket_impl: it settles the socket's count

    bool calls_back_ = false;
    // (Members are laid out in declaration order whatever their access: calls_back_ stays
    // in op_error's padding.)
    union target {
        std::coroutine_handle<> waiting;
        finish_fn finish;
        target() noexcept : finish(nullptr) {}
    } target_;
};

struct read_op : socket_op {
    explicit read_op(socket_impl& s) noexcept : socket_op(op_kind::read, s) {}
    std::span<std::byte> into;
    bool eof = false;
    bool timed = false;  // a timed_read_op: a read deadline (async_read's overload) is armed
};

// async_read(into, limit): a read with its own deadline. Not a socket error when it
// expires: the read ends with timed_out and the socket stays connected.
struct timed_read_op : read_op {
    timed_read_op(socket_impl& s, std::chrono::milliseconds l) noexcept : read_op(s), limit(l) {
        timed = true;
        timer.op = this;
    }
    // Before it starts (an awaiter moved into a combinator): the timer is this copy's.
    timed_read_op(timed_read_op&& o) noexcept : read_op(o), limit(o.limit) { timer.op = this; }
    std::chrono::milliseconds limit;
    struct deadline_timer : timer_node {
        timed_read_op* op = nullptr;
    } timer;
};

struct write_op : socket_op {
    explicit write_op(socket_impl& s) noexcept : socket_op(op_kind::write, s) {}
    std::span<const std::byte> from;
    write_op* next_write = nullptr;
};

struct connect_op : socket_op {
    explicit connect_op(socket_impl& s) noexcept : socket_op(op_kind::connect, s) {}
    std::uint32_t attempt = 0;  // the socket's attempt it waits for (socket_impl::attempt_)
};
struct shutdown_op : socket_op {
    explicit shutdown_op(socket_impl& s) noexcept : socket_op(op_kind::shutdown, s) {}
};

struct accept_op : socket_op {
    explicit accept_op(socket_impl& s) noexcept : socket_op(op_kind::accept, s) {}
    accept_options options;
    socket_ref inbound;  // the result
};

}  // namespace tisock::detail
