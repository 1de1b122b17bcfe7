// Counting replacement of the global operator new/delete, and the steady-state
// "allocations per message" report that every benchmark server prints at exit.
//
// Include this header in exactly ONE translation unit of a binary (the one with main):
// replacement allocation functions may not be inline ([replacement.functions]), so a
// second inclusion would be a duplicate definition at link time.
//
// Server contract (what benchmarks/run parses from the server's stderr at exit):
//     tisock_bench::steady_state stats;
//     stats.on_accept();    // after each accepted connection
//     stats.on_message();   // after each read that returned data (one echoed message)
//     stats.print(stderr);  // once, on clean exit (SIGTERM/SIGINT)
// prints one line
//     server allocs_total=N connections=N messages=N steady_messages=N steady_allocs=N allocs_per_message=X
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>

namespace tisock_bench {

// Relaxed atomics: the servers are single-threaded, but a library may allocate on a
// helper thread (tisock's resolver); a lost count there would hide an allocation.
inline std::atomic<std::uint64_t> allocation_count{0};
inline std::atomic<std::uint64_t> deallocation_count{0};

inline std::uint64_t allocations() noexcept { return allocation_count.load(std::memory_order_relaxed); }

namespace detail {
inline void* counted_alloc(std::size_t size) noexcept {
    allocation_count.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(size == 0 ? 1 : size);
}

inline void* counted_alloc(std::size_t size, std::align_val_t align) noexcept {
    allocation_count.fetch_add(1, std::memory_order_relaxed);
    auto a = static_cast<std::size_t>(align);
    if (a < sizeof(void*)) a = sizeof(void*);
    void* p = nullptr;
    return ::posix_memalign(&p, a, size == 0 ? 1 : size) == 0 ? p : nullptr;
}

inline void counted_free(void* p) noexcept {
    if (p == nullptr) return;
    deallocation_count.fetch_add(1, std::memory_order_relaxed);
    std::free(p);
}

inline void* counted_alloc_or_throw(std::size_t size) {
    if (void* p = counted_alloc(size)) return p;
    throw std::bad_alloc();
}

inline void* counted_alloc_or_throw(std::size_t size, std::align_val_t align) {
    if (void* p = counted_alloc(size, align)) return p;
    throw std::bad_alloc();
}
}  // namespace detail

// Steady state = from the first message after the most recent accept up to the last
// message. This leaves out startup, accepting and shutdown, without the load generator
// having to tell the server when its warm-up ended. A per-connection allocation made
// after the window opened (say, a buffer allocated lazily on a connection's first read)
// is counted: with 1000 connections it shows as a small fraction, not as zero.
// Meaningful for workloads that open their connections first and then exchange
// messages (pingpong, stream), not for connrate.
class steady_state {
public:
    void on_accept() noexcept {
        ++connections_;
        restart_window_ = true;
    }

    void on_message() noexcept {
        ++messages_;
        const std::uint64_t allocs = allocations();
        if (restart_window_) {
            restart_window_ = false;
            start_allocs_ = allocs;
            start_messages_ = messages_;
        }
        end_allocs_ = allocs;
        end_messages_ = messages_;
    }

    [[nodiscard]] std::uint64_t steady_messages() const noexcept { return end_messages_ - start_messages_; }
    [[nodiscard]] std::uint64_t steady_allocations() const noexcept { return end_allocs_ - start_allocs_; }

    void print(std::FILE* out) const noexcept {
        const std::uint64_t msgs = steady_messages();
        const double per_msg = msgs == 0 ? 0.0 : static_cast<double>(steady_allocations()) / static_cast<double>(msgs);
        std::fprintf(out,
                     "server allocs_total=%llu connections=%llu messages=%llu steady_messages=%llu "
                     "steady_allocs=%llu allocs_per_message=%.4f\n",
                     static_cast<unsigned long long>(allocations()), static_cast<unsigned long long>(connections_),
                     static_cast<unsigned long long>(messages_), static_cast<unsigned long long>(msgs),
                     static_cast<unsigned long long>(steady_allocations()), per_msg);
        std::fflush(out);
    }

private:
    std::uint64_t connections_ = 0;
    std::uint64_t messages_ = 0;
    std::uint64_t start_allocs_ = 0;
    std::uint64_t start_messages_ = 0;
    std::uint64_t end_allocs_ = 0;
    std::uint64_t end_messages_ = 0;
    bool restart_window_ = true;
};

}  // namespace tisock_bench

// The replacements. Every form is replaced so that no allocation escapes the count
// (the array, nothrow and over-aligned forms would otherwise fall through to libstdc++).
void* operator new(std::size_t size) { return tisock_bench::detail::counted_alloc_or_throw(size); }
void* operator new[](std::size_t size) { return tisock_bench::detail::counted_alloc_or_throw(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return tisock_bench::detail::counted_alloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return tisock_bench::detail::counted_alloc(size); }
void* operator new(std::size_t size, std::align_val_t align) {
    return tisock_bench::detail::counted_alloc_or_throw(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align) {
    return tisock_bench::detail::counted_alloc_or_throw(size, align);
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return tisock_bench::detail::counted_alloc(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return tisock_bench::detail::counted_alloc(size, align);
}

void operator delete(void* p) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete[](void* p) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { tisock_bench::detail::counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    tisock_bench::detail::counted_free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    tisock_bench::detail::counted_free(p);
}
