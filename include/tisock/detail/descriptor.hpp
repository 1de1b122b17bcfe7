// What the reactor knows about one registered descriptor, shared by every backend.
#pragma once

namespace tisock::detail {

// Something waiting for a descriptor to become readable or writable. The reactor calls
// on_ready from its run loop; the waiter then makes its system call (and may re-arm by
// staying registered when the call reports EAGAIN).
struct io_waiter {
    void (*on_ready)(io_waiter* self) = nullptr;
};

// Registered once per descriptor, edge-triggered for both directions (Asio's
// descriptor_state): a read and a write can wait on one socket at once, and steady-state
// I/O needs no epoll_ctl/kevent change. read_ready/write_ready remember the last edge until
// a short read/write (or EAGAIN) shows the direction drained, so a request/response
// exchange never pays a speculative syscall that fails with EAGAIN.
//
// The reactor owns these and recycles them only between event batches, so an event that
// was already collected for a descriptor closed earlier in the same batch finds fd == -1
// instead of freed memory.
struct descriptor_state {
    int fd = -1;
    bool read_ready = false;
    bool write_ready = false;
    // The peer has shut down or reset the connection. Sticky: a short read does not clear
    // read_ready once this is set, since no further edge will announce the end of stream.
    bool hung_up = false;
    io_waiter* reader = nullptr;
    io_waiter* writer = nullptr;
    descriptor_state* next = nullptr;  // free/retired lists of the reactor
};

// One readiness report, translated from the backend's native event.
// d == nullptr marks a wake-up (post/stop from another thread) already consumed.
struct ready_event {
    descriptor_state* d = nullptr;
    bool readable = false;  // also set on hang-up and error: the next read reports them
    bool writable = false;  // also set on hang-up and error: the next write reports them
    bool hung_up = false;   // peer shut down its side (EPOLLRDHUP/EPOLLHUP, kqueue EV_EOF) or error
};

}  // namespace tisock::detail
