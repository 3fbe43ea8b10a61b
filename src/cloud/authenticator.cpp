#include "cloud/authenticator.hpp"

#include <fmt/format.h>

#include "cloud/ids.hpp"
#include "core/log.hpp"
#include "hub/identities.hpp"

namespace cairn::cloud {
namespace {

Error refused(const hub::Principal& p, std::string_view why) {
  return make_error(errc::unauthorized, fmt::format("'{}': {}", p.client_id(), why));
}

// A store failure is not the client's fault: errc::unavailable (MQTT's "server unavailable"
// is the fitting CONNACK), logged as an error rather than as a refused credential.
Error store_failure(const hub::Principal& p, const Error& e) {
  log::error("cloud", "authenticating client={} failed on the store: {}", p.client_id(),
             e.to_string());
  return make_error(errc::unavailable,
                    fmt::format("'{}': the registry is unavailable", p.client_id()));
}

}  // namespace

CloudAuthenticator::CloudAuthenticator(Registry& registry, std::string hostname)
    : registry_(registry), hostname_(std::move(hostname)) {}

Result<hub::Principal> CloudAuthenticator::authenticate(const hub::AuthRequest& request,
                                                        std::int64_t now_unix_s) {
  auto creds = hub::check_credentials(request, hostname_, hostname_, now_unix_s);
  if (!creds) return std::move(creds).error();
  const hub::Principal& p = creds->principal;
  const crypto::SasToken& token = creds->token;

  auto device = registry_.store().find_device(p.device_id);
  if (!device) return store_failure(p, device.error());
  if (!*device) return refused(p, "unknown device");
  const DeviceRecord& d = **device;
  if (!d.enabled) return refused(p, "the device is disabled");

  if (p.module_id.empty()) {
    if (!hub::signed_by(token, d.primary_key, d.secondary_key)) {
      return refused(p, "the SAS token is not signed with the device's key");
    }
    return p;
  }

  auto module = registry_.store().find_module(p.device_id, p.module_id);
  if (!module) return store_failure(p, module.error());
  if (*module && hub::signed_by(token, (*module)->primary_key, (*module)->secondary_key)) {
    return p;
  }
  const bool edge_signed = d.iot_edge && hub::signed_by(token, d.primary_key, d.secondary_key);
  if (!edge_signed) {
    return refused(p, *module ? "the SAS token is not signed with the module's key"
                              : "unknown module (and the token is not signed by an edge "
                                "device's key)");
  }
  if (!*module) {
    if (!valid_identity_id(p.module_id)) {
      return refused(p, invalid_id_message("module id", p.module_id));
    }
    auto created = registry_.ensure_module(p.device_id, p.module_id, kManagedByEdge);
    if (!created) return store_failure(p, created.error());
    ++modules_registered_;
    log::info("cloud", "registered module client={} on behalf of edge device", p.client_id());
  }
  return p;
}

}  // namespace cairn::cloud
