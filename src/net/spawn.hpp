// Completion handlers for asio::co_spawn. A coroutine that ends with an exception must never
// vanish silently (a detached spawn) nor take the event loop down: the handler logs the
// exception with the coroutine's context and runs the owner's clean-up (close the session,
// restart the loop), which is how any other end of that coroutine would have been handled.
//
// Thread-safety: the handler runs on the coroutine's executor.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include "core/log.hpp"
#include "net/asio.hpp"

namespace cairn::net {

// The message of an exception_ptr ("unknown exception" for non-std exceptions). Never throws.
std::string describe_exception(const std::exception_ptr& e) noexcept;

// co_spawn(executor, coroutine, on_coroutine_exit("mqtt session 1.2.3.4", [](reason){...})).
// `on_failure(const std::string& reason)` runs only when the coroutine threw; an exception it
// throws itself is logged and dropped.
template <class OnFailure>
auto on_coroutine_exit(std::string context, OnFailure on_failure) {
  return [context = std::move(context),
          on_failure = std::move(on_failure)](std::exception_ptr e) mutable {
    if (!e) return;
    const std::string reason = describe_exception(e);
    log::error("net", "{} ended by an exception: {}", context, reason);
    try {
      on_failure(reason);
    } catch (...) {
      log::error("net", "{}: clean-up after the exception failed too: {}", context,
                 describe_exception(std::current_exception()));
    }
  };
}

// There is deliberately no overload without `on_failure`: a coroutine whose resources are
// released by its own destructors passes `[](const std::string&) {}` at its call site. A shared
// no-op would give co_spawn's entry point the same type in several objects, and gcc 12 emits
// those copies with diverging sections: lld's --gc-sections link of the release cairnd then
// fails on a reference into a discarded copy.

// io.run() for a daemon's event loop: a handler that throws is logged, counted and the loop
// goes on instead of the process stopping. Handlers should contain their own failures; this
// is the last line. Returns when the io_context runs out of work or is stopped.
void run_contained(asio::io_context& io);
// Exceptions run_contained() has caught in this process.
std::uint64_t escaped_exceptions() noexcept;

}  // namespace cairn::net
