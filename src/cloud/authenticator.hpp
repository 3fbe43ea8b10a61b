// CloudAuthenticator: checks the MQTT CONNECTs that reach cairn-cloud's device endpoint against
// the registry (docs/protocol.md §3.2).
//
// The username, client id, token expiry and audience are checked by hub::check_credentials
// (the audience host must be cairn-cloud's hostname). Then the signature:
//   - a device ("d"): signed with the device's primary or secondary key;
//   - a module ("d/m"): signed with the module's key, or, when the device is an edge device
//     (capabilities.iotEdge), with the device's key. The edge hub opens one upstream
//     connection per module identity and signs them all with its device key ("on behalf of");
//     a module the registry does not know yet is then registered on the spot (managedBy
//     "iotEdge", with an empty twin), as the edge device is the authority on its own modules.
// Unknown identities, disabled devices (and their modules) and bad signatures are
// errc::unauthorized (CONNACK 5); a malformed username or client id is errc::invalid_argument;
// a failing store is errc::unavailable (CONNACK 3 fits).
//
// Thread-safety: as the Registry (one thread: the hub's io thread).
#pragma once

#include <cstdint>
#include <string>

#include "cloud/registry.hpp"
#include "hub/services.hpp"

namespace cairn::cloud {

// The managedBy value of modules an edge device creates.
inline constexpr const char* kManagedByEdge = "iotEdge";

class CloudAuthenticator final : public hub::Authenticator {
 public:
  // `registry` must outlive the authenticator. `hostname`: the IoT Hub hostname devices put in
  // their token audience (compared case-insensitively).
  CloudAuthenticator(Registry& registry, std::string hostname);

  Result<hub::Principal> authenticate(const hub::AuthRequest& request,
                                      std::int64_t now_unix_s) override;

  // Modules registered because their edge device connected them.
  std::uint64_t modules_registered() const { return modules_registered_; }

 private:
  Registry& registry_;
  std::string hostname_;
  std::uint64_t modules_registered_ = 0;
};

}  // namespace cairn::cloud
