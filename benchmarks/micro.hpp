// A tiny micro-benchmark harness (no dependency): time per operation and allocations per
// operation, one machine-readable line per measurement.
//
//   #include "micro.hpp"   // in the binary's main translation unit: it brings the
//                          // counting operator new of alloc_counter.hpp with it
//   int main() {
//       tisock_bench::measure("task co_await", 1'000'000, [&] { ... one operation ... });
//   }
//
// prints
//   micro name="task co_await" iterations=1000000 reps=7 ns_per_op=12.3 min_ns=12.1 max_ns=13.0 allocs_per_op=0.0000
//
// ns_per_op is the median over `reps` repetitions of `iterations` calls (after one
// untimed warm-up repetition); min/max show the spread. allocs_per_op counts every global
// operator new over all timed repetitions. Pin the process (taskset -c 0) for stable
// figures; keep each repetition well above a millisecond so the clock's resolution and
// a single preemption do not dominate.
#pragma once

#include "alloc_counter.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tisock_bench {

// Keeps the compiler from deleting a computation whose result is never used.
template <typename T>
inline void do_not_optimize(T const& value) noexcept {
    asm volatile("" : : "r,m"(value) : "memory");
}

// Forces pending stores to memory to be considered observed.
inline void clobber_memory() noexcept { asm volatile("" : : : "memory"); }

struct micro_result {
    double ns_per_op = 0;  // median
    double min_ns = 0;
    double max_ns = 0;
    double allocs_per_op = 0;
};

template <typename Fn>
micro_result measure(std::string_view name, std::uint64_t iterations, Fn&& fn, int reps = 7) {
    static_assert(std::is_invocable_v<Fn&>, "measure() needs a callable taking no arguments: one operation per call");
    if (iterations == 0) iterations = 1;
    if (reps < 1) reps = 1;
    using clock = std::chrono::steady_clock;

    for (std::uint64_t i = 0; i < iterations; ++i) fn();  // warm-up: caches, lazy init

    std::vector<double> per_op;
    per_op.reserve(static_cast<std::size_t>(reps));  // before counting: not the operation's allocation
    const std::uint64_t allocs_before = allocations();
    for (int r = 0; r < reps; ++r) {
        const auto start = clock::now();
        for (std::uint64_t i = 0; i < iterations; ++i) fn();
        const auto ns = std::chrono::duration<double, std::nano>(clock::now() - start).count();
        per_op.push_back(ns / static_cast<double>(iterations));
    }
    const std::uint64_t allocs = allocations() - allocs_before;

    std::sort(per_op.begin(), per_op.end());
    micro_result result;
    const std::size_t n = per_op.size();
    result.ns_per_op = n % 2 == 1 ? per_op[n / 2] : (per_op[n / 2 - 1] + per_op[n / 2]) / 2;
    result.min_ns = per_op.front();
    result.max_ns = per_op.back();
    result.allocs_per_op = static_cast<double>(allocs) / (static_cast<double>(iterations) * reps);
    std::printf("micro name=\"%.*s\" iterations=%llu reps=%d ns_per_op=%.1f min_ns=%.1f max_ns=%.1f allocs_per_op=%.4f\n",
                static_cast<int>(name.size()), name.data(), static_cast<unsigned long long>(iterations), reps,
                result.ns_per_op, result.min_ns, result.max_ns, result.allocs_per_op);
    std::fflush(stdout);
    return result;
}

}  // namespace tisock_bench
