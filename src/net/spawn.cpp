#include "net/spawn.hpp"

#include <atomic>
#include <cstdint>

namespace cairn::net {
namespace {

std::atomic<std::uint64_t> g_escaped{0};

}  // namespace

std::string describe_exception(const std::exception_ptr& e) noexcept {
  try {
    if (e) std::rethrow_exception(e);
    return "no exception";
  } catch (const std::exception& ex) {
    try {
      return ex.what();
    } catch (...) {
      return "exception";
    }
  } catch (...) {
    return "unknown exception";
  }
}

void run_contained(asio::io_context& io) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (...) {
      g_escaped.fetch_add(1, std::memory_order_relaxed);
      log::error("net", "a handler threw out of the event loop (contained, continuing): {}",
                 describe_exception(std::current_exception()));
    }
  }
}

std::uint64_t escaped_exceptions() noexcept { return g_escaped.load(std::memory_order_relaxed); }

}  // namespace cairn::net
