// The whole public API of tisock.
#pragma once

#include "error.hpp"
#include "reactor.hpp"
#include "task.hpp"
