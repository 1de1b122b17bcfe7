// tisock::tcp - Titanium's Ti.Network.Socket.TCP, with callbacks and with co_await.
//
// A tcp is a reference-counted handle: copies refer to the same socket, == compares
// identity, and the socket closes silently when the last handle and the last operation in
// flight are gone. The lifecycle lives in detail/socket_impl.hpp; this file is the two
// faces over it: the spec's callback functions (with the Ti.IOStream read/write) and the
// awaitables. Both start the same operations, so no transition is coded twice.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <netinet/tcp.h>

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>

#include <tisock/buffer.hpp>
#include <tisock/detail/block_cache.hpp>
#include <tisock/detail/range.hpp>
#include <tisock/detail/socket_impl.hpp>
#include <tisock/detail/stop_scope.hpp>
#include <tisock/reactor.hpp>

namespace tisock {

struct io_event;
using io_callback = std::function<void(const io_event&)>;

namespace detail {

// What the rest of the library may ask a handle that users cannot.
struct tcp_access {
    static bool read_pending(const tcp& s) noexcept;
    static void check_can_write(const tcp& s, const char* what);
};

// The coroutine face of an operation: it lives in the awaiting coroutine's frame, so
// starting and completing it allocates nothing. Thin: the operation itself, no callback,
// no timer (a timed read is its own type). It takes a reference to its socket only when
// it has to wait (socket_impl::hold), and it owns nothing else before it starts, so g++
// 12's bitwise relocation of awaiters held in aggregate temporaries is harmless.
//
// It starts in await_suspend, where the awaiting coroutine's stop scope is known (API.md
// v3): an operation whose task is already stopped does not start and reports
// operation_canceled; one that waits is attached to the scope (a cancel hook, no stop
// callback), and a stop cancels it by socket_impl's rules - a pending one is withdrawn, a
// finished one whose report is queued gives back what it obtained. A coroutine with no
// scope (no token, or a foreign coroutine type) pays one null test.
template <class Op>
class coroutine_op : protected Op, private cancel_hook {
public:
    // Movable until awaited (combinators store their arguments); never after it started.
    coroutine_op(coroutine_op&& o) noexcept : Op(static_cast<Op&&>(o)) {}
    coroutine_op& operator=(coroutine_op&&) = delete;
    ~coroutine_op() {
        // Only an operation that has not reported can still be attached to a scope.
        if (this->status != op_status::idle) [[unlikely]] abandon();
    }
    bool await_ready() const noexcept { return false; }

protected:
    using Op::Op;

    // await_suspend's body: `start(stopped)` is the socket's start_* (true: it completed
    // at once, and the coroutine goes on without suspending). Without a scope it is a null
    // test and the start; everything about tokens is out of line.
    template <class P, class Start>
    bool suspend(std::coroutine_handle<P> h, Start start) {
        this->resume_when_done(h);
        if (stop_scope* observed = scope_of(h); observed != nullptr) [[unlikely]] return suspend_observing(*observed, start);
        return !start(false);
    }
    // First thing in await_resume: the scope no longer reaches the operation.
    void leave_scope() noexcept { stop_scope::detach(*this); }

    void throw_if_failed(const char* what) const {
        if (this->ec) [[unlikely]] throw std::system_error(this->ec, what);
    }

private:
    template <class Start>
    [[gnu::noinline]] bool suspend_observing(stop_scope& observed, Start start) {
        // Stopped: as the reactor has processed it, or a root's token already stopped and
        // its stop still on its way (the operation must not start then either).
        const bool stopped = observed.stopped() || observed.stop_requested();
        if (start(stopped)) return false;
        if (!stopped) observe(observed);
        return true;
    }

    // The frame is destroyed while the operation waits or its report is queued.
    [[gnu::cold, gnu::noinline]] void abandon() noexcept {
        stop_scope::detach(*this);
        this->socket->forget(*this);
    }
    [[gnu::noinline]] void observe(stop_scope& observed) noexcept {
        this->cancel = [](cancel_hook* h) noexcept {
            auto& self = static_cast<coroutine_op&>(*h);
            if (self.status == op_status::pending) {
                self.socket->cancel(self);
            } else {
                self.socket->cancel_finished(self);
            }
        };
        observed.attach(*this);
    }
};

}  // namespace detail

class tcp {
public:
    tcp(reactor& r, tcp_options options = {}) : impl_(new detail::socket_impl(r, std::move(options))) {}
    // An empty handle (as is a moved-from one): state() is closed, the getters return their
    // defaults, close(ec) reports not_connected, and every other call throws state_error.
    tcp() noexcept = default;

