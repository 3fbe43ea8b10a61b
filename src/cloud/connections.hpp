// ConnectionTracker: keeps the connectionState, connectionStateUpdatedTime and
// lastActivityTime of devices and modules in the cloud store up to date as clients connect to
// and disconnect from cairn-cloud's device endpoint.
//
// Failures to record (identity deleted meanwhile, store error) are logged and counted; they
// never affect the connection itself.
//
// Thread-safety: called on the hub's io thread, like the store it writes.
#pragma once

#include <cstdint>

#include "cloud/cloud_store.hpp"
#include "hub/services.hpp"

namespace cairn::cloud {

class ConnectionTracker final : public hub::ConnectionObserver {
 public:
  // `store` must outlive the tracker.
  explicit ConnectionTracker(CloudStore& store, Clock clock = {});

  void connected(const hub::Principal& who) override;
  void disconnected(const hub::Principal& who) override;

  std::uint64_t record_failures() const { return record_failures_; }

 private:
  void record(const hub::Principal& who, bool connected);

  CloudStore& store_;
  Clock clock_;
  std::uint64_t record_failures_ = 0;
};

}  // namespace cairn::cloud
