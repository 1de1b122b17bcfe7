// Included first by every public header, so that a build without C++20 fails with one
// clear message instead of hundreds of lines about coroutines, concepts and <bit>.
#pragma once

#if __cplusplus < 202002L
#error "tisock needs C++20 (-std=c++20)"
// g++ and clang carry on after #error and would bury the message under the follow-on
// errors; a missing header is fatal in both, so compilation stops here.
#include "tisock needs C++20 - stopping here"
#endif
