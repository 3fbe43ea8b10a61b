// ConnectionTracker: keeps the connectionState, connectionStateUpdatedTime and
// lastActivityTime of devices and modules in the cloud store up to date as clients connect to
// and disconnect from cairn-cloud's device endpoint.
//
// Failures to record (identity deleted meanwhile, store error) are logged and counted; they
// never affect the connection itself. cairn-cloud hands the records to the telemetry writer's
// thread (the RecordFn constructor), so that a database locked by another process never
// stalls a CONNECT on the io thread; with a store they are written at once.
//
// Thread-safety: called on the hub's io thread.
#pragma once

#include <cstdint>
#include <functional>

#include "cloud/cloud_store.hpp"
#include "hub/services.hpp"

namespace cairn::cloud {

class ConnectionTracker final : public hub::ConnectionObserver {
 public:
  // Records `connected` for `who` at `at_ms`, later or elsewhere.
  using RecordFn = std::function<void(const TwinKey& who, bool connected, std::int64_t at_ms)>;

  // Writes each record to `store` at once; `store` must outlive the tracker.
  explicit ConnectionTracker(CloudStore& store, Clock clock = {});
  // Hands each record to `record` (which counts and logs its own failures).
  explicit ConnectionTracker(RecordFn record, Clock clock = {});

  void connected(const hub::Principal& who) override;
  void disconnected(const hub::Principal& who) override;

  std::uint64_t record_failures() const { return record_failures_; }

 private:
  void record(const hub::Principal& who, bool connected);

  CloudStore* store_ = nullptr;
  RecordFn record_;
  Clock clock_;
  std::uint64_t record_failures_ = 0;
};

}  // namespace cairn::cloud
