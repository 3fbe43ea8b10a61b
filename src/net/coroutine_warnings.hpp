// Included by a translation unit that defines Asio coroutines and calls them, after its other
// includes: gcc 12 with -fsanitize=address reports a false -Wmismatched-new-delete when it
// inlines a coroutine's ramp into its caller (Asio's awaitable frames have class-specific
// new/delete). The pragma holds for the rest of the including file.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
