// The socket's lifecycle: the one state machine behind tisock::tcp.
//
// Both faces of the socket drive this file: the callback functions (connect, listen,
// accept, close, read, write) and the awaitables (async_connect, async_accept, async_read,
// async_write). An operation is a socket_op (socket_op.hpp); the two styles differ only in
// what its report does (resume a coroutine, or call a std::function and free the op).
// Every assignment of `state_` is in this file; the mechanics live next to it: the write
// FIFO (write_queue.hpp), the exact listen queue (accept_queue.hpp) and an outbound
// connect's addresses (connector.hpp). "An operation's life" below walks one operation
// from start to report.
//
// Rules that shape the code:
//  - Callbacks never run inside the call that started an operation: anything that
//    finishes or fails during such a call is queued on the reactor (libuv's delayed_error).
//    Only completions observed from the run loop (readiness, timers, resolver results)
//    run directly.
//  - A socket stays alive while it runs a user callback (a `socket_ref` on the stack), so a
//    callback may close its socket or drop the last handle to it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <tisock/error.hpp>
#include <tisock/reactor.hpp>
#include <tisock/socket_types.hpp>
#include <tisock/detail/accept_queue.hpp>
#include <tisock/detail/address.hpp>
#include <tisock/detail/connector.hpp>
#include <tisock/detail/block_cache.hpp>
#include <tisock/detail/socket_op.hpp>
#include <tisock/detail/write_queue.hpp>
#include <tisock/detail/resolver.hpp>
#include <tisock/detail/sys.hpp>

