// TwinCache: the edge role's twin provider (docs/protocol.md §8.3). Every module twin is kept
// durably in the store and served from there, online or not.
//
// - GET: with the cloud reachable for that identity the twin is fetched from the cloud first
//   (and cached); otherwise, or if the fetch fails, the cached twin is served.
// - Reported patch: validated (400 and nothing stored on a violation), merged into the cached
//   twin and folded into the patch still to send to the cloud (twin::compose_patches, as
//   edgeHub collapses them); answered 204 once both are on disk. At most two patches wait:
//   the one the upstream link is sending and the one collecting what came since, each within
//   twin::kMaxPatchBytes (beyond it the client's patch is refused with 400), so the pending
//   state stays bounded however long the device is offline. The upstream link sends them in
//   order when it can (pending_reported / reported_sent).
// - Desired patch from the cloud: applied and forwarded when its $version follows the cached
//   one; otherwise the full twin is fetched and the client gets one patch with exactly what it
//   missed (resync). The upstream link calls resync() after every (re)connection.
// - Local desired patches (standalone devices, `cairn twin`): patch_desired_local().
//
// The twin and its pending patches live in one store record per client, so a crash never
// separates them.
//
// Thread-safety: the hub's io_context thread only; store callbacks are posted back to it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "hub/services.hpp"
#include "net/asio.hpp"
#include "store/message_store.hpp"
#include "twin/twin.hpp"

namespace cairn::hub {

// What the twin cache needs from the upstream link.
class TwinUpstream {
 public:
  virtual ~TwinUpstream() = default;
  // The cloud connection of this identity is up.
  virtual bool online(const std::string& client_id) const = 0;
  // GET the twin from the cloud: the {"desired":…,"reported":…} view.
  virtual void fetch_twin(const std::string& client_id,
                          std::function<void(Result<nlohmann::json>)> done) = 0;
  // Reported patches wait for this identity.
  virtual void reported_pending(const std::string& client_id) = 0;
};

class TwinCache : public TwinProvider, public std::enable_shared_from_this<TwinCache> {
 public:
  // Delivers a desired patch (with "$version") to a connected, subscribed client.
  using NotifyDesired = std::function<bool(const std::string& client_id, const nlohmann::json&)>;

  TwinCache(asio::io_context& io, store::MessageStore& store, NotifyDesired notify);

  void set_upstream(TwinUpstream* upstream) { upstream_ = upstream; }

  void get_twin(const Principal& who, Reply reply) override;
  void patch_reported(const Principal& who, std::string_view body, Reply reply) override;

  // A desired patch arrived from the cloud.
  void cloud_desired(const std::string& client_id, const nlohmann::json& patch);
  // Fetches the cloud twin and brings the cache and the client up to date.
  void resync(const std::string& client_id, std::function<void()> done = {});
  // Applies a desired patch locally (no cloud) and forwards it. Returns the delivered patch.
  void patch_desired_local(const std::string& client_id, const nlohmann::json& patch,
                           std::function<void(Result<nlohmann::json>)> done);

  // The oldest reported patch not yet accepted by the cloud, and its removal once it is.
  std::optional<nlohmann::json> pending_reported(const std::string& client_id);
  void reported_sent(const std::string& client_id);
  // Identities with reported patches waiting, from this run or an earlier one.
  std::vector<std::string> clients_with_pending();

  // The cached twin ({"desired":…,"reported":…}), or nullopt if none is cached.
  std::optional<nlohmann::json> cached_view(const std::string& client_id);

  struct Counters {
    std::uint64_t gets_served_from_cloud = 0;
    std::uint64_t gets_served_from_cache = 0;
    std::uint64_t reported_patches = 0;
    std::uint64_t reported_rejected = 0;
    // Refused because the patch waiting for the cloud would outgrow twin::kMaxPatchBytes.
    std::uint64_t reported_over_limit = 0;
    std::uint64_t desired_forwarded = 0;
    std::uint64_t resyncs = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  struct Entry {
    twin::Twin twin;
    std::vector<nlohmann::json> pending;  // reported patches not yet accepted by the cloud
    // pending.front() went to the upstream link: later patches must not fold into it.
    bool front_sent = false;
  };
  Entry& entry(const std::string& client_id);
  void persist(const std::string& client_id, std::function<void(Status)> done);
  // Takes the cloud's twin as the truth, keeping local reported patches the cloud lacks.
  void adopt_cloud_twin(const std::string& client_id, twin::Twin cloud);

  asio::io_context& io_;
  store::MessageStore& store_;
  NotifyDesired notify_;
  TwinUpstream* upstream_ = nullptr;
  std::map<std::string, Entry> entries_;
  Counters counters_;
};

}  // namespace cairn::hub
