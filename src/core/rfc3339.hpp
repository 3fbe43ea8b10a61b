// Reading RFC 3339 times, as IoT Edge clients and container engines write them
// ("2026-12-02T16:05:20Z", "2026-12-02T16:05:20.123456789+01:00"). format_iso8601 (clock.hpp)
// writes them; the reader lives apart so clock.hpp's many includers do not depend on it.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cairn {

// Unix milliseconds, or nullopt unless `text` is exactly date 'T' time, optional fraction, and
// 'Z' or a ±HH:MM offset, with every field in range.
std::optional<std::int64_t> parse_rfc3339_ms(std::string_view text);

}  // namespace cairn
