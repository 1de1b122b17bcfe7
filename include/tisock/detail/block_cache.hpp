// A per-thread cache of freed memory blocks of one size, for the callback operations.
//
// The callback API allocates one operation per read and per write (it holds the user's
// std::function, and a write owns its buffer). A request/response loop frees each one just
// before it allocates the next, so keeping a few freed blocks per thread makes the steady
// state allocation-free without a general-purpose pool.
#pragma once

#include <cstddef>
#include <new>

namespace tisock::detail {

template <std::size_t Size>
class block_cache {
public:
    static void* allocate() {
        storage& s = local();
        if (s.count > 0) return s.blocks[--s.count];
        return ::operator new(Size);
    }

    static void deallocate(void* p) noexcept {
        storage& s = local();
        if (s.open && s.count < capacity) {
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

}  // namespace tisock::detail
