// IoT Edge's restart policy and back-off (docs/agent.md "Restart policy"):
// - a module that is not running is a restart candidate when its policy is `always`, or
//   `on-failure`/`on-unhealthy` and it failed (non-zero exit) or is unhealthy; `never` is never
//   restarted;
// - it waits min(cool_off_unit x 2^restartCount, max_cool_off) after its last exit (10 s, 20 s,
//   40 s, ... capped at 300 s) and is in `backoff` meanwhile;
// - after max_restarts restarts it stays `failed` and is left alone;
// - a module that stays up for `healthy_reset` (10 minutes) gets its restart count cleared.
//
// Thread-safety: pure functions.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "agent/manifest.hpp"
#include "agent/runtime.hpp"

namespace cairn::agent {

struct RestartSettings {
  std::chrono::milliseconds cool_off_unit{10000};   // CoolOffTimeUnitInSeconds
  std::chrono::milliseconds max_cool_off{300000};   // 5 minutes
  std::uint32_t max_restarts = 20;                  // MaxRestartCount
  std::chrono::milliseconds healthy_reset{600000};  // IntensiveCareTimeInMinutes = 10
};

inline bool restart_candidate(RestartPolicy policy, RuntimeStatus status) {
  if (status == RuntimeStatus::running) return false;
  switch (policy) {
    case RestartPolicy::always:
      return true;
    case RestartPolicy::on_failure:
    case RestartPolicy::on_unhealthy:
      return status == RuntimeStatus::failed || status == RuntimeStatus::unhealthy ||
             status == RuntimeStatus::dead;
    case RestartPolicy::never:
      return false;
  }
  return false;
}

inline std::chrono::milliseconds cool_off(const RestartSettings& s, std::uint32_t restart_count) {
  auto shift = std::min<std::uint32_t>(restart_count, 30);
  auto wait = s.cool_off_unit * (std::int64_t{1} << shift);
  return std::min(wait, s.max_cool_off);
}

}  // namespace cairn::agent
