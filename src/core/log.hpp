// cairn::log — a thin facade over spdlog. Every line carries a component tag ("[hub]",
// "[store]") and key=value context. Payloads and secrets never go above debug level.
// spdlog itself stays inside log.cpp: callers format with fmt and hand over one string, so
// no other translation unit compiles spdlog's headers.
//
// Thread-safety: safe from any thread (spdlog's default logger is thread-safe).
#pragma once

#include <string_view>

#include <fmt/format.h>

#include "core/result.hpp"

namespace cairn::log {

enum class Level { trace, debug, info, warn, error, off };

// Sends logs to stderr with a timestamped, component-tagged pattern.
void init(Level level);
void set_level(Level level);
Result<Level> parse_level(std::string_view name);
bool enabled(Level level);
// Writes out what is buffered; for a process about to exit.
void flush();

namespace detail {
// One formatted line, already filtered by level.
void emit(Level level, std::string_view component, std::string_view text);

template <class... A>
void write(Level l, std::string_view component, fmt::format_string<A...> f, A&&... args) {
  if (!enabled(l)) return;
  emit(l, component, fmt::format(f, std::forward<A>(args)...));
}
}  // namespace detail

template <class... A>
void trace(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  detail::write(Level::trace, c, f, std::forward<A>(a)...);
}
template <class... A>
void debug(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  detail::write(Level::debug, c, f, std::forward<A>(a)...);
}
template <class... A>
void info(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  detail::write(Level::info, c, f, std::forward<A>(a)...);
}
template <class... A>
void warn(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  detail::write(Level::warn, c, f, std::forward<A>(a)...);
}
template <class... A>
void error(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  detail::write(Level::error, c, f, std::forward<A>(a)...);
}

}  // namespace cairn::log