    // A handle: like a JavaScript object reference, a const handle still refers to a
    // socket that can be used, so the operations are const member functions.

    friend bool operator==(const tcp& a, const tcp& b) noexcept { return a.impl_.get() == b.impl_.get(); }

    // ---- Properties ------------------------------------------------------------------------
    tisock::state state() const noexcept { return impl_ ? impl_->current_state() : tisock::state::closed; }
    const std::string& host() const {
        static const std::string none;
        return impl_ ? impl_->host() : none;
    }
    int port() const noexcept { return impl_ ? impl_->port() : 0; }
    std::chrono::milliseconds timeout() const noexcept { return impl_ ? impl_->timeout() : std::chrono::milliseconds(0); }
    int listen_queue_size() const noexcept {
        return impl_ ? impl_->listen_queue_size() : detail::socket_impl::defaults().listen_queue_size;
    }
    bool is_connecting() const noexcept { return impl_ && impl_->is_connecting(); }
    std::string local_host() const { return impl_ ? impl_->local_host() : std::string(); }
    int local_port() const { return impl_ ? impl_->local_port() : 0; }
    int native_handle() const noexcept { return impl_ ? impl_->native_handle() : -1; }
    reactor& get_reactor() const { return impl().owner(); }

    // host, port and timeout throw state_error while connected, listening or connecting.
    void set_host(std::string host) const { impl().set_host(std::move(host)); }
    void set_port(int port) const { impl().set_port(port); }
    void set_timeout(std::chrono::milliseconds t) const { impl().set_timeout(t); }
    void set_listen_queue_size(int n) const { impl().set_listen_queue_size(n); }
    bool reuse_port() const noexcept { return impl_ && impl_->reuse_port(); }
    // Throws state_error while listening or connecting.
    void set_reuse_port(bool on) const { impl().set_reuse_port(on); }
    void set_connected(std::function<void(tcp&)> f) const { impl().set_connected(std::move(f)); }
    void set_error(error_callback f) const { impl().set_error(std::move(f)); }
    void set_accepted(std::function<void(tcp&, tcp)> f) const { impl().set_accepted(std::move(f)); }

    // Beyond the spec, on connected sockets.
    void set_no_delay(bool on) const { impl().set_socket_option(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, "set_no_delay"); }
    void set_keep_alive(bool on) const { impl().set_socket_option(SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0, "set_keep_alive"); }

    // ---- Spec functions (callback style) ---------------------------------------------------
    void connect() const { impl().start_connect(nullptr); }
    void listen() const { impl().listen(); }
    void accept(accept_options options = {}) const { impl().flag_accept(std::move(options)); }
    void close() const { impl().close(); }
    // As close(), but never throws: where close() would throw state_error nothing changes
    // and `ec` is not_connected. For cleanup paths, where the socket may have failed already.
    void close(std::error_code& ec) const noexcept {
        if (!impl_ || !impl_->can_close()) {
            ec = std::make_error_code(std::errc::not_connected);
            return;
        }
        impl_->close();
        ec.clear();
    }
    void shutdown(std::function<void(tcp&, std::error_code)> done = {}) const;
    // Takes the descriptor out of the socket (API.md v3 "Several cores"): it leaves the
    // poller with nothing in flight and is the caller's (non-blocking, close-on-exec); the
    // socket is closed and no callback runs. A connected or listening socket with nothing
    // pending (a flagged accept() counts) and no bytes kept from a cancelled read; else
    // state_error. A listener's connections not yet accepted are reset, as close() does.
    int release() const { return impl().release_descriptor_to_caller(); }
    // Makes a socket of `r` from a descriptor opened elsewhere: an AF_INET/AF_INET6
    // SOCK_STREAM socket that is listening (state listening, port() the bound port,
    // options.listen_queue_size enforced) or connected (like an accepted socket: host() and
    // port() the peer's; connected never runs). options.host, port and reuse_port are
    // ignored. Data, end of stream and connections already in the kernel are seen by the
    // first read or accept. Anything else: invalid_argument, the descriptor untouched and
    // still the caller's. On r's thread, or before r runs.
    static tcp adopt(reactor& r, int fd, tcp_options options = {}) {
        return tcp(detail::socket_impl::adopt_from_caller(r, fd, std::move(options)));
    }
    // Ends every pending operation of the socket with operation_canceled (API.md v3
    // "Cancellation": a read or accept loses nothing, a half-sent write resets the
    // connection, a connect in flight closes the socket; a flagged accept() is unflagged).
    // Reactor thread only; with nothing pending, an empty handle or the reactor gone, it
    // does nothing. The reports run from the run loop, never inside this call.
    void cancel() const noexcept;

