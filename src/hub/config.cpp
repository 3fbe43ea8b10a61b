#include "hub/config.hpp"

#include <filesystem>
#include <set>
#include <sstream>

#include <toml++/toml.h>

namespace cairn::hub {
namespace {

std::string where(const std::string& path, const toml::node& node, const std::string& key) {
  std::ostringstream out;
  out << path << ":" << node.source().begin.line << ": '" << key << "'";
  return out.str();
}

// Reads typed values out of one TOML table, remembering the keys it consumed so the caller can
// reject the rest as unknown.
class TableReader {
 public:
  TableReader(const std::string& path, const toml::table& table, std::string prefix)
      : path_(path), table_(table), prefix_(std::move(prefix)) {}

  template <class T>
  Status read(const char* key, T& out) {
    seen_.insert(key);
    const toml::node* node = table_.get(key);
    if (!node) return {};
    std::string name = prefix_ + key;
    if constexpr (std::is_same_v<T, std::string>) {
      auto v = node->value<std::string>();
      if (!v)
        return make_error(errc::invalid_argument, where(path_, *node, name) + " must be a string");
      out = *v;
    } else if constexpr (std::is_same_v<T, bool>) {
      auto v = node->value<bool>();
      if (!v)
        return make_error(errc::invalid_argument,
                          where(path_, *node, name) + " must be true or false");
      out = *v;
    } else {
      auto v = node->value<std::int64_t>();
      if (!v || *v < 0 || static_cast<std::uint64_t>(*v) > std::numeric_limits<T>::max()) {
        return make_error(errc::invalid_argument,
                          where(path_, *node, name) + " must be an integer between 0 and " +
                              std::to_string(std::numeric_limits<T>::max()));
      }
      out = static_cast<T>(*v);
    }
    return {};
  }

  Status reject_unknown(std::initializer_list<const char*> subtables = {}) {
    for (auto s : subtables) seen_.insert(s);
    for (const auto& [k, v] : table_) {
      if (!seen_.count(std::string(k.str()))) {
        return make_error(errc::invalid_argument, where(path_, v, prefix_ + std::string(k.str())) +
                                                      " is not a known setting");
      }
    }
    return {};
  }

 private:
  const std::string& path_;
  const toml::table& table_;
  std::string prefix_;
  std::set<std::string> seen_;
};

}  // namespace

Result<HubConfig> load_config(const std::string& home, const std::string& path) {
  HubConfig config;
  config.home = home;
  if (!std::filesystem::exists(path)) return config;
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << path << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
        << e.description();
    return make_error(errc::invalid_argument, out.str());
  }
  TableReader top(path, root, "");
  CAIRN_TRY(top.read("device_id", config.device_id));
  CAIRN_TRY(top.read("hostname", config.hostname));
  CAIRN_TRY(top.read("iothub_hostname", config.iothub_hostname));
  std::uint32_t ttl = static_cast<std::uint32_t>(config.default_ttl_secs);
  CAIRN_TRY(top.read("default_ttl_secs", ttl));
  config.default_ttl_secs = ttl;
  CAIRN_TRY(top.reject_unknown({"mqtt", "store", "upstream", "http", "agent", "auth"}));
  if (const auto* auth = root.get_as<toml::table>("auth")) {
    TableReader t(path, *auth, "auth.");
    CAIRN_TRY(t.read("max_token_lifetime_secs", config.auth.max_token_lifetime_secs));
    CAIRN_TRY(t.reject_unknown());
  }
  if (const auto* agent = root.get_as<toml::table>("agent")) {
    TableReader t(path, *agent, "agent.");
    CAIRN_TRY(t.read("docker_uri", config.agent.docker_uri));
    CAIRN_TRY(t.reject_unknown());
    const auto& uri = config.agent.docker_uri;
    if (!uri.empty() && uri != "none" && !(uri.starts_with("unix://") || uri.starts_with("/"))) {
      return make_error(errc::invalid_argument,
                        path +
                            ": agent.docker_uri must be a unix socket (unix:///PATH or /PATH) or "
                            "'none'; got '" +
                            uri + "'");
    }
  }
  if (const auto* http = root.get_as<toml::table>("http")) {
    TableReader t(path, *http, "http.");
    CAIRN_TRY(t.read("port", config.http.port));
    CAIRN_TRY(t.reject_unknown());
  }

