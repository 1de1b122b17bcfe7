// Hostname resolution off the reactor thread. getaddrinfo blocks, so one background
// thread (started on first use, shared by every reactor) runs the lookups and posts each
// result back to the reactor that asked. Numeric hosts never come here.
//
// Cancellation is safe from the reactor thread at any time: a job's `target` is cleared
// under the job's mutex, and the worker posts only while holding that mutex, so after
// cancel() returns nothing new will be posted; a result posted just before is dropped by
// the `canceled` check, which runs on the reactor thread that set it.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../reactor.hpp"
#include "address.hpp"

namespace tisock::detail {

struct resolve_job {
    std::string host;
    int port = 0;
    // Results, written by the worker before posting.
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
};

class resolver_thread {
public:
    static void submit(std::shared_ptr<resolve_job> job) {
        resolver_thread& self = instance();
        {
            std::lock_guard lock(self.mutex_);
            self.queue_.push_back(std::move(job));
            if (!self.started_) {
                std::thread(&resolver_thread::work, &self).detach();
                self.started_ = true;
            }
        }
        self.wake_.notify_one();
    }

private:
    // Never destroyed: the detached worker may still be inside getaddrinfo at exit.
    static resolver_thread& instance() {
        static resolver_thread* self = new resolver_thread;
        return *self;
    }

    void work() {
        for (;;) {
            std::shared_ptr<resolve_job> job;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [this] { return !queue_.empty(); });
                job = std::move(queue_.front());
                queue_.pop_front();
            }
            {
                std::lock_guard lock(job->mutex);
                if (job->target == nullptr) continue;  // canceled while queued
            }
            job->gai_error = resolve_blocking(job->host, job->port, job->endpoints, job->sys_errno);
            std::lock_guard lock(job->mutex);
            if (job->target == nullptr) continue;
            job->target->post([job] {
                if (job->canceled || !job->on_done) return;
                auto done = std::move(job->on_done);
                done(*job);
            });
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::shared_ptr<resolve_job>> queue_;
    bool started_ = false;
};

}  // namespace tisock::detail
