#include "hub/identities.hpp"

#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "core/message.hpp"

namespace cairn::hub {
namespace {

constexpr const char* kTable = "identities";

std::string to_json(const Identity& id) {
  return dump_json(nlohmann::json{{"moduleId", id.module_id},
                                  {"primaryKey", id.primary_key},
                                  {"secondaryKey", id.secondary_key},
                                  {"generationId", id.generation_id}});
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto pos = s.find(sep, start);
    out.push_back(
        s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

}  // namespace

bool valid_module_id(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || (c == '$' && i == 0);
    if (!ok) return false;
  }
  return true;
}

IdentityRegistry::IdentityRegistry(store::MessageStore& store, std::string device_id)
    : store_(store), device_id_(std::move(device_id)) {}

Status IdentityRegistry::load() {
  auto rows = store_.list(kTable);
  if (!rows) return std::move(rows).error();
  for (const auto& [key, value] : *rows) {
    auto j = nlohmann::json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return make_error(errc::corruption, "stored identity '" + key + "' is not valid JSON");
    }
    Identity id{key, j.value("primaryKey", ""), j.value("secondaryKey", ""),
                j.value("generationId", "")};
    identities_[key] = std::move(id);
  }
  return {};
}

void IdentityRegistry::create(const std::string& module_id,
                              std::function<void(Result<Identity>)> done) {
  if (!valid_module_id(module_id)) {
    done(make_error(
        errc::invalid_argument,
        "module id '" + module_id + "' must match ^[a-zA-Z0-9_-]+$ (at most 128 chars)"));
    return;
  }
  if (auto it = identities_.find(module_id); it != identities_.end()) {
    done(it->second);
    return;
  }
  Identity id{module_id, crypto::generate_key(), crypto::generate_key(),
              crypto::sha256_hex(crypto::random_bytes(16)).substr(0, 16)};
  identities_[module_id] = id;
  store_.put(kTable, module_id, to_json(id), [id, done = std::move(done)](Status s) {
    if (!s) {
      done(std::move(s).error());
    } else {
      done(id);
    }
  });
}

void IdentityRegistry::remove(const std::string& module_id, std::function<void(Status)> done) {
  if (identities_.erase(module_id) == 0) {
    done(make_error(errc::not_found, "no identity named '" + module_id + "'"));
    return;
  }
  store_.erase(kTable, module_id, std::move(done));
}

std::optional<Identity> IdentityRegistry::find(const std::string& module_id) const {
  auto it = identities_.find(module_id);
  if (it == identities_.end()) return std::nullopt;
  return it->second;
}

std::vector<Identity> IdentityRegistry::list() const {
  std::vector<Identity> out;
  for (const auto& [k, v] : identities_) out.push_back(v);
  return out;
}

Status check_token_lifetime(std::int64_t expiry_unix_s, std::int64_t now_unix_s,
                            std::int64_t max_lifetime_secs, std::string_view setting) {
  if (max_lifetime_secs <= 0 || expiry_unix_s - now_unix_s <= max_lifetime_secs) return {};
  return make_error(errc::unauthorized,
                    "SAS token is valid for " + std::to_string(expiry_unix_s - now_unix_s) +
                        "s, longer than the maximum of " + std::to_string(max_lifetime_secs) +
                        "s (" + std::string(setting) + "): use a shorter-lived token");
}

Result<Credentials> check_credentials(const AuthRequest& request,
                                      const std::string& iothub_hostname,
                                      const std::string& gateway_hostname, std::int64_t now_unix_s,
                                      std::int64_t max_lifetime_secs) {
  // Username: {host}/{device}/{module}/?{props} (or without '?' when the last segment holds
  // api-version=). The host part is not checked here; the token audience is.
  std::string_view user = request.username;
  std::string_view props;
  if (auto q = user.find("/?"); q != std::string_view::npos) {
    props = user.substr(q + 2);
    user = user.substr(0, q);
  } else if (auto slash = user.rfind('/');
             slash != std::string_view::npos &&
             user.substr(slash + 1).find("api-version=") != std::string_view::npos) {
    props = user.substr(slash + 1);
    user = user.substr(0, slash);
  }
  if (props.find("api-version=") == std::string_view::npos) {
    return make_error(errc::invalid_argument, "username lacks the mandatory api-version");
  }
  auto parts = split(user, '/');
  if (parts.size() != 2 && parts.size() != 3) {
    return make_error(errc::invalid_argument,
                      "username must be {host}/{device}[/{module}]/?api-version=...");
  }
  Principal p{std::string(parts[1]), parts.size() == 3 ? std::string(parts[2]) : std::string()};
  if (p.device_id.empty() || (parts.size() == 3 && p.module_id.empty())) {
    return make_error(errc::invalid_argument, "username has an empty device or module id");
  }
  // Case-sensitive, as edgeHub compares client id and username identity ordinally.
  if (request.client_id != p.client_id()) {
    return make_error(errc::invalid_argument, "client id '" + request.client_id +
                                                  "' does not match the username identity '" +
                                                  p.client_id() + "'");
  }
  if (!request.password) return make_error(errc::unauthorized, "no SAS token (password) given");
  auto token = crypto::parse_sas_token(*request.password);
  if (!token) return make_error(errc::unauthorized, "password is not a SAS token");
  if (token->expiry <= now_unix_s) return make_error(errc::unauthorized, "SAS token expired");
  CAIRN_TRY(check_token_lifetime(token->expiry, now_unix_s, max_lifetime_secs,
                                 "max_token_lifetime_secs"));

  auto aud = split(token->resource, '/');
  // {host}/devices/{device}[/modules/{module}]
  bool shape_ok = (aud.size() == 3 || aud.size() == 5) && aud[1] == "devices" &&
                  (aud.size() == 3 || aud[3] == "modules");
  if (!shape_ok) return make_error(errc::unauthorized, "SAS token audience is malformed");
  if (!iequals(aud[0], iothub_hostname) && !iequals(aud[0], gateway_hostname)) {
    return make_error(errc::unauthorized,
                      "SAS token audience names another hub '" + std::string(aud[0]) + "'");
  }
  std::string_view aud_module = aud.size() == 5 ? aud[4] : std::string_view{};
  if (aud[2] != p.device_id || aud_module != p.module_id) {
    return make_error(errc::unauthorized, "SAS token was issued for another identity");
  }
  p.token_expiry = token->expiry;
  return Credentials{std::move(p), std::move(*token)};
}

bool signed_by(const crypto::SasToken& token, std::string_view primary_key,
               std::string_view secondary_key) {
  return crypto::verify_sas_signature(token, primary_key) ||
         crypto::verify_sas_signature(token, secondary_key);
}

Result<Principal> authenticate(const AuthRequest& request, const IdentityRegistry& registry,
                               const std::string& iothub_hostname,
                               const std::string& gateway_hostname, std::int64_t now_unix_s,
                               std::int64_t max_lifetime_secs) {
  auto creds =
      check_credentials(request, iothub_hostname, gateway_hostname, now_unix_s, max_lifetime_secs);
  if (!creds) return creds.error();
  const Principal& p = creds->principal;
  if (p.device_id != registry.device_id() || p.module_id.empty()) {
    return make_error(errc::unauthorized, "unknown identity '" + p.client_id() + "'");
  }
  auto identity = registry.find(p.module_id);
  if (!identity) return make_error(errc::unauthorized, "unknown identity '" + p.client_id() + "'");
  if (!signed_by(creds->token, identity->primary_key, identity->secondary_key)) {
    return make_error(errc::unauthorized, "SAS token signature does not match the identity's keys");
  }
  return p;
}

std::string connection_string(const Identity& id, const std::string& device_id,
                              const std::string& iothub_hostname,
                              const std::string& gateway_hostname) {
  return "HostName=" + iothub_hostname + ";DeviceId=" + device_id + ";ModuleId=" + id.module_id +
         ";SharedAccessKey=" + id.primary_key + ";GatewayHostName=" + gateway_hostname;
}

}  // namespace cairn::hub
