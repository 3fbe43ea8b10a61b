// Wall-clock and monotonic time helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace cairn {

// Milliseconds since the Unix epoch (wall clock: used for TTLs stored on disk and for tokens).
inline std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
inline std::int64_t now_unix_s() { return now_unix_ms() / 1000; }

// ISO 8601 UTC with milliseconds, e.g. "2026-11-25T14:38:38.123Z".
std::string format_iso8601(std::int64_t unix_ms);

}  // namespace cairn