    // ---- Ti.IOStream (callback style) ------------------------------------------------------
    bool is_readable() const noexcept { return state() == tisock::state::connected; }
    bool is_writable() const noexcept { return state() == tisock::state::connected; }
    void read(buffer& into, io_callback callback) const { read(into, 0, into.length(), std::move(callback)); }
    void read(buffer& into, std::size_t offset, std::size_t length, io_callback callback) const;
    void read(buffer&& into, io_callback callback) const = delete;  // the buffer must outlive the read
    void read(buffer&& into, std::size_t offset, std::size_t length, io_callback callback) const = delete;
    void write(buffer data, io_callback callback) const {
        std::size_t n = data.length();
        write(std::move(data), 0, n, std::move(callback));
    }
    void write(buffer data, std::size_t offset, std::size_t length, io_callback callback) const;

    // ---- Coroutine style -------------------------------------------------------------------
    // Each async_* checks its preconditions when called (state_error, invalid_argument), and
    // again when awaited: the state may change in between.
    class [[nodiscard]] connect_awaiter : public detail::coroutine_op<detail::connect_op> {
    public:
        using coroutine_op::coroutine_op;
        connect_awaiter(connect_awaiter&&) noexcept = default;
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return suspend(h, [this](bool stopped) {
                socket->start_connect(this, stopped);
                return false;  // even a loopback connect reports from the run loop
            });
        }
        void await_resume() {
            leave_scope();
            if (std::error_code failure = socket->connect_outcome(*this)) throw std::system_error(failure, "tisock: connect");
        }
    };

    class [[nodiscard]] accept_awaiter : public detail::coroutine_op<detail::accept_op> {
    public:
        explicit accept_awaiter(detail::socket_impl& s) noexcept : coroutine_op(s), constructed_at_(this) {}
        accept_awaiter(detail::socket_impl& s, accept_options o) : coroutine_op(s), constructed_at_(this) {
            options = std::move(o);
        }
        accept_awaiter(accept_awaiter&& o) noexcept : coroutine_op(std::move(o)), constructed_at_(this) {}
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            if (constructed_at_ != this) [[unlikely]] {
                // g++ 12 relocated this awaiter by copying its bytes (see coroutine_op) and
                // will destroy the original too: the options must be this copy's own.
                ::new (static_cast<void*>(&options)) accept_options(constructed_at_->options);
                constructed_at_ = this;
            }
            return suspend(h, [this](bool stopped) { return socket->start_async_accept(*this, stopped); });
        }
        tcp await_resume() {
            leave_scope();
            throw_if_failed("tisock: accept");
            return tcp(std::move(inbound));
        }

