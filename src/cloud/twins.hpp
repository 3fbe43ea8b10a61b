// CloudTwins: the twins of record of cairn-cloud — one per device and per module — and both
// ways of changing them:
//   - devices and modules, over MQTT (hub::TwinProvider): GET returns
//     {"desired":{…,"$version"},"reported":{…,"$version"}}; a reported patch is validated
//     against IoT Hub's limits (twin.hpp) and stored, or answered 400 {"message":…} with
//     nothing stored;
//   - the service, over REST: read the full IoT Hub twin JSON, PATCH (merge tags and desired)
//     and PUT (replace tags and desired), with If-Match etags. Reported properties belong to
//     the device and cannot be written this way.
// A service write returns the desired-properties patch (with its "$version") the owner must
// receive; the caller pushes it (the REST API does, through its push_desired hook), because
// delivery is the hub's business and happens only after the write is durable.
//
// Errors (service side): errc::invalid_argument / errc::limit_exceeded for a bad patch (400,
// nothing stored), errc::not_found (404), errc::cancelled for an If-Match mismatch (412), store
// errors (500).
//
// Thread-safety: one thread at a time, the store's. With a StoreRunner (cairn-cloud: its store
// worker), get_twin and patch_reported are called on the io thread, do their store work on the
// store's thread and reply on the io thread; a request that cannot be served in time (the
// database is locked, the store queue is full) is answered 503.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cloud/cloud_store.hpp"
#include "cloud/store_worker.hpp"
#include "hub/services.hpp"

namespace cairn::cloud {

struct TwinWrite {
  TwinRecord twin;  // as stored after the write
  // The patch to deliver to the twin's owner, when its desired properties changed.
  std::optional<nlohmann::json> desired_patch;
};

struct TwinCounters {
  std::uint64_t reported_patches = 0;   // stored
  std::uint64_t reported_rejected = 0;  // answered 400
};

class CloudTwins final : public hub::TwinProvider {
 public:
  // `store` must outlive this object. `runner`: where the store lives for the device side
  // (empty: here).
  explicit CloudTwins(CloudStore& store, StoreRunner runner = {});

  // --- hub::TwinProvider (device side) ---
  void get_twin(const hub::Principal& who, Reply reply) override;
  void patch_reported(const hub::Principal& who, std::string_view body, Reply reply) override;

  // --- service side ---
  // The stored twin; errc::not_found when the device or module has none.
  Result<TwinRecord> find(const TwinKey& key);
  // PATCH: {"tags":{…}, "properties":{"desired":{…}}}, both optional, merged as JSON merge
  // patches. Other top-level members (deviceId, etag, …) are ignored.
  Result<TwinWrite> update(const TwinKey& key, const nlohmann::json& patch,
                           std::string_view if_match);
  // PUT: tags and properties.desired of `body` replace the stored ones (absent = empty).
  Result<TwinWrite> replace(const TwinKey& key, const nlohmann::json& body,
                            std::string_view if_match);
  // The IoT Hub service `Twin` JSON of a stored twin (identity fields from the registry).
  // `connected_now` overrides the stored connection state.
  Result<nlohmann::json> service_json(const TwinRecord& twin,
                                      std::optional<bool> connected_now = std::nullopt);

  // The desired section a service body carries, without the '$' members ($version,
  // $metadata) clients echo back. errc::invalid_argument if it is there but not an object;
  // an empty object when absent.
  static Result<nlohmann::json> desired_of(const nlohmann::json& properties_holder,
                                           std::string_view what);

  const TwinCounters& counters() const { return counters_; }

 private:
  Result<TwinWrite> commit(const TwinRecord& before, twin::Twin after,
                           std::optional<nlohmann::json> desired_patch);
  void get_twin_here(const hub::Principal& who, const Reply& reply);
  void patch_reported_here(const hub::Principal& who, std::string_view body, const Reply& reply);
  // Runs `work` with a reply that answers on the io thread, on the store's thread.
  void on_store(std::string what, Reply reply, std::function<void(const Reply&)> work);

  CloudStore& store_;
  StoreRunner runner_;
  TwinCounters counters_;
};

}  // namespace cairn::cloud
