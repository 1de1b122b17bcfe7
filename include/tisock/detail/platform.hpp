// The one platform test: which readiness backend and which socket rules apply.
#pragma once

// TISOCK_DETAIL_KQUEUE is 1 with kqueue (macOS and the BSDs, and the test-only emulation
// on Linux, so that the BSD code paths run in CI), 0 with epoll (Linux).
#if defined(TISOCK_BACKEND_KQUEUE_EMULATION) || defined(__APPLE__) || defined(__FreeBSD__) || \
    defined(__OpenBSD__) || defined(__NetBSD__) || defined(__DragonFly__)
#define TISOCK_DETAIL_KQUEUE 1
#elif defined(__linux__)
#define TISOCK_DETAIL_KQUEUE 0
#else
#error "tisock supports Linux (epoll) and macOS/BSD (kqueue)"
#endif
