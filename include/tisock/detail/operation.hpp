// The unit of deferred work in the reactor's ready queue.
#pragma once

#include <cstddef>

namespace tisock::detail {

// An intrusive node: posted handlers, deferred completions and coroutine starts all derive
// from it, so queueing allocates nothing. invoke(op, true) runs it; invoke(op, false)
// destroys it without running (reactor destruction).
struct operation {
    using invoke_fn = void (*)(operation* self, bool run);
    operation* next = nullptr;
    invoke_fn invoke = nullptr;
};

// FIFO of operations.
class op_queue {
public:
    bool empty() const noexcept { return head_ == nullptr; }

    void push(operation* op) noexcept {
        op->next = nullptr;
        if (tail_ != nullptr) {
            tail_->next = op;
        } else {
            head_ = op;
        }
        tail_ = op;
    }

    operation* pop() noexcept {
        operation* op = head_;
        if (op != nullptr) {
            head_ = op->next;
            if (head_ == nullptr) tail_ = nullptr;
            op->next = nullptr;
        }
        return op;
    }

    void append(op_queue& other) noexcept {
        if (other.head_ == nullptr) return;
        if (tail_ != nullptr) {
            tail_->next = other.head_;
        } else {
            head_ = other.head_;
        }
        tail_ = other.tail_;
        other.head_ = other.tail_ = nullptr;
    }

    // O(n); only for the rare removal of an operation whose owner is destroyed while it
    // is queued (a coroutine frame destroyed by its owner).
    bool remove(operation* op) noexcept {
        operation* prev = nullptr;
        for (operation* cur = head_; cur != nullptr; prev = cur, cur = cur->next) {
            if (cur != op) continue;
            (prev != nullptr ? prev->next : head_) = cur->next;
            if (tail_ == cur) tail_ = prev;
            cur->next = nullptr;
            return true;
        }
        return false;
    }

private:
    operation* head_ = nullptr;
    operation* tail_ = nullptr;
};

}  // namespace tisock::detail
