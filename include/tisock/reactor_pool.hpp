// tisock::reactor_pool - n reactors, one per thread, run and stopped together.
//
// Nothing is shared on the hot path: each reactor is driven by its own thread as usual;
// the pool only adds a round-robin counter (next(), one relaxed increment per call) and
// the start/stop/error bookkeeping below. Work moves between them by post(), spawn() or
// co_await resume_on(r).
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <tisock/reactor.hpp>

namespace tisock {

class reactor_pool {
public:
    // 0 (hardware_concurrency() may say so) means 1.
    explicit reactor_pool(unsigned n = std::thread::hardware_concurrency())
        : size_(n == 0 ? 1 : n), reactors_(std::make_unique<reactor[]>(size_)) {}
    reactor_pool(const reactor_pool&) = delete;
    reactor_pool& operator=(const reactor_pool&) = delete;

    std::size_t size() const noexcept { return size_; }
    reactor& operator[](std::size_t i) { return reactors_[i]; }

    // Round robin; thread-safe.
    reactor& next() noexcept { return reactors_[next_.fetch_add(1, std::memory_order_relaxed) % size_]; }

    // Runs reactor i on thread i (0 on the caller's) until stop(), even without work. If a
    // handler throws, stops all, joins, and rethrows the first exception here. A stop()
    // before run() makes it return at once; afterwards the pool can run again.
    void run() {
        for (std::size_t i = 0; i < size_; ++i) core(i).add_work();  // keeps them running
        std::vector<std::thread> threads;
        try {
            threads.reserve(size_ - 1);
            for (std::size_t i = 1; i < size_; ++i) threads.emplace_back([this, i] { drive(i); });
        } catch (...) {  // no thread for the next one: the started ones are stopped
            record(std::current_exception());
        }
        drive(0);  // at once if stopped
        for (std::thread& t : threads) t.join();
        for (std::size_t i = 0; i < size_; ++i) {
            core(i).remove_work();
            reactors_[i].restart();
        }
        stopping_.store(false, std::memory_order_relaxed);
        if (std::exception_ptr e = std::exchange(first_error_, nullptr)) std::rethrow_exception(e);
    }

    // Thread-safe (and the reactors' stop() is async-signal-safe with epoll).
    void stop() noexcept {
        stopping_.store(true, std::memory_order_release);
        for (std::size_t i = 0; i < size_; ++i) reactors_[i].stop();
    }

private:
    detail::loop_core& core(std::size_t i) noexcept { return detail::reactor_access::core(reactors_[i]); }

    void drive(std::size_t i) {
        try {
            // A stop() that came before this thread started is already in the reactor's flag.
            if (!stopping_.load(std::memory_order_acquire)) reactors_[i].run();
        } catch (...) {
            record(std::current_exception());
        }
    }

    void record(std::exception_ptr e) noexcept {
        {
            std::lock_guard lock(error_mutex_);
            if (!first_error_) first_error_ = std::move(e);
        }
        stop();
    }

    std::size_t size_;
    std::unique_ptr<reactor[]> reactors_;
    std::atomic<std::size_t> next_{0};
    std::atomic<bool> stopping_{false};
    std::mutex error_mutex_;
    std::exception_ptr first_error_;  // read after the joins
};

}  // namespace tisock
