// A binary min-heap of intrusive timer nodes: O(log n) insert and cancel, no allocation
// per timer once the vector has grown (libuv uses a heap for the same reasons).
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

namespace tisock::detail {

using clock = std::chrono::steady_clock;

struct timer_node {
    static constexpr std::size_t not_armed = std::size_t(-1);

    clock::time_point deadline{};
    std::size_t heap_index = not_armed;
    std::size_t sequence = 0;  // FIFO order among equal deadlines
    void (*on_expire)(timer_node* self) = nullptr;

    bool armed() const noexcept { return heap_index != not_armed; }
};

class timer_heap {
public:
    bool empty() const noexcept { return heap_.empty(); }
    std::size_t size() const noexcept { return heap_.size(); }
    timer_node* top() const noexcept { return heap_.empty() ? nullptr : heap_.front(); }

    void insert(timer_node* t) {
        t->sequence = next_sequence_++;
        heap_.push_back(t);
        t->heap_index = heap_.size() - 1;
        sift_up(t->heap_index);
    }

    void erase(timer_node* t) noexcept {
        std::size_t i = t->heap_index;
        std::size_t last = heap_.size() - 1;
        t->heap_index = timer_node::not_armed;
        if (i != last) {
            place(i, heap_[last]);
            heap_.pop_back();
            if (i > 0 && before(heap_[i], heap_[parent(i)])) {
                sift_up(i);
            } else {
                sift_down(i);
            }
        } else {
            heap_.pop_back();
        }
    }

    // Disarms every node without running it (reactor destruction).
    void clear() noexcept {
        for (timer_node* t : heap_) t->heap_index = timer_node::not_armed;
        heap_.clear();
    }

private:
    static std::size_t parent(std::size_t i) noexcept { return (i - 1) / 2; }
    static bool before(const timer_node* a, const timer_node* b) noexcept {
        return a->deadline < b->deadline || (a->deadline == b->deadline && a->sequence < b->sequence);
    }
    void place(std::size_t i, timer_node* t) noexcept {
        heap_[i] = t;
        t->heap_index = i;
    }
    void sift_up(std::size_t i) noexcept {
        timer_node* t = heap_[i];
        while (i > 0 && before(t, heap_[parent(i)])) {
            place(i, heap_[parent(i)]);
            i = parent(i);
        }
        place(i, t);
    }
    void sift_down(std::size_t i) noexcept {
        timer_node* t = heap_[i];
        std::size_t n = heap_.size();
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && before(heap_[child + 1], heap_[child])) ++child;
            if (!before(heap_[child], t)) break;
            place(i, heap_[child]);
            i = child;
        }
        place(i, t);
    }

    std::vector<timer_node*> heap_;
    std::size_t next_sequence_ = 0;
};

}  // namespace tisock::detail
