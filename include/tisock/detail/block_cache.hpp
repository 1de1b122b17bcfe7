// Per-thread caches of freed memory blocks, for what the library allocates per connection
// and per callback operation: sockets, coroutine frames, callback operations.
//
// A server frees a connection's socket and frames just before the next connection needs the
// same sizes, and a request/response loop frees each callback operation just before it
// allocates the next; keeping a few freed blocks per size and thread makes the steady state
// allocation-free without a general-purpose pool. Under AddressSanitizer nothing is kept,
// so that a use after free is still reported.
#pragma once

#include <cstddef>
#include <new>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#define TISOCK_DETAIL_RECYCLE_BLOCKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TISOCK_DETAIL_RECYCLE_BLOCKS 0
#endif
#endif
#ifndef TISOCK_DETAIL_RECYCLE_BLOCKS
#define TISOCK_DETAIL_RECYCLE_BLOCKS 1
#endif

namespace tisock::detail {

template <std::size_t Size>
class block_cache {
public:
    static void* allocate() {
        storage& s = local();
        if (TISOCK_DETAIL_RECYCLE_BLOCKS && s.count > 0) return s.blocks[--s.count];
        return ::operator new(Size);
    }

    static void deallocate(void* p) noexcept {
        storage& s = local();
        if (TISOCK_DETAIL_RECYCLE_BLOCKS && s.open && s.count < capacity) {
            s.blocks[s.count++] = p;
        } else {
            ::operator delete(p);
        }
    }

private:
    static constexpr std::size_t capacity = 16;

    // Trivially destructible, so it stays usable until the thread is gone (operations can
    // be freed by static destructors after thread_local destructors ran); `closer` returns
    // the blocks at thread exit and makes later frees go straight to operator delete.
    struct storage {
        void* blocks[capacity];
        std::size_t count;
        bool open;
    };
    struct closer {
        storage* s;
        ~closer() {
            s->open = false;
            while (s->count > 0) ::operator delete(s->blocks[--s->count]);
        }
    };

    static storage& local() noexcept {
        thread_local storage s{{}, 0, true};
        thread_local closer c{&s};
        (void)c;
        return s;
    }
};

// Blocks of any size up to recycled_max, rounded up to a multiple of recycled_granule (as
// malloc rounds, without its header), each size class cached as above; larger ones go straight
// to operator new. For coroutine frames and sockets, whose sizes are known only per type.
inline constexpr std::size_t recycled_granule = 16;
inline constexpr std::size_t recycled_max = 1024;

template <std::size_t... Class>
void* allocate_in_class(std::size_t index, std::index_sequence<Class...>) {
    using allocate_fn = void* (*)();
    static constexpr allocate_fn by_class[] = {&block_cache<(Class + 1) * recycled_granule>::allocate...};
    return by_class[index]();
}
template <std::size_t... Class>
void deallocate_in_class(std::size_t index, void* p, std::index_sequence<Class...>) noexcept {
    using deallocate_fn = void (*)(void*) noexcept;
    static constexpr deallocate_fn by_class[] = {&block_cache<(Class + 1) * recycled_granule>::deallocate...};
    by_class[index](p);
}
using recycled_classes = std::make_index_sequence<recycled_max / recycled_granule>;

inline void* allocate_recycled(std::size_t size) {
    if (size == 0 || size > recycled_max) return ::operator new(size);
    return allocate_in_class((size - 1) / recycled_granule, recycled_classes{});
}
// `size` must be the size given to allocate_recycled.
inline void deallocate_recycled(void* p, std::size_t size) noexcept {
    if (size == 0 || size > recycled_max) {
        ::operator delete(p);
        return;
    }
    deallocate_in_class((size - 1) / recycled_granule, p, recycled_classes{});
}

// A base for what is allocated per connection or per operation (sockets, callback
// operations, the promises of coroutine frames): its memory comes from the caches above.
struct recycled_allocation {
    static void* operator new(std::size_t size) { return allocate_recycled(size); }
    static void operator delete(void* p, std::size_t size) noexcept { deallocate_recycled(p, size); }
};

}  // namespace tisock::detail
