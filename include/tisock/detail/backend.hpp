// Chooses the reactor backend once, at compile time. Nothing outside this file and the
// backend headers names epoll or kqueue.
#pragma once

#if defined(TISOCK_BACKEND_KQUEUE_EMULATION) || defined(__APPLE__) || defined(__FreeBSD__) || \
    defined(__OpenBSD__) || defined(__NetBSD__) || defined(__DragonFly__)
#include "kqueue.hpp"
namespace tisock::detail {
using backend = kqueue_backend;
}
#elif defined(__linux__)
#include "epoll.hpp"
namespace tisock::detail {
using backend = epoll_backend;
}
#else
#error "tisock supports Linux (epoll) and macOS/BSD (kqueue)"
#endif
