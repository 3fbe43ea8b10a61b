// cairn::log — a thin facade over spdlog. Every line carries a component tag ("[hub]",
// "[store]") and key=value context. Payloads and secrets never go above debug level.
//
// Thread-safety: safe from any thread (spdlog's default logger is thread-safe).
#pragma once

#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/result.hpp"

namespace cairn::log {

enum class Level { trace, debug, info, warn, error, off };

// Sends logs to stderr with a timestamped, component-tagged pattern.
void init(Level level);
void set_level(Level level);
Result<Level> parse_level(std::string_view name);
bool enabled(Level level);

namespace detail {
inline spdlog::level::level_enum to_spd(Level l) {
  return static_cast<spdlog::level::level_enum>(static_cast<int>(l) == 5 ? 6 : static_cast<int>(l));
}
template <class... A>
void write(Level l, std::string_view component, fmt::format_string<A...> f, A&&... args) {
  auto* logger = spdlog::default_logger_raw();
  if (!logger->should_log(to_spd(l))) return;
  logger->log(to_spd(l), "[{}] {}", component, fmt::format(f, std::forward<A>(args)...));
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
