// A socket's writes, in the order they were started (one FIFO for both styles).
#pragma once

#include <tisock/detail/socket_op.hpp>

namespace tisock::detail {

// Intrusive (through write_op::next_write): queueing a write allocates nothing. Only the
// head sends; the socket arms the head's timeout and the descriptor's writer.
class write_queue {
public:
    bool empty() const noexcept { return head_ == nullptr; }
    write_op* front() const noexcept { return head_; }

    // Appends `op`; true if it is now the head (it starts sending).
    bool push(write_op& op) noexcept {
        op.next_write = nullptr;
        if (tail_ != nullptr) {
            tail_->next_write = &op;
            tail_ = &op;
            return false;
        }
        head_ = tail_ = &op;
        return true;
    }

    // Removes and returns the head (nullptr when empty).
    write_op* pop() noexcept {
        write_op* op = head_;
        if (op == nullptr) return nullptr;
        head_ = op->next_write;
        if (head_ == nullptr) tail_ = nullptr;
        return op;
    }

    // Removes `op` wherever it is (its owner went away); true if it was the head.
    bool unlink(write_op& op) noexcept {
        write_op* before = nullptr;
        for (write_op* w = head_; w != nullptr; before = w, w = w->next_write) {
            if (w != &op) continue;
            (before != nullptr ? before->next_write : head_) = w->next_write;
            if (tail_ == w) tail_ = before;
            return before == nullptr;
        }
        return false;
    }

private:
    write_op* head_ = nullptr;
    write_op* tail_ = nullptr;
};

}  // namespace tisock::detail