    private:
        const accept_awaiter* constructed_at_;
    };

    // async_read's two awaiters: one plain, one with its own deadline (and timer).
    template <class Op>
    class [[nodiscard]] basic_read_awaiter : public detail::coroutine_op<Op> {
    public:
        basic_read_awaiter(basic_read_awaiter&&) noexcept = default;
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return this->suspend(h, [this](bool stopped) { return this->socket->start_read(*this, stopped); });
        }
        std::size_t await_resume() {
            this->leave_scope();
            this->throw_if_failed("tisock: read");
            return this->bytes;
        }

    protected:
        template <class... Limit>
        basic_read_awaiter(detail::socket_impl& s, std::span<std::byte> buf, Limit... limit) noexcept
            : detail::coroutine_op<Op>(s, limit...) {
            this->into = buf;
        }
    };
    class read_awaiter : public basic_read_awaiter<detail::read_op> {
    public:
        read_awaiter(detail::socket_impl& s, std::span<std::byte> buf) noexcept : basic_read_awaiter(s, buf) {}
    };
    class timed_read_awaiter : public basic_read_awaiter<detail::timed_read_op> {
    public:
        timed_read_awaiter(detail::socket_impl& s, std::span<std::byte> buf, std::chrono::milliseconds deadline) noexcept
            : basic_read_awaiter(s, buf, deadline) {}
    };

    class [[nodiscard]] write_awaiter : public detail::coroutine_op<detail::write_op> {
    public:
        write_awaiter(detail::socket_impl& s, std::span<const std::byte> buf) noexcept : coroutine_op(s) { from = buf; }
        write_awaiter(write_awaiter&&) noexcept = default;
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return suspend(h, [this](bool stopped) { return socket->start_write(*this, stopped); });
        }
        std::size_t await_resume() {
            leave_scope();
            throw_if_failed("tisock: write");
            return bytes;
        }
    };

    class [[nodiscard]] shutdown_awaiter : public detail::coroutine_op<detail::shutdown_op> {
    public:
        using coroutine_op::coroutine_op;
        shutdown_awaiter(shutdown_awaiter&&) noexcept = default;
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return suspend(h, [this](bool stopped) { return socket->start_shutdown(*this, stopped); });
        }
        void await_resume() {
            leave_scope();
            throw_if_failed("tisock: shutdown");
        }
    };

    connect_awaiter async_connect() const {
        detail::socket_impl& s = impl();
        (void)s.check_can_connect();
        return connect_awaiter(s);
    }
    accept_awaiter async_accept() const {
        detail::socket_impl& s = impl();
        s.check_can_accept();
        return accept_awaiter(s);  // the default options: nothing to validate or move
    }
    accept_awaiter async_accept(accept_options options) const {
        detail::socket_impl& s = impl();
        s.check_can_accept();
        detail::socket_impl::check_accept_options(options);
        return accept_awaiter(s, std::move(options));
    }
    // Completes with at least one byte, or 0 at end of stream.
    read_awaiter async_read(std::span<std::byte> into) const {
        detail::socket_impl& s = impl();
        s.check_can_read();
        return read_awaiter(s, into);
    }
    // As above; throws timed_out if nothing arrives within `limit` (the socket stays connected).
    timed_read_awaiter async_read(std::span<std::byte> into, std::chrono::milliseconds limit) const {
        detail::socket_impl& s = impl();
        s.check_can_read();
        if (limit.count() <= 0) throw std::invalid_argument("tisock: async_read timeout must be > 0");
        return timed_read_awaiter(s, into, limit);
    }
    // Completes when every byte has been handed to the kernel.
    write_awaiter async_write(std::span<const std::byte> from) const {
        detail::socket_impl& s = impl();
        s.check_can_write("write");
        return write_awaiter(s, from);
    }
    // Beyond the spec: hands the kernel what it takes now, never waiting; returns the bytes
    // written (0 while other writes are queued). For servers that reuse one read buffer
    // across connections and keep only an unsent remainder (as a raw epoll server does).
    std::size_t try_write(std::span<const std::byte> from) const { return impl().try_write(from); }
    shutdown_awaiter async_shutdown() const {
        detail::socket_impl& s = impl();
        s.check_can_shutdown();
        return shutdown_awaiter(s);
    }

private:
    explicit tcp(detail::socket_ref impl) noexcept : impl_(std::move(impl)) {}
    friend class detail::socket_impl;
    friend struct detail::tcp_access;

    detail::socket_impl& impl() const {
        if (!impl_) [[unlikely]] throw_empty();
        return *impl_.get();
    }
    [[noreturn, gnu::cold, gnu::noinline]] static void throw_empty() {
        throw state_error("tisock: an empty tcp handle (default-constructed or moved from)");
    }

    detail::socket_ref impl_;
};

// What a Ti.IOStream read or write callback receives. bytes_processed is -1 at end of
// stream (success == true) and on failure (success == false, code and error set).
struct io_event {
    tcp source;
    std::int64_t bytes_processed;
    bool success;
    std::error_code code;
    std::string error;
};

namespace detail {

// The callback face of an operation: allocated per call, freed after its callback ran.
template <class Op, class Callback>
struct callback_op : Op, recycled_allocation {
    Callback callback;

