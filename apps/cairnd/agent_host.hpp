// The hub side of the agent's AgentHost: module identities from the hub's registry, routes
// applied live, module desired properties and $edgeAgent reported properties through the twin
// cache. Each call is posted to the hub's io thread and waited for (the agent's thread may
// block; the hub's may not).
#pragma once

#include <memory>

#include "agent/agent.hpp"
#include "hub/config.hpp"
#include "hub/hub.hpp"
#include "hub/twin_cache.hpp"

namespace cairn::cairnd {

class HubAgentHost : public agent::AgentHost {
 public:
  HubAgentHost(hub::Hub& hub, std::shared_ptr<hub::TwinCache> twins, std::int64_t default_ttl_secs)
      : hub_(hub), twins_(std::move(twins)), default_ttl_secs_(default_ttl_secs) {}

  Result<agent::ModuleIdentity> ensure_identity(const std::string& module) override;
  Status remove_identity(const std::string& module) override;
  std::string validate_edgehub(const nlohmann::json& desired) override;
  Status apply_edgehub(const nlohmann::json& desired) override;
  void set_module_desired(const std::string& module, const nlohmann::json& desired) override;
  void report(const std::string& system_module, const nlohmann::json& patch) override;

 private:
  hub::Hub& hub_;
  std::shared_ptr<hub::TwinCache> twins_;
  std::int64_t default_ttl_secs_;
};

}  // namespace cairn::cairnd