namespace tisock::detail {

// A unique_ptr deleter that deletes out of line: what a socket rarely has (a listener's or
// a connect's state) costs its destructor a null check, not an inlined destructor's frame.
template <class T>
struct cold_delete {
    [[gnu::cold, gnu::noinline]] void operator()(T* p) const noexcept { delete p; }
};
template <class T>
using rare_ptr = std::unique_ptr<T, cold_delete<T>>;

// The options an accepted socket does without: a socket keeps its timeout, port and error
// callback itself, and the rest here, made only for the sockets the user creates (and for
// an accepted one on its first host() or setter that needs it).
struct created_options {
    std::string host;
    int listen_queue_size;
    std::function<void(tcp&)> connected;
    std::function<void(tcp&, tcp)> accepted;
    bool reuse_port;
};

// A socket's own readiness and timer hooks are bases of it, so that their callbacks reach
// the socket with a static_cast instead of a back pointer in each (the readable one first,
// at offset 0: the cast costs nothing on the path of every read).
struct readable_hook : io_waiter {};
struct writable_hook : io_waiter {};
struct deadline_hook : timer_node {};  // connect timeout, or the timeout of the head write

// One per connection, recycled per thread (recycled_allocation): a server that closes a
// connection and accepts the next allocates nothing for it.
class socket_impl final : private readable_hook,
                          public reactor_member,
                          public recycled_allocation,
                          private writable_hook,
                          private deadline_hook {
public:
    socket_impl(reactor& r, tcp_options options)
        : reactor_(&r),
          timeout_(options.timeout),
          port_(options.port),
          error_(std::move(options.error)),
          created_(new created_options{std::move(options.host), options.listen_queue_size,
                                       std::move(options.connected), std::move(options.accepted), options.reuse_port}) {
        // The options are validated as their setters do.
        check_queue_size(created_->listen_queue_size);
        check_timeout(timeout_);
        attach_to(r);
    }

    // An accepted connection (its descriptor is adopted next): built in place, without a
    // tcp_options to move from. The accept options were validated when the accept started.
    socket_impl(reactor& r, const pending_connection& c, const accept_options& accepted)
        : reactor_(&r), inbound_(true), timeout_(accepted.timeout), port_(c.port), unformatted_peer_(c.peer) {
        // host(): formatted on first use
        if (accepted.error) error_ = accepted.error;
        attach_to(r);
    }

    socket_impl(const socket_impl&) = delete;
    socket_impl& operator=(const socket_impl&) = delete;

    // The last handle and the last operation are gone: close silently.
    ~socket_impl() {
        if (reactor_ == nullptr) return;
        // Usually close() or a failure released everything already. (Nothing is
        // connecting: a connect holds a reference.)
        if (d_ != nullptr || connect_ || listener_ || deadline()->armed()) (void)release_resources();
        loop().remove_member(this);
    }

    void add_ref() noexcept { ++refs_; }
    void release() noexcept {
        if (--refs_ == 0) delete this;
    }

    // ---- Properties ------------------------------------------------------------------------

    state current_state() const noexcept { return state_; }
    bool is_connecting() const noexcept { return connecting_; }
    bool read_pending() const noexcept { return reading_ != nullptr || read_report_queued_; }
    // The options' values when a socket has none of its own (an empty handle, or the
    // created_options of an accepted socket that never needed them).
    static const tcp_options& defaults() noexcept {
        static const tcp_options none;
        return none;
    }
    int port() const noexcept { return port_; }
    std::chrono::milliseconds timeout() const noexcept { return timeout_; }
    int listen_queue_size() const noexcept {
        return created_ ? created_->listen_queue_size : defaults().listen_queue_size;
    }
    // An inbound socket's host is its peer's address, turned into text only when asked for
    // (inet_ntop costs more than the rest of an accept).
    const std::string& host() {
        if (unformatted_peer_.family != AF_UNSPEC) [[unlikely]] format_peer();
        return created_ ? created_->host : defaults().host;
    }
    int native_handle() const noexcept { return d_ != nullptr ? d_->fd : -1; }
    reactor& owner() const {
        check_reactor();
        return *reactor_;
    }

    // host, port and timeout are fixed while connected, listening or connecting.
    void set_host(std::string h) {
        check_settable("host");
        unformatted_peer_.family = AF_UNSPEC;  // a lazily formatted peer address is replaced
        created().host = std::move(h);
    }
    void set_port(int p) {
        check_settable("port");
        port_ = p;
    }
    void set_timeout(std::chrono::milliseconds t) {
        check_timeout(t);
        check_settable("timeout");
        timeout_ = t;
    }
    static void check_queue_size(int n) {
        if (n < 0) throw std::invalid_argument("tisock: listen_queue_size must be >= 0");
    }
    static void check_timeout(std::chrono::milliseconds t) {
        if (t.count() < 0) throw std::invalid_argument("tisock: timeout must be >= 0");
    }
    void set_listen_queue_size(int n) {
        check_queue_size(n);
        created().listen_queue_size = n;
    }
    bool reuse_port() const noexcept { return created_ && created_->reuse_port; }
    void set_reuse_port(bool on) {
        if (state_ == state::listening || connecting_) {
            throw state_error(std::string("tisock: cannot set reuse_port while the socket is ") +
                              std::string(connecting_ ? "connecting" : to_string(state_)));
        }
        created().reuse_port = on;
    }
    void set_connected(std::function<void(tcp&)> f) { created().connected = std::move(f); }
    void set_error(error_callback f) { error_ = std::move(f); }
    void set_accepted(std::function<void(tcp&, tcp)> f) { created().accepted = std::move(f); }

    std::string local_host() const { return local_address().first; }
    int local_port() const { return local_address().second; }

    void set_socket_option(int level, int name, int value, const char* what) {
        check_connected(what);
        if (sys::result r = sys::set_int_option(d_->fd, level, name, value); !r) throw_errno(r.error, what);
    }

    // ---- connect ---------------------------------------------------------------------------

    // connect() and listen() start a socket's life: only from initialized, closed or error,
    // never on an accepted socket.
    void check_can_start(const char* what) const {
        check_reactor();
        if (inbound_) {
            throw state_error(std::string("tisock: ") + what + " on an accepted socket (accepted sockets are never reused)");
        }
        if (connecting_) throw state_error(std::string("tisock: ") + what + " while a connect is in flight");
        if (state_ == state::connected || state_ == state::listening) {
            throw state_error(std::string("tisock: ") + what + " on a " + std::string(to_string(state_)) + " socket");
        }
    }

    // The preconditions of each operation, checked when it starts and, for the awaitables,
    // already when they are made (API.md: violations throw state_error at the call).
    host_spec check_can_connect() const {
        check_can_start("connect()");
        check_port(port_, port_use::connect);
        return classify_host(created_->host, port_);
    }
    void check_can_accept() const {
        check_listening("async_accept()");
        if (accepting_ != nullptr) [[unlikely]] throw_misuse("tisock: an accept is already pending on this listener");
    }
    void check_can_read() const {
        check_connected("read");
        if (read_pending()) [[unlikely]] throw_misuse("tisock: a read is already pending on this socket");
    }
    void check_can_write(const char* what) const {
        check_connected(what);
        if (shutdown_requested_) [[unlikely]] throw_misuse("tisock: write after shutdown()");
    }
    void check_can_shutdown() const {
        check_connected("shutdown()");
        if (shutdown_requested_) throw state_error("tisock: shutdown() was already called");
    }

    void start_connect(connect_op* waiting, bool stopped = false) {
        host_spec host = check_can_connect();
        if (stopped) [[unlikely]] {  // the socket stays as it was: no attempt, no descriptor
            (void)refuse_stopped(*waiting);
            return;
        }

        state_ = state::initialized;  // a closed or failed socket is re-initialized
        ++attempt_;
        connecting_ = true;
        connect_keepalive_ = socket_ref(this);  // a connect in flight keeps its socket alive
        connect_waiter_ = waiting;
        if (waiting != nullptr) {
            waiting->status = op_status::pending;
            waiting->attempt = attempt_;
            hold(*waiting);
        }
        loop().add_work();  // the connect itself, in either style
        if (timeout_.count() > 0) loop().schedule_timer(deadline(), clock::now() + timeout_);
        if (!connect_) connect_.reset(new connector);
        if (host.numeric) {
            connect_->start_literal(host.literal);
            try_next_candidate(true);
            return;
        }
        try {
            connect_->start_lookup(created_->host, port_, *reactor_, [this](resolve_job& done) { on_resolved(done); });
        } catch (...) {  // no worker could start: the connect never began
            if (connect_waiter_ != nullptr) std::exchange(connect_waiter_, nullptr)->status = op_status::idle;
            socket_ref keep = end_connecting();
            state_ = state::error;
            throw;
        }
    }

    // ---- listen / accept -------------------------------------------------------------------

    // Blocking. Past the state check, every failure - a bad host or port, a wildcard
    // address, resolution, bind, listen - throws and leaves the socket in error (the spec:
    // listen "throws an exception on error and sets the socket state to ERROR").
    void listen() {
        check_can_start("listen()");
        try {
            open_listening_socket();
        } catch (...) {
            state_ = state::error;
            throw;
        }
        state_ = state::listening;
        ++attempt_;
        if (port_ == 0) port_ = local_port();
    }

    // ---- release / adopt: a descriptor leaves a socket, or comes into one -----------------

    // tcp::release(): the descriptor leaves the poller with nothing in flight and is the
    // caller's; the socket is closed, and no callback runs. A listener's connections taken
    // off the kernel queue but not accepted are reset, as close() does.
    int release_descriptor_to_caller() {
        check_reactor();
        if (state_ != state::connected && state_ != state::listening) {
            throw state_error("tisock: release() on a " + std::string(to_string(state_)) +
                              " socket (only a connected or listening socket has a descriptor to give)");
        }
        if (read_pending() || accepting_ != nullptr || !writes_.empty() || shutdown_ != nullptr) {
            throw state_error("tisock: release() while an operation is pending (cancel it, or wait for it)");
        }
        if (kept_) throw state_error("tisock: release() while bytes a cancelled read obtained wait for the next read");
        socket_ref keep(this);
        cancel_backoff();
        reset_pending();
        const int fd = loop().release_descriptor(std::exchange(d_, nullptr));
        state_ = state::closed;
        return fd;
    }

    // tcp::adopt(): a descriptor made elsewhere (a listener passed by a parent process, as
    // systemd's LISTEN_FDS; a connection accept()ed on another thread) becomes a socket of
    // `r`. Checked before anything changes: on invalid_argument the descriptor is untouched.
    static socket_ref adopt_from_caller(reactor& r, int fd, tcp_options options) {
        check_queue_size(options.listen_queue_size);
        check_timeout(options.timeout);
        sockaddr_storage local{};
        int type = 0;
        socklen_t size = sizeof type;
        if (fd < 0 || !sys::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) || type != SOCK_STREAM ||
            !sys::getsockname(fd, local) || (local.ss_family != AF_INET && local.ss_family != AF_INET6)) {
            throw std::invalid_argument("tisock: adopt() needs an open AF_INET or AF_INET6 SOCK_STREAM descriptor");
        }
        int listening = 0;
        size = sizeof listening;
        const bool is_listener = sys::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) && listening != 0;
        sockaddr_storage peer{};
        if (!is_listener && !sys::getpeername(fd, peer)) {
            throw std::invalid_argument("tisock: adopt() needs a listening or a connected socket");
        }
        if (sys::result made = sys::set_cloexec_nonblock(fd); !made) throw_errno(made.error, "tisock: adopt()");
        socket_ref s;
        if (is_listener) {
            options.host.clear();
            options.reuse_port = false;
            s = socket_ref(new socket_impl(r, std::move(options)));
            s->port_ = format_port(local);
            s->make_listener_state();
        } else {
            s = socket_ref(new socket_impl(r, pending_connection(fd, peer), accept_options{std::move(options.error), options.timeout}));
        }
        if (std::error_code ec = s->adopt_descriptor(fd, false)) throw std::system_error(ec, "tisock: adopt()");
        if (is_listener) {
            s->d_->reader = &s->listener_->readable;
            s->state_ = state::listening;
            ++s->attempt_;
        } else {
            s->state_ = state::connected;
        }
        return s;
    }

    static void check_accept_options(const accept_options& o) { check_timeout(o.timeout); }

    // Callback accept(): flags the listener for the next connection (one-shot).
    void flag_accept(accept_options options) {
        check_listening("accept()");
        check_accept_options(options);
        accept_op& flagged = listener_->flagged_accept;
        if (accepting_ != nullptr && accepting_ != &flagged) {
            throw state_error("tisock: accept() while async_accept() is pending (they share one slot)");
        }
        flagged.options = std::move(options);  // a repeated call replaces the options
        if (accepting_ == &flagged) return;
        flagged.owner = socket_ref(this);  // an armed listener keeps itself alive
        flagged.ec = {};
        flagged.finish_with([](socket_op* op, bool run) {
            if (!run) {
                op->owner.reset();
                return;
            }
            op->socket->deliver_flagged_accept(static_cast<accept_op*>(op));
        });
        begin_accept(&flagged);
    }

    // async_accept(): true if a connection was handed over at once.
    bool start_async_accept(accept_op& op, bool stopped = false) {
        check_can_accept();
        if (stopped) [[unlikely]] return refuse_stopped(op);
        if (!listener_->pending.empty()) {
            op.inbound = adopt_pending(op.options, op.ec);
            return true;
        }
        begin_accept(&op);
        return false;
    }

    // ---- read ------------------------------------------------------------------------------

    // True if the read completed at once (op.bytes / op.ec / op.eof set). Otherwise the
    // read waits in the socket's one read slot; the descriptor's reader is the socket's
    // for as long as it is connected, so waiting costs no registration.
    bool start_read(read_op& op, bool stopped = false) {
        check_can_read();
        if (stopped) [[unlikely]] return refuse_stopped(op);
        // (An operation is started once, freshly built: its result fields are already clear.)
        if (op.into.empty()) [[unlikely]] return true;
        if (kept_ != nullptr) [[unlikely]] {
            read_kept(op);
            return true;
        }
        if (d_->read_ready && read_at_once(op)) return true;
        reading_ = &op;
        make_pending(op);
        if (op.timed) [[unlikely]] arm_read_deadline(static_cast<timed_read_op&>(op));
        return false;
    }

    // ---- write -----------------------------------------------------------------------------

    // True if the write completed at once. A write with nothing queued ahead of it hands
    // the kernel what it will take before returning.
    bool start_write(write_op& op, bool stopped = false) {
        check_can_write("write");
        if (stopped) [[unlikely]] return refuse_stopped(op);
        if (writes_.empty()) {
            switch (write_now(op)) {
                case io_result::done: return true;
                case io_result::failed:
                    fail_write_at_once(op);
                    return true;
                case io_result::would_block: break;
            }
        }
        enqueue_write(op);
        return false;
    }

    // Writes what the kernel takes now, never waiting (libuv's uv_try_write): returns the
    // bytes written, 0 when other writes are queued (FIFO order holds) or the kernel takes
    // nothing. A failure fails the socket as any write would, and throws.
    std::size_t try_write(std::span<const std::byte> from) {
        check_can_write("try_write");
        if (!writes_.empty() || from.empty()) return 0;
        std::size_t sent = 0;
        if (int error = send_some(from, sent); error != 0) [[unlikely]] fail_try_write(error);
        return sent;
    }

    // ---- shutdown --------------------------------------------------------------------------

    // True if the sending side was shut down at once (nothing queued).
    bool start_shutdown(shutdown_op& op, bool stopped = false) {
        check_can_shutdown();
        if (stopped) [[unlikely]] return refuse_stopped(op);
        shutdown_requested_ = true;
        if (writes_.empty()) {
            shut_down_sending(op);
            return true;
        }
        shutdown_ = &op;
        make_pending(op);
        return false;
    }

    // ---- close -----------------------------------------------------------------------------

    bool can_close() const noexcept {
        return reactor_ != nullptr && (state_ == state::connected || state_ == state::listening || connecting_);
    }
    // Blocking close: on return the descriptor is closed and the state is closed. Pending
    // operations end with operation_canceled; no error callback runs.
    void close() {
        check_reactor();
        if (!can_close()) {
            throw state_error("tisock: close() on a " + std::string(to_string(state_)) +
                              " socket (only connected, listening or connecting sockets can be closed)");
        }
        socket_ref keep(this);
        state_ = state::closed;
        finish_all(std::make_error_code(std::errc::operation_canceled));
    }

    // ---- An operation's life --------------------------------------------------------------
    //
    // start_*() (above) checks the preconditions and either completes the operation at
    // once (the caller reports it: the coroutine goes on, a callback is queued) or attaches
    // it to its slot - reading_, accepting_, connect_waiter_, writes_, shutdown_ - with
    // make_pending(): status pending, one unit of reactor work, its socket held alive.
    // Readiness, a timer or the resolver then ends it: the slot lets go of it, the work unit
    // is returned, and it reports with complete_now() from the run loop, or
    // complete_later() through the ready queue (from inside a user's call, behind another
    // queued report of the socket, or with an error: finish_pending()). A socket's failure
    // or close() ends every attached operation at once (finish_all()). forget() detaches
    // one whose coroutine frame is destroyed; abandon_reactor() drops them all, reporting
    // nothing, when the reactor goes first.

    // Completion from inside a user's call (or behind a queued report): through the ready
    // queue. A read that obtained something stays the socket's one read until its report
    // has run (a second read before then could deliver later bytes first); one that ended
    // with an error obtained nothing (cancelled, timed out, or the socket failed).
    void complete_later(socket_op& op) {
        hold(op);
        op.status = op_status::queued;
        ++reports_queued_;
        if (holds_read_order(op)) read_report_queued_ = true;
        loop().defer(&op);
    }
    // A queued report runs, or is dropped without running.
    void report_left_queue(socket_op& op) noexcept {
        op.status = op_status::idle;
        --reports_queued_;
        if (holds_read_order(op)) read_report_queued_ = false;
    }
    static bool holds_read_order(const socket_op& op) noexcept { return op.kind == op_kind::read && !op.ec; }

    // A pending operation whose owner goes away (its coroutine frame is destroyed).
    void forget(socket_op& op) noexcept {
        if (op.status == op_status::queued) {
            if (reactor_ != nullptr) loop().cancel_deferred(&op);
            report_left_queue(op);
            return;
        }
        if (op.status != op_status::pending) return;
        op.status = op_status::idle;
        if (reactor_ == nullptr) return;
        loop().remove_work();
        if (&op == connect_waiter_) loop().add_work();  // the connect goes on without its waiter
        detach(op);
    }

    // ---- Cancellation (API.md v3) ----------------------------------------------------------
    //
    // A cancelled operation ends with operation_canceled, reported through the queue (never
    // inside the call that cancels), and leaves the socket as API.md says: a read or an
    // accept has consumed nothing (this model makes the system call only when it completes
    // the operation), a write none of whose bytes were sent and a shutdown are withdrawn, a
    // connect in flight is closed, and a write cancelled half-sent fails the socket with a
    // reset, since the byte stream can no longer be framed.

    // tcp::cancel(): every pending operation of the socket.
    void cancel_all() {
        if (reactor_ == nullptr) return;
        socket_ref keep(this);
        if (connecting_) {
            close();
            return;
        }
        if (write_op* head = writes_.front(); head != nullptr && head->bytes > 0) {
            abort_half_sent_write(*head);
            return;
        }
        if (reading_ != nullptr) cancel(*reading_);
        if (accepting_ != nullptr) cancel(*accepting_);
        if (shutdown_ != nullptr) cancel(*shutdown_);  // first: withdrawing the writes would start it
        while (write_op* w = writes_.front()) cancel(*w);
    }

    // An operation whose task was stopped before it started: it does not start (the
    // preconditions were checked) and reports operation_canceled from the run loop.
    // Returns false: the caller waits for that report.
    [[gnu::cold, gnu::noinline]] bool refuse_stopped(socket_op& op) {
        op.ec = std::make_error_code(std::errc::operation_canceled);
        complete_later(op);
        return false;
    }

    // One pending operation (its task was stopped); nothing if it is not pending.
    void cancel(socket_op& op) {
        if (op.status != op_status::pending || reactor_ == nullptr) return;
        socket_ref keep(this);
        if (&op == connect_waiter_) {
            close();  // ends the waiter with operation_canceled
            return;
        }
        if (op.kind == op_kind::write && &op == writes_.front() && op.bytes > 0) {
            abort_half_sent_write(static_cast<write_op&>(op));
            return;
        }
        if (&op == shutdown_) shutdown_requested_ = false;  // the sending side stays open
        detach(op);
        if (listener_ != nullptr && &op == &listener_->flagged_accept) {
            unflag_accept();  // the callback style: accepted() is simply not called
            return;
        }
        finish_pending(op, std::make_error_code(std::errc::operation_canceled));
    }

    // An operation that finished, its report still queued, is cancelled (a combinator
    // stopped its task in between). What a read or an accept obtained goes back - the bytes
    // or end of stream to the socket's next reads, the connection to the front of the
    // listener's queue - and it reports operation_canceled: nothing is lost. Other kinds
    // keep their outcome (a write whose bytes were all sent succeeded).
    void cancel_finished(socket_op& op) {
        if (op.status != op_status::queued || op.ec || reactor_ == nullptr) return;
        if (op.kind == op_kind::read) {
            auto& r = static_cast<read_op&>(op);
            keep_unreported(std::span<const std::byte>(r.into.first(r.bytes)), r.eof);
            read_report_queued_ = false;  // the kept bytes keep the order now
            r.bytes = 0;
            r.eof = false;
        } else if (op.kind == op_kind::accept && state_ == state::listening) {
            return_connection(static_cast<accept_op&>(op));
        } else {
            return;
        }
        op.ec = std::make_error_code(std::errc::operation_canceled);
    }