  if (const auto* mqtt = root.get_as<toml::table>("mqtt")) {
    TableReader t(path, *mqtt, "mqtt.");
    auto& m = config.mqtt;
    CAIRN_TRY(t.read("listen", m.listen));
    CAIRN_TRY(t.read("tls_port", m.tls_port));
    CAIRN_TRY(t.read("plain_port", m.plain_port));
    CAIRN_TRY(t.read("max_message_bytes", m.max_message_bytes));
    CAIRN_TRY(t.read("max_inflight_in", m.max_inflight_in));
    CAIRN_TRY(t.read("max_inflight_out", m.max_inflight_out));
    CAIRN_TRY(t.read("max_delivery_attempts", m.max_delivery_attempts));
    CAIRN_TRY(t.read("max_keepalive_secs", m.max_keepalive_secs));
    CAIRN_TRY(t.read("connect_timeout_secs", m.connect_timeout_secs));
    CAIRN_TRY(t.read("max_connections", m.max_connections));
    CAIRN_TRY(t.read("max_connect_bytes", m.max_connect_bytes));
    CAIRN_TRY(t.read("max_unauthenticated_connections", m.max_unauthenticated_connections));
    CAIRN_TRY(t.read("max_unauthenticated_per_address", m.max_unauthenticated_per_address));
    CAIRN_TRY(t.read("max_subscriptions", m.max_subscriptions));
    CAIRN_TRY(t.read("max_topic_filter_bytes", m.max_topic_filter_bytes));
    CAIRN_TRY(t.read("max_properties", m.max_properties));
    CAIRN_TRY(t.read("max_property_bytes", m.max_property_bytes));
    CAIRN_TRY(t.reject_unknown());
    if (m.max_inflight_in == 0 || m.max_inflight_out == 0 || m.max_inflight_out > 65535) {
      return make_error(
          errc::invalid_argument,
          path + ": mqtt.max_inflight_in must be > 0 and mqtt.max_inflight_out 1..65535");
    }
    // A CONNECT carries a client id, a user name and a SAS token: a few hundred bytes.
    if (m.max_connect_bytes < 1024 || m.max_unauthenticated_connections == 0 ||
        m.max_unauthenticated_per_address == 0 || m.connect_timeout_secs == 0) {
      return make_error(errc::invalid_argument, path +
                                                    ": mqtt.max_connect_bytes must be >= 1024 and "
                                                    "mqtt.max_unauthenticated_connections, "
                                                    "mqtt.max_unauthenticated_per_address and "
                                                    "mqtt.connect_timeout_secs > 0");
    }
    if (m.max_topic_filter_bytes == 0) {
      return make_error(errc::invalid_argument, path + ": mqtt.max_topic_filter_bytes must be > 0");
    }
  }
  if (const auto* store = root.get_as<toml::table>("store")) {
    TableReader t(path, *store, "store.");
    auto& s = config.store;
    CAIRN_TRY(t.read("fsync", s.fsync));
    CAIRN_TRY(t.read("max_bytes", s.max_bytes));
    CAIRN_TRY(t.read("expire_interval_secs", s.expire_interval_secs));
    CAIRN_TRY(t.read("max_dead_letters", s.max_dead_letters));
    CAIRN_TRY(t.read("append_delay_us", s.append_delay_us));
    CAIRN_TRY(t.reject_unknown());
    if (s.expire_interval_secs == 0) s.expire_interval_secs = 1;
    if (s.append_delay_us > HubConfig::Store::kMaxAppendDelayUs) {
      return make_error(errc::invalid_argument,
                        path + ": store.append_delay_us must be at most " +
                            std::to_string(HubConfig::Store::kMaxAppendDelayUs) + " (a minute)");
    }
  }
  if (const auto* upstream = root.get_as<toml::table>("upstream")) {
    TableReader t(path, *upstream, "upstream.");
    auto& u = config.upstream;
    CAIRN_TRY(t.read("hostname", u.hostname));
    CAIRN_TRY(t.read("port", u.port));
    CAIRN_TRY(t.read("https_port", u.https_port));
    CAIRN_TRY(t.read("ca_file", u.ca_file));
    CAIRN_TRY(t.read("iothub_hostname", u.iothub_hostname));
    CAIRN_TRY(t.read("device_key", u.device_key));
    CAIRN_TRY(t.read("token_ttl_secs", u.token_ttl_secs));
    CAIRN_TRY(t.read("min_backoff_ms", u.min_backoff_ms));
    CAIRN_TRY(t.read("max_backoff_secs", u.max_backoff_secs));
    CAIRN_TRY(t.read("operation_timeout_secs", u.operation_timeout_secs));
    CAIRN_TRY(t.reject_unknown());
    if (u.enabled() && u.device_key.empty()) {
      return make_error(errc::invalid_argument,
                        path +
                            ": upstream.device_key is required with upstream.hostname (the "
                            "edge device's primary key from the cloud registry)");
    }
    if (u.token_ttl_secs < HubConfig::kMinTokenTtlSecs || u.min_backoff_ms == 0 ||
        u.max_backoff_secs == 0 || u.operation_timeout_secs == 0) {
      return make_error(errc::invalid_argument, path + ": upstream.token_ttl_secs must be >= " +
                                                    std::to_string(HubConfig::kMinTokenTtlSecs) +
                                                    " and the back-off and timeout settings > 0");
    }
  }
  if (config.device_id.empty() || config.device_id.find('/') != std::string::npos) {
    return make_error(errc::invalid_argument,
                      path + ": 'device_id' must be non-empty and contain no '/'");
  }
  return config;
}

}  // namespace cairn::hub
