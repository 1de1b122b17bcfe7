// The whole public API of tisock.
#pragma once

#include <tisock/detail/require_cxx20.hpp>

#include <tisock/buffer.hpp>
#include <tisock/codec.hpp>
#include <tisock/error.hpp>
#include <tisock/memory_stream.hpp>
#include <tisock/reactor.hpp>
#include <tisock/reactor_pool.hpp>
#include <tisock/resume_on.hpp>
#include <tisock/scope.hpp>
#include <tisock/socket_types.hpp>
#include <tisock/stream.hpp>
#include <tisock/task.hpp>
#include <tisock/tcp.hpp>
