// The whole public API of tisock.
#pragma once

#include "detail/require_cxx20.hpp"

#include "buffer.hpp"
#include "codec.hpp"
#include "error.hpp"
#include "memory_stream.hpp"
#include "reactor.hpp"
#include "socket_types.hpp"
#include "stream.hpp"
#include "task.hpp"
#include "tcp.hpp"
