#include "core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace cairn::log {

namespace {
spdlog::level::level_enum to_spd(Level l) {
  return l == Level::off ? spdlog::level::off : static_cast<spdlog::level::level_enum>(l);
}
}  // namespace

void init(Level level) {
  auto logger = spdlog::stderr_logger_mt("cairn");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  spdlog::set_default_logger(logger);
  set_level(level);
}

void set_level(Level level) { spdlog::set_level(to_spd(level)); }

bool enabled(Level level) { return spdlog::default_logger_raw()->should_log(to_spd(level)); }

void flush() { spdlog::default_logger_raw()->flush(); }

void detail::emit(Level level, std::string_view component, std::string_view text) {
  spdlog::default_logger_raw()->log(to_spd(level), "[{}] {}", component, text);
}

Result<Level> parse_level(std::string_view name) {
  if (name == "trace") return Level::trace;
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn" || name == "warning") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "off") return Level::off;
  return make_error(errc::invalid_argument, "unknown log level '" + std::string(name) +
                                                "' (use trace, debug, info, warn, error or off)");
}

}  // namespace cairn::log