private:
    enum class io_result { done, would_block, failed };

    // Bytes (or the end of stream) that a cancelled read obtained and did not report: the
    // socket's next reads, in either style, deliver them before anything newer.
    struct kept_input {
        std::vector<std::byte> bytes;
        std::size_t taken = 0;
        bool eof = false;
    };
    void keep_unreported(std::span<const std::byte> bytes, bool eof) {
        if (bytes.empty() && !eof) return;
        // Only a read that waited is converted, and a read that waits found nothing kept.
        kept_.reset(new kept_input{{bytes.begin(), bytes.end()}, 0, eof});
    }
    [[gnu::cold, gnu::noinline]] void read_kept(read_op& op) noexcept {
        kept_input& k = *kept_;
        const std::size_t n = std::min(op.into.size(), k.bytes.size() - k.taken);
        std::copy_n(k.bytes.begin() + std::ptrdiff_t(k.taken), n, op.into.begin());
        k.taken += n;
        op.bytes = n;
        op.eof = n == 0 && k.eof;
        if (k.taken == k.bytes.size() && (n == 0 || !k.eof)) kept_.reset();
    }

    // An accepted connection goes back to the front of the listener's queue: the socket
    // made for it lets go of its descriptor, which leaves the poller open. (Rare: the peer
    // address is read again rather than kept.)
    void return_connection(accept_op& op) {
        socket_ref in = std::move(op.inbound);
        if (!in || in->d_ == nullptr) return;
        sockaddr_storage peer{};
        (void)sys::getpeername(in->d_->fd, peer);
        const int fd = loop().release_descriptor(std::exchange(in->d_, nullptr));
        in->state_ = state::closed;
        listener_->pending.push_front(pending_connection(fd, peer));
    }

    // Takes a pending operation out of its slot. Status, work and report are the caller's.
    void detach(socket_op& op) noexcept {
        if (&op == reading_) {
            (void)take_read();
        } else if (&op == accepting_) {
            accepting_ = nullptr;
        } else if (&op == connect_waiter_) {
            connect_waiter_ = nullptr;
        } else if (&op == shutdown_) {
            shutdown_ = nullptr;
        } else {
            unlink_write(static_cast<write_op&>(op));
            if (writes_.empty() && shutdown_ != nullptr && d_ != nullptr) {
                // Nothing is queued ahead of the shutdown anymore: it happens now, and
                // reports from the run loop (this may run inside the owner's destructor).
                shutdown_op* s = std::exchange(shutdown_, nullptr);
                shut_down_sending(*s);
                finish_pending(*s, s->ec);
            }
        }
    }

    // The flagged accept leaves its slot without a report (detached already).
    void unflag_accept() noexcept {
        accept_op& op = listener_->flagged_accept;
        loop().remove_work();
        op.status = op_status::idle;
        op.owner.reset();  // may not be the last reference: callers hold one
    }

    // A write cancelled after part of it was sent: it reports operation_canceled, and the
    // socket fails with a reset; every other operation ends with connection_aborted.
    [[gnu::cold, gnu::noinline]] void abort_half_sent_write(write_op& op) {
        detach(op);
        finish_pending(op, std::make_error_code(std::errc::operation_canceled));
        sys::reset_on_close(d_->fd);
        fail(std::make_error_code(std::errc::connection_aborted));
    }

    // An operation starts waiting: it counts as reactor work and holds its socket alive.
    void make_pending(socket_op& op) noexcept {
        op.status = op_status::pending;
        loop().add_work();
        hold(op);
    }
    void hold(socket_op& op) noexcept {
        if (!op.owner) op.owner = socket_ref(this);
    }

    // Completion from the run loop: runs now - unless a report of this socket is still
    // queued, which it must not overtake (a socket's reports arrive in the order its
    // operations finished, even when the ready queue yields to I/O after its budget).
    void complete_now(socket_op& op) {
        if (reports_queued_ > 0) {
            complete_later(op);
            return;
        }
        op.status = op_status::idle;
        op.report();
    }
    // Ends a pending operation with `ec`, through the ready queue.
    void finish_pending(socket_op& op, std::error_code ec) {
        loop().remove_work();
        op.ec = ec;
        complete_later(op);
    }

    // The listener's hooks (listener_state) point back to their socket.
    struct waiter : io_waiter {
        socket_impl* self = nullptr;
    };
    struct socket_timer : timer_node {
        socket_impl* self = nullptr;
    };

    // Wires the socket's readiness and timer callbacks and joins the reactor's members.
    void attach_to(reactor& r) noexcept {
        readable_hook::on_ready = [](io_waiter* w) {
            static_cast<socket_impl&>(static_cast<readable_hook&>(*w)).on_readable();
        };
        writable_hook::on_ready = [](io_waiter* w) {
            static_cast<socket_impl&>(static_cast<writable_hook&>(*w)).on_writable();
        };
        deadline_hook::on_expire = [](timer_node* t) {
            static_cast<socket_impl&>(static_cast<deadline_hook&>(*t)).on_deadline();
        };
        abandon = [](reactor_member* m) { static_cast<socket_impl*>(m)->abandon_reactor(); };
        reactor_access::core(r).add_member(this);
    }

    loop_core& loop() const noexcept { return reactor_access::core(*reactor_); }
    io_waiter* reader() noexcept { return static_cast<readable_hook*>(this); }
    io_waiter* writer() noexcept { return static_cast<writable_hook*>(this); }
    timer_node* deadline() noexcept { return static_cast<deadline_hook*>(this); }

    void check_reactor() const {
        if (reactor_ == nullptr) throw state_error("tisock: the socket's reactor has been destroyed");
    }
    // The checks on every read and write stay inline; what they throw is built out of line.
    [[noreturn, gnu::cold, gnu::noinline]] static void throw_misuse(const char* what) { throw state_error(what); }
    [[noreturn, gnu::cold, gnu::noinline]] void fail_try_write(int error) {
        std::error_code ec = errno_code(error);
        fail(ec);
        throw std::system_error(ec, "tisock: try_write");
    }

    [[gnu::cold, gnu::noinline]] void format_peer() {
        created().host = format_host(unformatted_peer_);
        unformatted_peer_.family = AF_UNSPEC;
    }
    created_options& created() {
        if (!created_) [[unlikely]] {
            created_.reset(new created_options{{}, defaults().listen_queue_size, {}, {}, false});
        }
        return *created_;
    }
    void check_settable(const char* name) const {
        if (state_ == state::connected || state_ == state::listening || connecting_) {
            throw state_error(std::string("tisock: cannot set ") + name + " while the socket is " +
                              std::string(connecting_ ? "connecting" : to_string(state_)));
        }
    }

    void check_connected(const char* what) const {
        if (state_ != state::connected) [[unlikely]] throw_not_connected(what);
    }
    [[noreturn, gnu::cold, gnu::noinline]] void throw_not_connected(const char* what) const {
        check_reactor();
        throw state_error(std::string("tisock: ") + what + " needs a connected socket (state is " +
                          std::string(connecting_ ? "connecting" : to_string(state_)) + ")");
    }
    void check_listening(const char* what) const {
        if (state_ != state::listening) [[unlikely]] throw_not_listening(what);
    }
    [[noreturn, gnu::cold, gnu::noinline]] void throw_not_listening(const char* what) const {
        check_reactor();
        throw state_error(std::string("tisock: ") + what + " needs a listening socket (state is " +
                          std::string(to_string(state_)) + ")");
    }

    std::pair<std::string, int> local_address() const {
        sockaddr_storage s{};
        if (d_ == nullptr || !sys::getsockname(d_->fd, s)) return {std::string(), 0};
        return {format_host(s), format_port(s)};
    }

    // ---- descriptors -----------------------------------------------------------------------

    // Registers `fd` as this socket's descriptor; on failure closes it (unless it is still
    // the caller's: tcp::adopt).
    std::error_code adopt_descriptor(int fd, bool close_on_failure = true) {
        int error = 0;
        d_ = loop().open_descriptor(fd, error);
        if (d_ != nullptr) {
            d_->reader = reader();  // for the descriptor's life: a read never registers
            return {};
        }
        if (close_on_failure) (void)sys::close(fd);
        return errno_code(error);
    }

    void release_descriptor() noexcept {
        kept_.reset();  // bytes a cancelled read kept belong to this connection
        if (d_ == nullptr) return;
        loop().close_descriptor(d_);
        d_ = nullptr;
    }

    // listen()'s work after the state check: validates host and port, resolves, binds.
    void open_listening_socket() {
        const std::string& host_name = created_->host;
        check_port(port_, port_use::listen);
        if (host_name.empty()) {
            throw std::invalid_argument("tisock: listen() needs a host: INADDR_ANY (all interfaces) is not supported");
        }
        host_spec host = classify_host(host_name, port_);
        std::vector<endpoint> endpoints;
        if (host.numeric) {
            endpoints.push_back(host.literal);
        } else {
            int sys_errno = 0;
            if (int rc = resolve_blocking(host_name, port_, endpoints, sys_errno); rc != 0) {
                std::error_code ec = rc == EAI_SYSTEM ? errno_code(sys_errno) : std::error_code(rc, resolver_category());
                throw std::system_error(ec, "tisock: listen() could not resolve host \"" + host_name + "\"");
            }
        }
        for (const endpoint& e : endpoints) {
            if (is_wildcard(e)) {
                throw std::invalid_argument("tisock: host \"" + host_name +
                                            "\" is a wildcard address: INADDR_ANY is not supported");
            }
        }
        make_listener_state();
        std::error_code ec;
        for (const endpoint& e : endpoints) {
            ec = open_listener(e);
            if (!ec) return;
        }
        throw std::system_error(ec, "tisock: listen() on " + host_name + ":" + std::to_string(port_));
    }

    void make_listener_state() {
        if (listener_) return;
        listener_.reset(new listener_state(*this));
        listener_->backoff.self = this;
        listener_->backoff.on_expire = [](timer_node* t) { static_cast<socket_timer*>(t)->self->on_accept_backoff(); };
        listener_->readable.self = this;
        listener_->readable.on_ready = [](io_waiter* w) { static_cast<waiter*>(w)->self->drain_listener(); };
    }

    std::error_code open_listener(const endpoint& e) {
        sys::result s = sys::socket(e.family());
        if (!s) return errno_code(s.error);
        int fd = int(s.value);
        // Restarting a server must not fail on connections in TIME_WAIT (robustness E9).
        (void)sys::set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (reuse_port()) {
            if (sys::result r = sys::set_int_option(fd, SOL_SOCKET, sys::reuse_port_option, 1); !r) {
                (void)sys::close(fd);
                return errno_code(r.error);
            }
        }
        if (e.family() == AF_INET6) (void)sys::set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
        // The kernel's backlog is only a hint, so it is kept large: the exact limit,
        // listen_queue_size, is enforced in user space by drain_listener().
        sys::result r = sys::bind(fd, e.addr(), e.size);
        if (r) r = sys::listen(fd, SOMAXCONN);
        if (!r) {
            (void)sys::close(fd);
            return errno_code(r.error);
        }
        if (std::error_code ec = adopt_descriptor(fd)) return ec;
        d_->reader = &listener_->readable;  // the listener drains the kernel queue whenever it runs
        return {};
    }

    // ---- connect internals -----------------------------------------------------------------

    void on_resolved(resolve_job& job) {
        if (!connect_->take_lookup(job)) {
            connect_failed();
            return;
        }
        try_next_candidate(false);
    }

    // Tries the remaining addresses in order; `inside_call` when run from connect() itself.
    void try_next_candidate(bool inside_call) {
        while (const endpoint* e = connect_->next_candidate()) {
            sys::result s = sys::socket(e->family());
            if (!s) {
                connect_->candidate_failed(errno_code(s.error));
                continue;
            }
            if (std::error_code ec = adopt_descriptor(int(s.value))) {
                connect_->candidate_failed(ec);
                continue;
            }
            sys::result r = sys::connect(d_->fd, e->addr(), e->size);
            if (r) {
                connect_succeeded(inside_call);
                return;
            }
            if (r.error == EINPROGRESS) {
                d_->writer = writer();
                return;
            }
            connect_->candidate_failed(errno_code(r.error));
            release_descriptor();
        }
        connect_failed();
    }

    void on_connect_writable() {
        int err = sys::socket_error(d_->fd);
        if (err == 0) {
            d_->writer = nullptr;
            connect_succeeded(false);
            return;
        }
        connect_->candidate_failed(errno_code(err));
        release_descriptor();
        try_next_candidate(false);
    }

    // Returns the reference the connect held: callers keep it until they are done.
    [[nodiscard]] socket_ref end_connecting() noexcept {
        connecting_ = false;
        loop().cancel_timer(deadline());
        loop().remove_work();
        return std::move(connect_keepalive_);
    }

    void connect_succeeded(bool inside_call) {
        socket_ref keep = end_connecting();
        state_ = state::connected;
        if (inside_call) {
            // Rare (loopback may connect at once): report from the run loop all the same.
            loop().defer_call([keep = socket_ref(this), attempt = attempt_] {
                if (keep->attempt_ == attempt) keep->announce_connected();
            });
            return;
        }
        announce_connected();
    }

    // `connected` observer first, then the waiting coroutine (if any), which checks when it
    // resumes that the socket is still connected (connect_outcome).
    void announce_connected() {
        socket_ref keep(this);
        connect_op* waiting = std::exchange(connect_waiter_, nullptr);
        if (state_ == state::connected) {
            try {
                notify_connected();
            } catch (...) {
                // The observer threw (it propagates out of run*()): the waiting coroutine
                // still resumes, from the run loop, instead of staying suspended forever.
                if (waiting != nullptr) complete_later(*waiting);
                throw;
            }
        }
        if (waiting != nullptr) complete_now(*waiting);
    }

    // Reported through the queue whether or not it happens inside connect().
    void connect_failed() {
        std::error_code ec = connect_->failure();
        socket_ref keep = end_connecting();
        release_descriptor();
        state_ = state::error;
        if (connect_waiter_ != nullptr) {
            connect_waiter_->ec = ec;
            complete_later(*std::exchange(connect_waiter_, nullptr));
        }
        queue_error_notification(ec);
    }

    // ---- listener internals ----------------------------------------------------------------

    void begin_accept(accept_op* op) {
        accepting_ = op;
        make_pending(*op);
        if (!listener_->pending.empty()) schedule_delivery();
    }

    // Takes every connection off the kernel queue. An armed accept takes each one as it
    // comes, so an application that re-arms its accept as soon as it resumes gets every
    // connection of a burst; otherwise up to listen_queue_size wait in user space (one more
    // while an accept is armed) and the rest are reset at once.
    void drain_listener() {
        listener_state& l = *listener_;
        if (l.backoff.armed()) return;
        const std::uint32_t attempt = attempt_;
        socket_ref keep(this);
        // Hands a connection to the armed accept, which runs the application (it may re-arm
        // or close); false when the listener is no longer this attempt's.
        auto hand_over = [&](const pending_connection* taken) {
            try {
                deliver_accept(taken);
            } catch (...) {
                resume_draining_later();  // the readiness edge is consumed: drain on the next turn
                throw;
            }
            return state_ == state::listening && attempt_ == attempt;
        };
        for (;;) {
            if (accepting_ != nullptr && !l.pending.empty()) {  // the oldest first
                if (!hand_over(nullptr)) return;
                continue;
            }
            sockaddr_storage peer;  // accept(2) fills it: not zeroed at every attempt
            sys::result r = sys::accept(d_->fd, &peer);
            if (!r) {
                if (r.error == EAGAIN || r.error == EWOULDBLOCK) {
                    d_->read_ready = false;
                    break;
                }
                if (accept_queue::lost_one_connection(r.error)) continue;
                if (accept_queue::out_of_resources(r.error)) {
                    // With edge-triggered readiness nothing would retry: retry after a
                    // pause, keeping the listener open.
                    loop().schedule_timer(&l.backoff, clock::now() + accept_backoff);
                    loop().remove_work();  // the pause alone is not work
                    break;
                }
                fail(errno_code(r.error));
                return;
            }
            const pending_connection c(int(r.value), peer);
            if (accepting_ != nullptr) {  // nothing is pending: straight to the accept
                if (!hand_over(&c)) return;
                continue;
            }
            l.pending.push_or_refuse(c, std::size_t(created_->listen_queue_size));
        }
    }

    void resume_draining_later() {
        loop().defer_call([keep = socket_ref(this), attempt = attempt_] {
            if (keep->state_ == state::listening && keep->attempt_ == attempt) keep->drain_listener();
        });
    }

    void cancel_resolution() noexcept {
        if (connect_) connect_->cancel_lookup();
    }

    // Pending connections were never seen by the user: they are refused with a reset.
    void reset_pending() noexcept {
        if (listener_) listener_->pending.refuse_all();
    }

    void cancel_backoff() noexcept {
        if (!listener_ || !listener_->backoff.armed()) return;
        loop().cancel_timer(&listener_->backoff);
        loop().add_work();  // the pause was never counted as work
    }

    void on_accept_backoff() {
        loop().add_work();  // cancel_timer()'s bookkeeping took one
        drain_listener();
    }

    // From the run loop: hands `taken`, or else the first pending connection, to the
    // waiting accept.
    void deliver_accept(const pending_connection* taken = nullptr) {
        accept_op* op = std::exchange(accepting_, nullptr);
        loop().remove_work();
        op->inbound = taken != nullptr ? adopt(*taken, op->options, op->ec) : adopt_pending(op->options, op->ec);
        complete_now(*op);
    }

    // A pending connection exists when an accept starts: hand it over from the run loop.
    void schedule_delivery() {
        socket_ref keep(this);
        loop().defer_call([keep] {
            socket_impl* self = keep.get();
            if (self->state_ == state::listening && self->accepting_ != nullptr && !self->listener_->pending.empty()) {
                self->deliver_accept();
            }
        });
    }

    // Wraps a pending descriptor in a new socket, created connected with the accept options.
    socket_ref adopt_pending(const accept_options& options, op_error& ec) {
        return adopt(listener_->pending.pop(), options, ec);
    }
    socket_ref adopt(const pending_connection& c, const accept_options& options, op_error& ec) {
        socket_ref in(new socket_impl(*reactor_, c, options));
        if ((ec = in->adopt_descriptor(c.fd))) return {};
        in->state_ = state::connected;
        return in;
    }

    void deliver_flagged_accept(accept_op* op);  // defined in tcp.hpp (needs tcp)

    // ---- I/O internals ---------------------------------------------------------------------

    io_result read_now(read_op& op) {
        sys::result r = sys::recv(d_->fd, op.into.data(), op.into.size());
        if (r) {
            op.bytes = std::size_t(r.value);
            op.eof = r.value == 0;
            // A short read drained the socket: wait for the next edge instead of paying an
            // EAGAIN. Not after the peer hung up: no further edge will come.
            if (op.bytes < op.into.size() && !op.eof && !d_->hung_up) d_->read_ready = false;
            return io_result::done;
        }
        if (r.error == EAGAIN || r.error == EWOULDBLOCK) {
            d_->read_ready = false;
            return io_result::would_block;
        }
        op.ec = errno_code(r.error);
        return io_result::failed;
    }

    // Sends from from[sent] on until all is sent or the kernel takes no more (then
    // write_ready is cleared: the next edge announces room). Returns 0 or an errno value.
    int send_some(std::span<const std::byte> from, std::size_t& sent) noexcept {
        while (sent < from.size()) {
            const std::size_t left = from.size() - sent;
            sys::result r = sys::send(d_->fd, from.data() + sent, left);
            if (r) {
                sent += std::size_t(r.value);
                if (std::size_t(r.value) < left) break;  // the send buffer is full
                continue;
            }
            if (r.error != EAGAIN && r.error != EWOULDBLOCK) return r.error;
            break;
        }
        if (sent < from.size()) d_->write_ready = false;
        return 0;
    }

    io_result write_now(write_op& op) {
        if (int error = send_some(op.from, op.bytes); error != 0) [[unlikely]] {
            op.ec = errno_code(error);
            return io_result::failed;
        }
        return op.bytes == op.from.size() ? io_result::done : io_result::would_block;
    }

    [[gnu::noinline]] void enqueue_write(write_op& op) {
        make_pending(op);
        if (writes_.push(op)) start_head_write();
    }

    // SHUT_WR once every queued write is sent: the shutdown's only system call.
    void shut_down_sending(shutdown_op& op) noexcept {
        if (sys::result r = sys::shutdown(d_->fd, SHUT_WR); !r) op.ec = errno_code(r.error);
    }

    // The head of the queue starts sending: its timeout runs from now.
    void start_head_write() {
        d_->writer = writer();
        if (timeout_.count() > 0) loop().schedule_timer(deadline(), clock::now() + timeout_);
    }

    void unlink_write(write_op& op) noexcept {
        if (writes_.unlink(op)) head_write_left();
    }

    // The head write left the queue (sent, or its owner went away): its timeout ends, and
    // the next write starts sending with its own, or nothing waits for room anymore.
    void head_write_left() {
        loop().cancel_timer(deadline());
        if (d_ == nullptr) return;
        if (writes_.empty()) {
            d_->writer = nullptr;
        } else {
            start_head_write();
        }
    }

    // start_read()'s attempt when the descriptor is known readable; false: nothing to read.
    [[gnu::noinline]] bool read_at_once(read_op& op) {
        switch (read_now(op)) {
            case io_result::done: return true;
            case io_result::failed:
                reading_ = &op;
                fail_inside_call(op);
                return true;
            case io_result::would_block: break;
        }
        return false;
    }

    [[gnu::noinline]] void arm_read_deadline(timed_read_op& op) {
        op.timer.on_expire = [](timer_node* t) {
            timed_read_op& r = *static_cast<timed_read_op::deadline_timer*>(t)->op;
            r.socket->on_read_deadline(r);
        };
        loop().schedule_timer(&op.timer, clock::now() + op.limit);
    }

    // The pending read leaves the socket's read slot (it finished, failed or was dropped).
    read_op& take_read() noexcept {
        read_op& op = *std::exchange(reading_, nullptr);
        if (op.timed) [[unlikely]] loop().cancel_timer(&static_cast<timed_read_op&>(op).timer);
        return op;
    }

    // The descriptor is readable: the pending read (if any) takes what it can. Without one,
    // the reactor's read_ready remembers the edge for the next read.
    void on_readable() {
        read_op* op = reading_;
        if (op == nullptr) return;
        switch (read_now(*op)) {
            case io_result::would_block: return;
            case io_result::failed: fail_from_loop(op->ec);
                                    return;
            case io_result::done: break;
        }
        (void)take_read();
        loop().remove_work();
        complete_now(*op);
    }

    void on_writable() {
        if (connecting_) {
            on_connect_writable();
            return;
        }
        socket_ref keep(this);
        while (write_op* op = writes_.front()) {
            switch (write_now(*op)) {
                case io_result::would_block: return;
                case io_result::failed: fail(op->ec);
                                        return;
                case io_result::done: break;
            }
            (void)writes_.pop();
            head_write_left();
            loop().remove_work();
            try {
                complete_now(*op);  // may close the socket or queue more writes
            } catch (...) {
                // The edge that made the socket writable is consumed: without this, the
                // writes (and the shutdown) queued behind would wait for one that never comes.
                resume_writing_later();
                throw;
            }
            if (state_ != state::connected || d_ == nullptr) return;
        }
        if (shutdown_ != nullptr && writes_.empty()) finish_shutdown();
    }

    // Runs on_writable() again from the run loop, if a write or a shutdown still waits.
    void resume_writing_later() {
        if (state_ != state::connected || d_ == nullptr || (writes_.empty() && shutdown_ == nullptr)) return;
        loop().defer_call([keep = socket_ref(this)] {
            if (keep->state_ == state::connected && keep->d_ != nullptr && !keep->connecting_) keep->on_writable();
        });
    }

    void finish_shutdown() {
        shutdown_op* op = std::exchange(shutdown_, nullptr);
        shut_down_sending(*op);
        loop().remove_work();
        complete_now(*op);
    }

    void on_deadline() {
        if (connecting_) {
            connect_->candidate_failed(std::make_error_code(std::errc::timed_out));
            cancel_resolution();
            connect_failed();
            return;
        }
        fail(std::make_error_code(std::errc::timed_out));  // a write did not finish in time
    }

    void on_read_deadline(read_op& op) {
        // A read deadline is not a socket error: the socket stays connected.
        (void)take_read();
        loop().remove_work();
        op.ec = std::make_error_code(std::errc::timed_out);
        complete_now(op);
    }

    // An operation failed inside the user's call (it is already linked as the pending
    // read or the head write): the socket fails now - state, descriptor - and the operation
    // reports the error through the queue, like every other pending one.
    [[gnu::cold, gnu::noinline]] void fail_inside_call(socket_op& op) {
        std::error_code ec = op.ec;
        op.status = op_status::pending;
        loop().add_work();
        fail(ec);
    }

    [[gnu::cold, gnu::noinline]] void fail_from_loop(std::error_code ec) { fail(ec); }
    [[gnu::cold, gnu::noinline]] void fail_write_at_once(write_op& op) {
        (void)writes_.push(op);  // the socket's failure ends it with the others
        fail_inside_call(op);
    }

    // An asynchronous failure of a connected or listening socket: state error, descriptor
    // closed, pending operations completed with `ec`, then the error callback.
    void fail(std::error_code ec) {
        socket_ref keep(this);
        state_ = state::error;
        finish_all(ec);
        queue_error_notification(ec);
    }

    // Closes the descriptor and ends every pending operation with `ec` (through the queue).
    void finish_all(std::error_code ec) {
        socket_ref connect_reference;  // released when everything below is done
        if (connecting_) connect_reference = end_connecting();
        if (connect_waiter_ != nullptr) {  // connecting, or connected with its report queued
            connect_waiter_->ec = ec;
            complete_later(*std::exchange(connect_waiter_, nullptr));
        }
        cancel_resolution();
        if (reading_ != nullptr) finish_pending(take_read(), ec);
        if (accepting_ != nullptr) {
            accept_op* op = std::exchange(accepting_, nullptr);
            if (op == &listener_->flagged_accept) {
                unflag_accept();  // the callback style has no channel for this
            } else {
                finish_pending(*op, ec);
            }
        }
        loop().cancel_timer(deadline());
        cancel_backoff();
        while (write_op* w = writes_.pop()) finish_pending(*w, ec);
        if (shutdown_ != nullptr) finish_pending(*std::exchange(shutdown_, nullptr), ec);
        shutdown_requested_ = false;
        release_descriptor();
        reset_pending();
    }

    void queue_error_notification(std::error_code ec);  // defined in tcp.hpp (needs tcp)

