// Chooses the reactor backend once, at compile time. Nothing outside this file and the
// backend headers names epoll or kqueue.
#pragma once

#include <tisock/detail/platform.hpp>

#if TISOCK_DETAIL_KQUEUE
#include <tisock/detail/kqueue.hpp>
namespace tisock::detail {
using backend = kqueue_backend;
}
#else
#include <tisock/detail/epoll.hpp>
namespace tisock::detail {
using backend = epoll_backend;
}
#endif
