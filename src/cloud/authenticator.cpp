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

CloudAuthenticator::CloudAuthenticator(Registry& registry, std::string hostname,
                                       CloudAuthLimits limits, StoreRunner runner)
    : registry_(registry),
      hostname_(std::move(hostname)),
      limits_(limits),
      runner_(std::move(runner)) {}

Status CloudAuthenticator::check_connection_limit(const hub::Principal& p) {
  const std::size_t max = limits_.max_connections_per_device;
  if (max == 0 || !connection_count_) return {};
  const std::size_t live = connection_count_(p.device_id, p.client_id());
  if (live < max) return {};
  ++connections_refused_device_limit_;
  log::warn("cloud",
            "client={} refused: device {} already holds {} connections "
            "(--max-connections-per-device={})",
            p.client_id(), p.device_id, live, max);
  return make_error(errc::limit_exceeded,
                    fmt::format("'{}': device '{}' already holds the most connections allowed "
                                "({}): close one first",
                                p.client_id(), p.device_id, max));
}

Result<bool> CloudAuthenticator::verify(const hub::Credentials& creds) {
  const hub::Principal& p = creds.principal;
  const crypto::SasToken& token = creds.token;
  auto device = registry_.store().find_device(p.device_id);
  if (!device) return store_failure(p, device.error());
  if (!*device) return refused(p, "unknown device");
  const DeviceRecord& d = **device;
  if (!d.enabled) return refused(p, "the device is disabled");

  if (p.module_id.empty()) {
    if (!hub::signed_by(token, d.primary_key, d.secondary_key)) {
      return refused(p, "the SAS token is not signed with the device's key");
    }
    return false;
  }

  auto module = registry_.store().find_module(p.device_id, p.module_id);
  if (!module) return store_failure(p, module.error());
  if (*module && hub::signed_by(token, (*module)->primary_key, (*module)->secondary_key)) {
    return false;
  }
  const bool edge_signed = d.iot_edge && hub::signed_by(token, d.primary_key, d.secondary_key);
  if (!edge_signed) {
    return refused(p, *module ? "the SAS token is not signed with the module's key"
                              : "unknown module (and the token is not signed by an edge "
                                "device's key)");
  }
  if (*module) return false;
  if (!valid_identity_id(p.module_id)) {
    return refused(p, invalid_id_message("module id", p.module_id));
  }
  return true;
}

Status CloudAuthenticator::register_module(const hub::Principal& p) {
  auto existing = registry_.list_modules(p.device_id);
  if (!existing) return store_failure(p, existing.error());
  if (existing->size() >= limits_.max_modules_per_device) {
    ++modules_refused_quota_;
    log::warn("cloud",
              "client={} refused: edge device {} already has {} modules "
              "(--max-modules-per-device={}); delete unused ones or raise the quota",
              p.client_id(), p.device_id, existing->size(), limits_.max_modules_per_device);
    return make_error(errc::limit_exceeded,
                      fmt::format("'{}': device '{}' has reached its quota of {} modules",
                                  p.client_id(), p.device_id, limits_.max_modules_per_device));
  }
  auto created = registry_.ensure_module(p.device_id, p.module_id, kManagedByEdge);
  if (!created) return store_failure(p, created.error());
  ++modules_registered_;
  log::info("cloud", "registered module client={} on behalf of edge device", p.client_id());
  return {};
}

Result<hub::Principal> CloudAuthenticator::authenticate(const hub::AuthRequest& request,
                                                        std::int64_t now_unix_s) {
  auto creds = hub::check_credentials(request, hostname_, hostname_, now_unix_s,
                                      limits_.max_token_lifetime_secs);
  if (!creds) return std::move(creds).error();
  auto must_register = verify(*creds);
  if (!must_register) return std::move(must_register).error();
  CAIRN_TRY(check_connection_limit(creds->principal));
  if (*must_register) CAIRN_TRY(register_module(creds->principal));
  return creds->principal;
}

void CloudAuthenticator::authenticate_async(const hub::AuthRequest& request,
                                            std::int64_t now_unix_s, AuthReply reply) {
  if (!runner_) return reply(authenticate(request, now_unix_s));
  auto checked = hub::check_credentials(request, hostname_, hostname_, now_unix_s,
                                        limits_.max_token_lifetime_secs);
  if (!checked) return reply(std::move(checked).error());
  auto creds = std::make_shared<const hub::Credentials>(std::move(*checked));
  const std::string client = creds->principal.client_id();
  auto refused_in_time = [reply](const Error& e) { reply(e); };
  runner_.store(
      "authenticate client=" + client,
      [this, creds, reply, client, refused_in_time] {
        auto must_register = verify(*creds);
        runner_.io([this, creds, reply, client, refused_in_time,
                    must_register = std::move(must_register)] {
          if (!must_register) return reply(must_register.error());
          if (auto s = check_connection_limit(creds->principal); !s) return reply(s.error());
          if (!*must_register) return reply(creds->principal);
          runner_.store(
              "register module client=" + client,
              [this, creds, reply] {
                // Checked again here, in order with the registry's writes: keys changed since
                // the first check are not missed.
                auto still = verify(*creds);
                Status s = !still   ? Status(still.error())
                           : *still ? register_module(creds->principal)
                                    : Status{};
                runner_.io([creds, reply, s = std::move(s)] {
                  if (!s) return reply(s.error());
                  reply(creds->principal);
                });
              },
              refused_in_time);
        });
      },
      refused_in_time);
}

}  // namespace cairn::cloud