public:
    // What an awaited connect reports: its error, or operation_canceled when the socket is
    // no longer connected by this attempt when the coroutine resumes (closed, failed or
    // restarted while the report was queued or the connected observer ran).
    std::error_code connect_outcome(const connect_op& op) const noexcept {
        if (op.ec) return op.ec;
        if (state_ != state::connected || attempt_ != op.attempt) return std::make_error_code(std::errc::operation_canceled);
        return {};
    }

private:
    void notify_connected();                             // defined in tcp.hpp (needs tcp)

    // Handles dropped or reactor gone: free what the socket holds without any callback.
    // Returns the reference a connect in flight held (only abandon_reactor has one).
    [[nodiscard]] socket_ref release_resources() noexcept {
        cancel_resolution();
        loop().cancel_timer(deadline());
        cancel_backoff();
        socket_ref connect_reference;
        if (connecting_) {
            connecting_ = false;
            loop().remove_work();
            connect_reference = std::move(connect_keepalive_);
        }
        release_descriptor();
        reset_pending();
        return connect_reference;
    }

    // The reactor is being destroyed: drop every operation without running it (coroutine
    // frames are destroyed by their owners), close everything, and orphan the socket.
    void abandon_reactor() noexcept {
        socket_ref keep(this);
        auto drop = [](socket_op* op) {
            if (op == nullptr) return;
            op->status = op_status::idle;
            op->discard();
        };
        if (reading_ != nullptr) drop(&take_read());
        drop(std::exchange(accepting_, nullptr));
        drop(std::exchange(connect_waiter_, nullptr));
        drop(std::exchange(shutdown_, nullptr));
        while (write_op* w = writes_.pop()) drop(w);
        socket_ref connect_reference = release_resources();  // may be the last: `keep` defers it
        state_ = state::closed;
        reactor_ = nullptr;
    }

    // (Ordered by size, so that an idle connection carries no padding.)
    reactor* reactor_;
    descriptor_state* d_ = nullptr;
    std::uint32_t refs_ = 0;
    // Counts connect() and listen() calls: a notification queued for an earlier attempt
    // (an error callback, a connect report) is dropped, never delivered to the next one.
    std::uint32_t attempt_ = 0;
    std::uint32_t reports_queued_ = 0;  // this socket's operations finished, not reported yet
    state state_ = state::initialized;
    bool connecting_ = false;
    bool inbound_ = false;
    bool shutdown_requested_ = false;
    bool read_report_queued_ = false;  // a finished read whose report has not run yet

    read_op* reading_ = nullptr;
    rare_ptr<kept_input> kept_;  // from a cancelled read; usually none
    accept_op* accepting_ = nullptr;  // accept() and async_accept() share this slot
    connect_op* connect_waiter_ = nullptr;
    write_queue writes_;
    shutdown_op* shutdown_ = nullptr;

    socket_ref connect_keepalive_;        // held while connecting
    rare_ptr<connector> connect_;  // made by the first connect()

    // The options, split by who needs them (see created_options).
    std::chrono::milliseconds timeout_{0};
    int port_ = 0;
    inet_address unformatted_peer_;  // inbound sockets until host() is first read
    error_callback error_;
    rare_ptr<created_options> created_;

    // What only a listener needs, made by listen(): an idle connection stays small.
    struct listener_state {
        accept_queue pending;
        socket_timer backoff;                    // accept paused after EMFILE/ENFILE
        waiter readable;                         // the descriptor's reader: drains the kernel queue
        accept_op flagged_accept;                // the callback accept() flag
        explicit listener_state(socket_impl& s) noexcept : flagged_accept(s) {}
    };
    rare_ptr<listener_state> listener_;

    static constexpr std::chrono::milliseconds accept_backoff{100};

    friend class tisock::tcp;
};

inline void socket_op::run_queued(operation* o, bool run) {
    auto* op = static_cast<socket_op*>(o);
    op->socket->report_left_queue(*op);
    if (run) {
        op->report();
    } else {
        op->discard();
    }
}

inline socket_ref::socket_ref(socket_impl* p) noexcept : p_(p) {
    if (p_ != nullptr) p_->add_ref();
}
inline socket_ref::~socket_ref() {
    if (p_ != nullptr) p_->release();
}

}  // namespace tisock::detail