    // One operation per read and per write: recycled per thread (recycled_allocation).
    callback_op(socket_ref s, Callback cb) : Op(*s.get()), callback(std::move(cb)) {
        static_assert(alignof(callback_op) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
        this->owner = std::move(s);
    }

    // In the function given to finish_with(): the operation is freed when this returns.
    static std::unique_ptr<callback_op> take(socket_op* o) noexcept {
        return std::unique_ptr<callback_op>(static_cast<callback_op*>(o));
    }

    // Reports through the queue when the operation ended inside the starting call.
    template <class Starter>
    static void start(std::unique_ptr<callback_op> op, Starter starter) {
        socket_impl* s = op->owner.get();
        bool done = starter(*s, *op);
        callback_op* raw = op.release();
        if (done && raw->status == op_status::idle) s->complete_later(*raw);
    }
};

inline io_event make_io_event(const socket_op& op, tcp source, bool end_of_stream) {
    io_event e{std::move(source), -1, !op.ec, op.ec, {}};
    if (op.ec) {
        e.error = op.ec.message();
    } else if (!end_of_stream) {
        e.bytes_processed = std::int64_t(op.bytes);
    }
    return e;
}

inline bool tcp_access::read_pending(const tcp& s) noexcept { return s.impl_ && s.impl_->read_pending(); }
inline void tcp_access::check_can_write(const tcp& s, const char* what) { s.impl().check_can_write(what); }

inline void socket_impl::notify_connected() {
    if (!created_ || !created_->connected) return;
    tcp self(socket_ref(this));
    auto callback = created_->connected;  // the callback may replace itself
    callback(self);
}

inline void socket_impl::queue_error_notification(std::error_code ec) {
    loop().defer_call([keep = socket_ref(this), ec, attempt = attempt_] {
        if (!keep->error_ || keep->attempt_ != attempt) return;
        tcp self(keep);
        auto callback = keep->error_;
        callback(self, ec.message(), ec);
    });
}

inline void socket_impl::deliver_flagged_accept(accept_op* op) {
    socket_ref listener = std::move(op->owner);  // the one-shot flag is consumed
    socket_ref inbound = std::move(op->inbound);
    if (!inbound) {
        // The connection could not be registered (it is closed): stay flagged for the next.
        if (state_ == state::listening && accepting_ == nullptr) {
            op->owner = listener;
            begin_accept(op);
        }
        return;
    }
    if (!created_->accepted) return;  // nobody takes it: the inbound socket closes
    tcp self(listener);
    auto callback = created_->accepted;
    callback(self, tcp(std::move(inbound)));
}

}  // namespace detail

inline void tcp::read(buffer& into, std::size_t offset, std::size_t length, io_callback callback) const {
    length = detail::checked_slice("tcp::read", "offset", "length", "into", into.length(), offset, length);
    using op_type = detail::callback_op<detail::read_op, io_callback>;
    auto op = std::make_unique<op_type>(detail::socket_ref(&impl()), std::move(callback));
    op->into = into.span().subspan(offset, length);
    op->finish_with([](detail::socket_op* o, bool run) {
        auto self = op_type::take(o);
        if (!run) return;
        io_event e = detail::make_io_event(*self, tcp(self->owner), self->eof);
        self->callback(e);
    });
    op_type::start(std::move(op), [](detail::socket_impl& s, detail::read_op& r) { return s.start_read(r); });
}

inline void tcp::write(buffer data, std::size_t offset, std::size_t length, io_callback callback) const {
    length = detail::checked_slice("tcp::write", "offset", "length", "data", data.length(), offset, length);
    struct write_with_buffer : detail::write_op {
        using write_op::write_op;
        buffer owned;  // the write owns its bytes, so temporaries are safe
    };
    using op_type = detail::callback_op<write_with_buffer, io_callback>;
    auto op = std::make_unique<op_type>(detail::socket_ref(&impl()), std::move(callback));
    op->owned = std::move(data);
    op->from = std::as_const(op->owned).span().subspan(offset, length);
    op->finish_with([](detail::socket_op* o, bool run) {
        auto self = op_type::take(o);
        if (!run) return;
        io_event e = detail::make_io_event(*self, tcp(self->owner), false);
        if (self->callback) self->callback(e);
    });
    op_type::start(std::move(op), [](detail::socket_impl& s, detail::write_op& w) { return s.start_write(w); });
}

inline void tcp::cancel() const noexcept {
    if (impl_) impl_->cancel_all();
}

inline void tcp::shutdown(std::function<void(tcp&, std::error_code)> done) const {
    using op_type = detail::callback_op<detail::shutdown_op, std::function<void(tcp&, std::error_code)>>;
    auto op = std::make_unique<op_type>(detail::socket_ref(&impl()), std::move(done));
    op->finish_with([](detail::socket_op* o, bool run) {
        auto self = op_type::take(o);
        if (!run || !self->callback) return;
        tcp source(self->owner);
        self->callback(source, self->ec);
    });
    op_type::start(std::move(op), [](detail::socket_impl& s, detail::shutdown_op& o) { return s.start_shutdown(o); });
}

}  // namespace tisock
