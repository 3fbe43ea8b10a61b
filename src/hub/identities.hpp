// Module identities of this edge device and the authentication of MQTT CONNECTs against them
// (docs/protocol.md §3.2): client id "{device}/{module}", username
// "{host}/{device}/{module}/?api-version=...", password a SAS token for
// "{host}/devices/{device}/modules/{module}" signed with the module's primary or secondary key.
//
// Thread-safety: IdentityRegistry is used from the hub's network thread only; persistence goes
// through the MessageStore (thread-safe), and mutations report completion via callbacks that
// run on the store thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/crypto.hpp"
#include "core/result.hpp"
#include "store/message_store.hpp"

namespace cairn::hub {

struct Identity {
  std::string module_id;
  std::string primary_key;    // base64
  std::string secondary_key;  // base64
  std::string generation_id;
};

// Who a connection authenticated as.
struct Principal {
  std::string device_id;
  std::string module_id;  // empty for a leaf device
  // When the credential expires (Unix seconds; 0 = never): the connection is closed then, as
  // IoT Hub does, so clients must renew their tokens.
  std::int64_t token_expiry = 0;
  std::string client_id() const {
    return module_id.empty() ? device_id : device_id + "/" + module_id;
  }
};

class IdentityRegistry {
 public:
  IdentityRegistry(store::MessageStore& store, std::string device_id);

  // Loads persisted identities (start-up).
  Status load();

  // Creates a module identity with fresh keys, or returns the existing one unchanged.
  // `done` runs once the identity is durable.
  void create(const std::string& module_id, std::function<void(Result<Identity>)> done);
  void remove(const std::string& module_id, std::function<void(Status)> done);
  std::optional<Identity> find(const std::string& module_id) const;
  std::vector<Identity> list() const;

  const std::string& device_id() const { return device_id_; }

 private:
  store::MessageStore& store_;
  std::string device_id_;
  std::map<std::string, Identity> identities_;
};

// Module names follow the IoT Edge manifest rule ^[a-zA-Z0-9_-]+$ (plus '$' for system modules).
bool valid_module_id(const std::string& id);

struct AuthRequest {
  std::string client_id;
  std::string username;
  std::optional<std::string> password;
};

// errc::unauthorized if the token expires more than `max_lifetime_secs` after `now_unix_s`
// (0 = no maximum). `setting` names the option that sets the maximum, for the message.
Status check_token_lifetime(std::int64_t expiry_unix_s, std::int64_t now_unix_s,
                            std::int64_t max_lifetime_secs, std::string_view setting);

// The role-independent part of checking a CONNECT: username and client id shape, the SAS token's
// expiry, lifetime (at most `max_lifetime_secs` ahead; 0 = any) and audience
// ({host}/devices/{d}[/modules/{m}] for the identity the username names). The caller then checks
// the signature against the keys it knows (signed_by).
struct Credentials {
  Principal principal;
  crypto::SasToken token;
};
Result<Credentials> check_credentials(const AuthRequest& request,
                                      const std::string& iothub_hostname,
                                      const std::string& gateway_hostname, std::int64_t now_unix_s,
                                      std::int64_t max_lifetime_secs);
// True if `token` was signed with either key (base64).
bool signed_by(const crypto::SasToken& token, std::string_view primary_key,
               std::string_view secondary_key);

// Validates a CONNECT against this edge device's module identities. errc::invalid_argument for a
// malformed username/client id (CONNACK 2 or 4), errc::unauthorized for a bad, expired or unknown
// credential (CONNACK 5).
Result<Principal> authenticate(const AuthRequest& request, const IdentityRegistry& registry,
                               const std::string& iothub_hostname,
                               const std::string& gateway_hostname, std::int64_t now_unix_s,
                               std::int64_t max_lifetime_secs);

// "HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...;GatewayHostName=..."
std::string connection_string(const Identity& id, const std::string& device_id,
                              const std::string& iothub_hostname,
                              const std::string& gateway_hostname);

}  // namespace cairn::hub
