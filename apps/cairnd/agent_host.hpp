// The hub side of the agent's AgentHost: module identities from the hub's registry (and, with a
// cloud link, in the cloud's: see ensure_identity), routes applied live, module desired properties
// and $edgeAgent reported properties through the twin cache. Each call is posted to the hub's io
// thread and waited for (the agent's thread may block; the hub's may not).
#pragma once

#include <memory>

#include "agent/agent.hpp"
#include "cloud_deletions.hpp"
#include "hub/config.hpp"
#include "hub/hub.hpp"
#include "hub/twin_cache.hpp"
#include "hub/upstream.hpp"

namespace cairn::cairnd {

class HubAgentHost : public agent::AgentHost {
 public:
  // `upstream` is null when the device has no cloud link. `store` keeps the cloud identity
  // deletions still to be made.
  HubAgentHost(hub::Hub& hub, store::MessageStore& store, std::shared_ptr<hub::TwinCache> twins,
               std::shared_ptr<hub::Upstream> upstream, std::int64_t default_ttl_secs);

  // The local identity, and with a cloud link the module's cloud link opened at once: the cloud
  // registers a module of an edge device on its first connection signed with the device's key
  // (docs/agent.md "Identities"), so a deployed module has its cloud identity and twin before it
  // ever connects, whichever source deployed it. A deletion of its cloud identity still pending
  // from an earlier removal is called off.
  Result<agent::ModuleIdentity> ensure_identity(const std::string& module) override;
  // The local identity (its session closed at once) and, with a cloud link, the module's link
  // and its cloud identity: DELETE /devices/{device}/modules/{module} on the cloud's HTTPS port
  // (upstream.https_port), signed with the device key, made in the background and retried until
  // the cloud confirms (CloudDeletions). The local removal does not wait for the cloud.
  Status remove_identity(const std::string& module) override;
  std::string validate_edgehub(const nlohmann::json& desired) override;
  Status apply_edgehub(const nlohmann::json& desired) override;
  void set_module_desired(const std::string& module, const nlohmann::json& desired) override;
  void report(const std::string& system_module, const nlohmann::json& patch) override;

 private:
  // One deletion attempt waits this long for the cloud's answer.
  static constexpr int kCloudRequestTimeoutSecs = 15;
  static constexpr std::int64_t kCloudRequestTokenSecs = 300;
  Status delete_cloud_identity(const std::string& module) const;

  hub::Hub& hub_;
  std::shared_ptr<hub::TwinCache> twins_;
  std::shared_ptr<hub::Upstream> upstream_;
  std::int64_t default_ttl_secs_;
  std::unique_ptr<CloudDeletions> cloud_deletions_;  // with a cloud link only
};

}  // namespace cairn::cairnd
