// Deployments: IoT Hub's applyConfigurationContent for one edge device. The body is a
// deployment manifest, {"modulesContent": {"$edgeAgent": {"properties.desired": {...}},
// "$edgeHub": {...}, "<module>": {...}}}: the desired properties of each listed module twin
// are replaced by the given ones, and the module identities that do not exist yet are created
// (managedBy "iotEdge"). The edge device's agent and hub learn the new deployment from their
// twins' desired properties.
//
// All or nothing: every module entry is validated (ids, shapes, twin limits) before anything is
// written, and the identities, twins and the stored deployment are one store write.
//
// Errors: errc::not_found (no such device), errc::invalid_argument / errc::limit_exceeded (not an
// edge device, malformed content, a desired section breaking the twin rules; the message names
// the module), store errors.
//
// Thread-safety: one thread, like the store.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cloud/registry.hpp"
#include "cloud/twins.hpp"

namespace cairn::cloud {

// A desired-properties patch to deliver to a connected client ("d/m") after a write.
struct DesiredPush {
  std::string client_id;
  nlohmann::json patch;
};

class Deployments {
 public:
  // Both must outlive this object.
  Deployments(Registry& registry, CloudTwins& twins);

  // Applies `content` to `device_id`; returns the patches to push to the modules.
  Result<std::vector<DesiredPush>> apply(const std::string& device_id,
                                         const nlohmann::json& content);
  // The last deployment applied to the device, if any.
  Result<std::optional<DeploymentRecord>> last(const std::string& device_id);

 private:
  Registry& registry_;
  CloudTwins& twins_;
};

}  // namespace cairn::cloud
