// An outbound connect's addresses: the host taken literally or looked up, then tried in
// order until one connects. The socket (socket_impl) makes the transitions; this keeps
// what an attempt has to remember between them.
#pragma once

#include <netdb.h>

#include <cstddef>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <tisock/error.hpp>
#include <tisock/detail/address.hpp>
#include <tisock/detail/resolver.hpp>

namespace tisock::detail {

// Made by a socket's first connect(): accepted sockets and listeners never carry it.
class connector {
public:
    connector() = default;
    connector(const connector&) = delete;
    connector& operator=(const connector&) = delete;
    ~connector() { cancel_lookup(); }

    // A new attempt with one known address (a numeric host).
    void start_literal(const endpoint& e) {
        reset();
        candidates_.push_back(e);
    }

    // A new attempt that first looks `host` up on a resolver worker; `resolved(job)` runs
    // on `target`'s thread when the lookup is done (then call take_lookup). Throws if no
    // worker can start; the attempt has not begun then.
    template <class F>
    void start_lookup(const std::string& host, int port, reactor& target, F resolved) {
        reset();
        auto job = std::make_shared<resolve_job>();
        job->host = host;
        job->port = port;
        job->target = &target;
        job->on_done = std::move(resolved);
        job_ = job;
        try {
            resolver_pool::submit(std::move(job));
        } catch (...) {
            job_.reset();
            throw;
        }
    }

    // The lookup is done: true if it gave addresses, which become the candidates.
    bool take_lookup(resolve_job& job) {
        job_.reset();
        if (job.gai_error != 0) {
            last_error_ = job.gai_error == EAI_SYSTEM ? errno_code(job.sys_errno)
                                                     : std::error_code(job.gai_error, resolver_category());
            return false;
        }
        candidates_ = std::move(job.endpoints);
        return true;
    }

    // The next address to try, in order; nullptr when none is left.
    const endpoint* next_candidate() noexcept {
        return next_ < candidates_.size() ? &candidates_[next_++] : nullptr;
    }
    void candidate_failed(std::error_code ec) noexcept { last_error_ = ec; }

    // Why the attempt failed: the last error seen (host_unreachable if there was none).
    std::error_code failure() const noexcept {
        return last_error_ ? last_error_ : std::make_error_code(std::errc::host_unreachable);
    }

    // A lookup in flight is abandoned: its result will be dropped (resolver.hpp).
    void cancel_lookup() noexcept {
        if (!job_) return;
        job_->cancel();
        job_.reset();
    }

private:
    void reset() noexcept {
        cancel_lookup();
        candidates_.clear();
        next_ = 0;
        last_error_ = {};
    }

    std::shared_ptr<resolve_job> job_;  // a hostname being looked up
    std::vector<endpoint> candidates_;  // every address, tried in order
    std::size_t next_ = 0;
    std::error_code last_error_;        // reported when every address failed
};

}  // namespace tisock::detail
