// Hostname resolution off the reactor thread. getaddrinfo blocks, so a small pool of
// background threads, shared by every reactor, runs the lookups and posts each result back
// to the reactor that asked. Numeric hosts never come here.
//
// Workers start on demand - one more only when every worker is busy and a job waits - up to
// max_workers (libuv's default pool size), so one slow name (a DNS server timing out)
// delays no other lookup while a quiet process keeps a single thread. They are detached and
// the pool is never destroyed: a worker may still be inside getaddrinfo at exit.
//
// Cancellation is safe from the reactor thread at any time: a job's `target` is cleared
// under the job's mutex, and a worker posts only while holding that mutex, so after
// cancel() returns nothing new will be posted; a result posted just before is dropped by
// the `canceled` check, which runs on the reactor thread that set it.
//
// fork(): the child has none of the parent's workers, so the pool starts afresh there
// (pthread_atfork). The prepare handler takes the pool's mutex, and workers touch the
// queue, a job's mutex and a reactor's posted queue only while holding it, so every job is,
// in the child, either delivered (its result waits in the reactor's posted queue) or
// untouched. Untouched jobs - queued, or being resolved by a parent's worker - belong to
// the child as well, which owns its copies of the reactor and the socket that asked: the
// child's own workers resolve them again, so a connect in flight across fork() goes on in
// both processes, like a timer. As always with fork() in a threaded program, no other
// thread may be inside tisock at the time.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <tisock/reactor.hpp>
#include <tisock/detail/address.hpp>

namespace tisock::detail {

struct resolve_job {
    std::string host;
    int port = 0;
    // Results, written by the worker under `mutex` just before posting.
    std::vector<endpoint> endpoints;
    int gai_error = 0;
    int sys_errno = 0;

    std::mutex mutex;
    reactor* target = nullptr;                    // guarded by mutex; nullptr once canceled
    bool canceled = false;                        // reactor thread only
    std::function<void(resolve_job&)> on_done;    // reactor thread only

    void cancel() {
        std::lock_guard lock(mutex);
        target = nullptr;
        canceled = true;
        on_done = nullptr;
    }

    bool still_wanted() {
        std::lock_guard lock(mutex);
        return target != nullptr;
    }
};

class resolver_pool {
public:
    static constexpr std::size_t max_workers = 4;

    static void submit(std::shared_ptr<resolve_job> job) {
        resolver_pool& self = instance();
        std::unique_lock lock(self.mutex_);
        self.queue_.push_back(std::move(job));
        try {
            self.add_workers_while_needed();
        } catch (...) {
            // With a worker running the job just waits its turn; without one it cannot run.
            if (self.workers_ == 0) {
                self.queue_.pop_back();
                throw;
            }
        }
        lock.unlock();
        self.job_waiting_.notify_one();
    }

    // Workers started in this process (tests check the bound).
    static std::size_t workers() {
        resolver_pool& self = instance();
        std::lock_guard lock(self.mutex_);
        return self.workers_;
    }

private:
    // Never destroyed: a detached worker may still be inside getaddrinfo at exit.
    static resolver_pool& instance() {
        static resolver_pool* self = new resolver_pool;
        return *self;
    }

    resolver_pool() {
        // The fork handlers find the pool here, not through instance(): a fork() while
        // another thread constructs the pool must not wait for instance()'s guard.
        forking_pool.store(this, std::memory_order_release);
        if (int e = ::pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child); e != 0) {
            throw std::system_error(e, std::generic_category(), "tisock: pthread_atfork");
        }
    }

    static void before_fork() noexcept { forking_pool.load(std::memory_order_acquire)->mutex_.lock(); }
    static void after_fork_in_parent() noexcept { forking_pool.load(std::memory_order_acquire)->mutex_.unlock(); }

    static void after_fork_in_child() noexcept {
        resolver_pool& self = *forking_pool.load(std::memory_order_acquire);
        // mutex_ is held by this thread (before_fork), so no parent thread was inside the
        // pool: the queue and the slots are whole. The condition variable's waiters were the
        // parent's workers, which do not exist here: a new one (the old one is not destroyed,
        // which would wait for them).
        new (&self.job_waiting_) std::condition_variable;
        for (std::shared_ptr<resolve_job>& job : self.running_) {
            if (job) self.queue_.push_front(std::move(job));
        }
        self.workers_ = 0;
        try {
            self.add_workers_while_needed();
        } catch (...) {
            // None could start: the next submit() tries again.
        }
        self.mutex_.unlock();  // taken by this thread in before_fork()
    }

    std::size_t busy() const noexcept {
        return std::size_t(std::ranges::count_if(running_, [](const auto& job) { return job != nullptr; }));
    }

    // With mutex_ held: starts workers until every waiting job has an idle one, up to the bound.
    void add_workers_while_needed() {
        while (workers_ < max_workers && queue_.size() + busy() > workers_) {
            std::thread(&resolver_pool::work, this, workers_).detach();
            ++workers_;
        }
    }

    // A worker holds a reference to its job only in its slot, or while holding mutex_: in a
    // child the slots are requeued and no dead worker's stack keeps a job alive.
    void work(std::size_t slot) {
        std::unique_lock lock(mutex_);
        std::shared_ptr<resolve_job>& job = running_[slot];
        for (;;) {
            job_waiting_.wait(lock, [this] { return !queue_.empty(); });
            job = std::move(queue_.front());
            queue_.pop_front();
            if (!job->still_wanted()) {  // canceled while queued
                job.reset();
                continue;
            }
            const resolve_job& asked = *job;
            lock.unlock();
            std::vector<endpoint> endpoints;
            int sys_errno = 0;
            int gai_error = resolve_blocking(asked.host, asked.port, endpoints, sys_errno);
            lock.lock();
            deliver(std::move(job), gai_error, std::move(endpoints), sys_errno);
        }
    }

    // With mutex_ held, so that fork() never sees a delivery half done.
    static void deliver(std::shared_ptr<resolve_job> job, int gai_error, std::vector<endpoint> endpoints,
                        int sys_errno) {
        std::lock_guard lock(job->mutex);
        if (job->target == nullptr) return;
        job->endpoints = std::move(endpoints);
        job->gai_error = gai_error;
        job->sys_errno = sys_errno;
        job->target->post([job] {
            if (job->canceled || !job->on_done) return;
            auto done = std::move(job->on_done);
            done(*job);
        });
    }

    inline static std::atomic<resolver_pool*> forking_pool{nullptr};

    std::mutex mutex_;
    std::condition_variable job_waiting_;
    std::deque<std::shared_ptr<resolve_job>> queue_;
    std::array<std::shared_ptr<resolve_job>, max_workers> running_;  // slot i: worker i's job
    std::size_t workers_ = 0;
};

}  // namespace tisock::detail
