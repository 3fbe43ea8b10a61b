// Module identity: connection strings and the IoT Edge environment, plus the small timing rules
// (token renewal, reconnection back-off) that the client and its tests share.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cairn/module_client.hpp"
#include "core/crypto.hpp"
#include "core/message.hpp"
#include "net/service_client.hpp"

namespace cairn::sdk {

std::string_view to_string(ConnectionState state) {
  switch (state) {
    case ConnectionState::connecting:
      return "connecting";
    case ConnectionState::connected:
      return "connected";
    case ConnectionState::disconnected:
      return "disconnected";
    case ConnectionState::stopped:
      return "stopped";
  }
  return "unknown";
}

std::optional<std::string> InputMessage::app_property(std::string_view name) const {
  for (const auto& [key, value] : properties.app) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

Result<ConnectionSettings> settings_from_connection_string(std::string_view text) {
  const auto fields = net::parse_connection_string(text);
  const auto field = [&](const char* name) -> std::string {
    auto it = fields.find(name);
    return it == fields.end() ? std::string{} : it->second;
  };
  ConnectionSettings s;
  s.iothub_hostname = field("HostName");
  s.device_id = field("DeviceId");
  s.module_id = field("ModuleId");
  s.shared_access_key = field("SharedAccessKey");
  s.gateway_hostname = field("GatewayHostName");
  std::string missing;
  for (const auto& [name, value] :
       {std::pair{"HostName", &s.iothub_hostname}, std::pair{"DeviceId", &s.device_id},
        std::pair{"ModuleId", &s.module_id}, std::pair{"SharedAccessKey", &s.shared_access_key}}) {
    if (value->empty()) missing += missing.empty() ? name : std::string(", ") + name;
  }
  if (!missing.empty()) {
    if (fields.contains("SharedAccessSignature")) {
      return make_error(errc::invalid_argument,
                        "connection string: SharedAccessSignature is not supported; give the "
                        "module's SharedAccessKey");
    }
    return make_error(errc::invalid_argument,
                      "module connection string lacks " + missing +
                          " (expected HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...)");
  }
  if (auto key = crypto::base64_decode(s.shared_access_key); !key || key->empty()) {
    return make_error(errc::invalid_argument, "connection string: SharedAccessKey is not base64");
  }
  return s;
}

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

Result<ConnectionSettings> settings_from_environment(const EnvLookup& env) {
  const auto get = [&](const char* name) {
    auto v = env(name);
    return v ? *v : std::string{};
  };
  if (auto cs = get("EdgeHubConnectionString"); !cs.empty()) {
    auto s = settings_from_connection_string(cs);
    if (!s)
      return make_error(errc::invalid_argument, "EdgeHubConnectionString: " + s.error().message);
    s->ca_file = get("EdgeModuleCACertificateFile");
    return s;
  }
  ConnectionSettings s;
  s.workload_uri = get("IOTEDGE_WORKLOADURI");
  s.device_id = get("IOTEDGE_DEVICEID");
  s.module_id = get("IOTEDGE_MODULEID");
  s.iothub_hostname = get("IOTEDGE_IOTHUBHOSTNAME");
  s.generation_id = get("IOTEDGE_MODULEGENERATIONID");
  s.gateway_hostname = get("IOTEDGE_GATEWAYHOSTNAME");
  s.ca_file = get("EdgeModuleCACertificateFile");
  if (auto v = get("IOTEDGE_APIVERSION"); !v.empty()) s.workload_api_version = v;
  const std::string scheme = get("IOTEDGE_AUTHSCHEME");
  std::string missing;
  for (const auto& [name, value] :
       {std::pair{"IOTEDGE_WORKLOADURI", &s.workload_uri},
        std::pair{"IOTEDGE_DEVICEID", &s.device_id}, std::pair{"IOTEDGE_MODULEID", &s.module_id},
        std::pair{"IOTEDGE_IOTHUBHOSTNAME", &s.iothub_hostname},
        std::pair{"IOTEDGE_MODULEGENERATIONID", &s.generation_id}}) {
    if (value->empty()) missing += missing.empty() ? name : std::string(", ") + name;
  }
  if (scheme.empty()) missing += missing.empty() ? "IOTEDGE_AUTHSCHEME" : ", IOTEDGE_AUTHSCHEME";
  if (!missing.empty()) {
    return make_error(errc::invalid_argument, "not an IoT Edge module environment: missing " +
                                                  missing + " (or set EdgeHubConnectionString)");
  }
  if (!iequals(scheme, "sasToken")) {
    return make_error(errc::invalid_argument,
                      "IOTEDGE_AUTHSCHEME is '" + scheme + "'; only sasToken is supported");
  }
  if (!s.workload_uri.starts_with("unix://") && !s.workload_uri.starts_with("http://")) {
    return make_error(errc::invalid_argument, "IOTEDGE_WORKLOADURI '" + s.workload_uri +
                                                  "' is neither unix:///path nor http://host:port");
  }
  return s;
}

std::chrono::milliseconds token_renewal_delay(std::chrono::seconds validity,
                                              std::chrono::seconds margin) {
  using std::chrono::milliseconds;
  const milliseconds life = validity;
  if (life <= milliseconds{2000}) return life / 2;
  milliseconds delay = life - milliseconds(margin);
  delay = std::max(delay, life / 2);
  delay = std::min(delay, life - milliseconds{1000});
  return delay;
}

std::chrono::milliseconds reconnect_backoff(int attempt, std::chrono::milliseconds min,
                                            std::chrono::milliseconds max) {
  if (min.count() <= 0) min = std::chrono::milliseconds{1};
  if (max < min) max = min;
  std::chrono::milliseconds delay = min;
  for (int i = 0; i < attempt && delay < max; ++i) delay *= 2;
  return std::min(delay, max);
}

}  // namespace cairn::sdk
