#include "cloud/connections.hpp"

#include "core/clock.hpp"
#include "core/log.hpp"

namespace cairn::cloud {

ConnectionTracker::ConnectionTracker(CloudStore& store, Clock clock)
    : store_(&store), clock_(std::move(clock)) {}

ConnectionTracker::ConnectionTracker(RecordFn record, Clock clock)
    : record_(std::move(record)), clock_(std::move(clock)) {}

void ConnectionTracker::connected(const hub::Principal& who) { record(who, true); }

void ConnectionTracker::disconnected(const hub::Principal& who) { record(who, false); }

void ConnectionTracker::record(const hub::Principal& who, bool connected) {
  const std::int64_t now = clock_ ? clock_() : now_unix_ms();
  if (record_) {
    record_(TwinKey{who.device_id, who.module_id}, connected, now);
    return;
  }
  auto s = store_->set_connection_state(TwinKey{who.device_id, who.module_id}, connected, now);
  if (!s) {
    ++record_failures_;
    log::warn("cloud", "recording client={} connected={} failed: {}", who.client_id(), connected,
              s.error().to_string());
  }
}

}  // namespace cairn::cloud
