#include "cloud/registry.hpp"

#include <fmt/format.h>

#include "cloud/ids.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/message.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;

// IoT Hub accepts symmetric keys of 16 to 64 bytes.
constexpr std::size_t kMinKeyBytes = 16;
constexpr std::size_t kMaxKeyBytes = 64;

Status check_key(const std::string& key, std::string_view which) {
  if (key.empty()) return {};
  auto raw = crypto::base64_decode(key);
  if (!raw || raw->size() < kMinKeyBytes || raw->size() > kMaxKeyBytes) {
    return make_error(errc::invalid_argument,
                      fmt::format("authentication.symmetricKey.{} must be base64 of {} to {} "
                                  "bytes",
                                  which, kMinKeyBytes, kMaxKeyBytes));
  }
  return {};
}

// Reads an optional string member: absent or null leaves `out` alone.
Status read_string(const json& body, const char* name, std::string_view path,
                   std::optional<std::string>& out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_string()) {
    return make_error(errc::invalid_argument, fmt::format("{}{} must be a string", path, name));
  }
  out = it->get<std::string>();
  return {};
}

struct Keys {
  std::string primary;
  std::string secondary;
};

// authentication: {type: "sas", symmetricKey: {primaryKey, secondaryKey}, x509Thumbprint: {...}}
Result<Keys> read_authentication(const json& body) {
  Keys keys;
  auto auth = body.find("authentication");
  if (auth == body.end() || auth->is_null()) return keys;
  if (!auth->is_object()) {
    return make_error(errc::invalid_argument, "authentication must be an object");
  }
  std::optional<std::string> type;
  CAIRN_TRY(read_string(*auth, "type", "authentication.", type));
  if (type && !iequals(*type, "sas")) {
    return make_error(errc::invalid_argument,
                      fmt::format("authentication.type '{}' is not supported: cairn-cloud "
                                  "identities use SAS (symmetric key) authentication",
                                  *type));
  }
  if (auto x509 = auth->find("x509Thumbprint"); x509 != auth->end() && !x509->is_null()) {
    if (!x509->is_object()) {
      return make_error(errc::invalid_argument, "authentication.x509Thumbprint must be an object");
    }
    for (const char* name : {"primaryThumbprint", "secondaryThumbprint"}) {
      auto t = x509->find(name);
      if (t != x509->end() && !t->is_null() &&
          !(t->is_string() && t->get_ref<const std::string&>().empty())) {
        return make_error(errc::invalid_argument,
                          "X.509 thumbprint authentication is not supported: leave "
                          "authentication.x509Thumbprint empty");
      }
    }
  }
  auto sym = auth->find("symmetricKey");
  if (sym == auth->end() || sym->is_null()) return keys;
  if (!sym->is_object()) {
    return make_error(errc::invalid_argument, "authentication.symmetricKey must be an object");
  }
  std::optional<std::string> primary, secondary;
  CAIRN_TRY(read_string(*sym, "primaryKey", "authentication.symmetricKey.", primary));
  CAIRN_TRY(read_string(*sym, "secondaryKey", "authentication.symmetricKey.", secondary));
  keys.primary = primary.value_or("");
  keys.secondary = secondary.value_or("");
  CAIRN_TRY(check_key(keys.primary, "primaryKey"));
  CAIRN_TRY(check_key(keys.secondary, "secondaryKey"));
  return keys;
}

json authentication_json(const std::string& primary, const std::string& secondary) {
  return json{
      {"symmetricKey", {{"primaryKey", primary}, {"secondaryKey", secondary}}},
      {"x509Thumbprint", {{"primaryThumbprint", nullptr}, {"secondaryThumbprint", nullptr}}},
      {"type", "sas"}};
}

const char* connection_state(bool connected) { return connected ? "Connected" : "Disconnected"; }

Status etag_precondition(std::string_view if_match, const std::string& etag,
                         std::string_view what) {
  if (etag_matches(if_match, etag)) return {};
  return make_error(errc::cancelled,
                    fmt::format("{} has etag '{}', not the one given in If-Match ({}): read it "
                                "again and retry",
                                what, etag, if_match));
}

void apply_regeneration(std::string& primary, std::string& secondary, KeyKind which) {
  switch (which) {
    case KeyKind::primary:
      primary = crypto::generate_key();
      break;
    case KeyKind::secondary:
      secondary = crypto::generate_key();
      break;
    case KeyKind::swap:
      std::swap(primary, secondary);
      break;
  }
}

TwinRecord empty_twin(TwinKey key) { return TwinRecord{std::move(key), twin::Twin{}, new_etag()}; }

}  // namespace

Result<KeyKind> parse_key_kind(std::string_view text) {
  if (iequals(text, "primary")) return KeyKind::primary;
  if (iequals(text, "secondary")) return KeyKind::secondary;
  if (iequals(text, "swap")) return KeyKind::swap;
  return make_error(errc::invalid_argument, fmt::format("key must be 'primary', 'secondary' or "
                                                        "'swap', not '{}'",
                                                        text.substr(0, 64)));
}

Result<DeviceSpec> device_spec_from_json(const json& body) {
  if (!body.is_object())
    return make_error(errc::invalid_argument, "a device must be a JSON object");
  DeviceSpec spec;
  std::optional<std::string> id, status, reason;
  CAIRN_TRY(read_string(body, "deviceId", "", id));
  spec.device_id = id.value_or("");
  CAIRN_TRY(read_string(body, "status", "", status));
  if (status) {
    if (iequals(*status, "enabled")) {
      spec.enabled = true;
    } else if (iequals(*status, "disabled")) {
      spec.enabled = false;
    } else {
      return make_error(
          errc::invalid_argument,
          fmt::format("status must be 'enabled' or 'disabled', not '{}'", status->substr(0, 64)));
    }
  }
  CAIRN_TRY(read_string(body, "statusReason", "", reason));
  spec.status_reason = std::move(reason);
  auto keys = read_authentication(body);
  if (!keys) return std::move(keys).error();
  spec.primary_key = std::move(keys->primary);
  spec.secondary_key = std::move(keys->secondary);
  if (auto caps = body.find("capabilities"); caps != body.end() && !caps->is_null()) {
    if (!caps->is_object()) {
      return make_error(errc::invalid_argument, "capabilities must be an object");
    }
    if (auto edge = caps->find("iotEdge"); edge != caps->end() && !edge->is_null()) {
      if (!edge->is_boolean()) {
        return make_error(errc::invalid_argument, "capabilities.iotEdge must be true or false");
      }
      spec.iot_edge = edge->get<bool>();
    }
  }
  return spec;
}

Result<ModuleSpec> module_spec_from_json(const json& body) {
  if (!body.is_object())
    return make_error(errc::invalid_argument, "a module must be a JSON object");
  ModuleSpec spec;
  std::optional<std::string> device, module;
  CAIRN_TRY(read_string(body, "deviceId", "", device));
  CAIRN_TRY(read_string(body, "moduleId", "", module));
  spec.device_id = device.value_or("");
  spec.module_id = module.value_or("");
  CAIRN_TRY(read_string(body, "managedBy", "", spec.managed_by));
  auto keys = read_authentication(body);
  if (!keys) return std::move(keys).error();
  spec.primary_key = std::move(keys->primary);
  spec.secondary_key = std::move(keys->secondary);
  return spec;
}

json device_to_json(const DeviceRecord& d, std::optional<bool> connected_now) {
  return json{
      {"deviceId", d.device_id},
      {"generationId", d.generation_id},
      {"etag", d.etag},
      {"connectionState", connection_state(connected_now.value_or(d.connected))},
      {"status", d.enabled ? "enabled" : "disabled"},
      {"statusReason", d.status_reason.empty() ? json(nullptr) : json(d.status_reason)},
      {"connectionStateUpdatedTime", service_time(d.connection_state_updated_ms)},
      {"statusUpdatedTime", service_time(d.status_updated_ms)},
      {"lastActivityTime", service_time(d.last_activity_ms)},
      {"cloudToDeviceMessageCount", d.cloud_to_device_message_count},
      {"authentication", authentication_json(d.primary_key, d.secondary_key)},
      {"capabilities", {{"iotEdge", d.iot_edge}}},
  };
}

json module_to_json(const ModuleRecord& m, std::optional<bool> connected_now) {
  return json{
      {"moduleId", m.module_id},
      {"managedBy", m.managed_by.empty() ? json(nullptr) : json(m.managed_by)},
      {"deviceId", m.device_id},
      {"generationId", m.generation_id},
      {"etag", m.etag},
      {"connectionState", connection_state(connected_now.value_or(m.connected))},
      {"connectionStateUpdatedTime", service_time(m.connection_state_updated_ms)},
      {"lastActivityTime", service_time(m.last_activity_ms)},
      {"cloudToDeviceMessageCount", m.cloud_to_device_message_count},
      {"authentication", authentication_json(m.primary_key, m.secondary_key)},
  };
}

Registry::Registry(CloudStore& store, Clock clock) : store_(store), clock_(std::move(clock)) {}

std::int64_t Registry::now_ms() const { return clock_ ? clock_() : now_unix_ms(); }

Result<DeviceRecord> Registry::create_device(const DeviceSpec& spec) {
  if (!valid_identity_id(spec.device_id)) {
    return make_error(errc::invalid_argument, invalid_id_message("device id", spec.device_id));
  }
  CAIRN_TRY(check_key(spec.primary_key, "primaryKey"));
  CAIRN_TRY(check_key(spec.secondary_key, "secondaryKey"));
  DeviceRecord d;
  d.device_id = spec.device_id;
  d.generation_id = new_generation_id();
  d.etag = new_etag();
  d.enabled = spec.enabled.value_or(true);
  d.status_reason = spec.status_reason.value_or("");
  d.status_updated_ms = now_ms();
  d.primary_key = spec.primary_key.empty() ? crypto::generate_key() : spec.primary_key;
  d.secondary_key = spec.secondary_key.empty() ? crypto::generate_key() : spec.secondary_key;
  d.iot_edge = spec.iot_edge.value_or(false);
  WriteBatch batch;
  batch.add(WriteBatch::InsertDevice{d});
  batch.add(WriteBatch::PutTwin{empty_twin(TwinKey{d.device_id, ""}), ""});
  CAIRN_TRY(store_.write(batch));
  return d;
}

Result<DeviceRecord> Registry::update_device(const DeviceSpec& spec, std::string_view if_match) {
  auto current = get_device(spec.device_id);
  if (!current) return current;
  const std::string what = fmt::format("device '{}'", spec.device_id);
  CAIRN_TRY(etag_precondition(if_match, current->etag, what));
  CAIRN_TRY(check_key(spec.primary_key, "primaryKey"));
  CAIRN_TRY(check_key(spec.secondary_key, "secondaryKey"));
  DeviceRecord d = *current;
  if (spec.enabled && *spec.enabled != d.enabled) {
    d.enabled = *spec.enabled;
    d.status_updated_ms = now_ms();
  }
  if (spec.status_reason) d.status_reason = *spec.status_reason;
  if (!spec.primary_key.empty()) d.primary_key = spec.primary_key;
  if (!spec.secondary_key.empty()) d.secondary_key = spec.secondary_key;
  if (spec.iot_edge) d.iot_edge = *spec.iot_edge;
  d.etag = new_etag();
  WriteBatch batch;
  batch.add(WriteBatch::UpdateDevice{d, current->etag});
  CAIRN_TRY(store_.write(batch));
  return d;
}

Result<DeviceRecord> Registry::get_device(const std::string& device_id) {
  auto d = store_.find_device(device_id);
  if (!d) return std::move(d).error();
  if (!*d) return make_error(errc::not_found, fmt::format("device '{}' not found", device_id));
  return std::move(**d);
}

Result<std::vector<DeviceRecord>> Registry::list_devices(std::size_t limit) {
  return store_.list_devices(limit);
}

Status Registry::delete_device(const std::string& device_id, std::string_view if_match) {
  auto current = get_device(device_id);
  if (!current) return std::move(current).error();
  CAIRN_TRY(etag_precondition(if_match, current->etag, fmt::format("device '{}'", device_id)));
  WriteBatch batch;
  batch.add(WriteBatch::DeleteDevice{device_id, current->etag});
  return store_.write(batch);
}

Result<DeviceRecord> Registry::regenerate_device_key(const std::string& device_id, KeyKind which) {
  auto current = get_device(device_id);
  if (!current) return current;
  DeviceRecord d = *current;
  apply_regeneration(d.primary_key, d.secondary_key, which);
  d.etag = new_etag();
  WriteBatch batch;
  batch.add(WriteBatch::UpdateDevice{d, current->etag});
  CAIRN_TRY(store_.write(batch));
  return d;
}

Result<ModuleRecord> Registry::new_module_record(const ModuleSpec& spec) const {
  if (!valid_identity_id(spec.device_id)) {
    return make_error(errc::invalid_argument, invalid_id_message("device id", spec.device_id));
  }
  if (!valid_identity_id(spec.module_id)) {
    return make_error(errc::invalid_argument, invalid_id_message("module id", spec.module_id));
  }
  CAIRN_TRY(check_key(spec.primary_key, "primaryKey"));
  CAIRN_TRY(check_key(spec.secondary_key, "secondaryKey"));
  ModuleRecord m;
  m.device_id = spec.device_id;
  m.module_id = spec.module_id;
  m.generation_id = new_generation_id();
  m.etag = new_etag();
  m.primary_key = spec.primary_key.empty() ? crypto::generate_key() : spec.primary_key;
  m.secondary_key = spec.secondary_key.empty() ? crypto::generate_key() : spec.secondary_key;
  m.managed_by = spec.managed_by.value_or("");
  return m;
}

Result<ModuleRecord> Registry::create_module(const ModuleSpec& spec) {
  auto m = new_module_record(spec);
  if (!m) return m;
  // A clear 404 for the device rather than the store's generic one.
  auto device = get_device(spec.device_id);
  if (!device) return std::move(device).error();
  WriteBatch batch;
  batch.add(WriteBatch::InsertModule{*m});
  batch.add(WriteBatch::PutTwin{empty_twin(TwinKey{m->device_id, m->module_id}), ""});
  CAIRN_TRY(store_.write(batch));
  return m;
}

Result<ModuleRecord> Registry::update_module(const ModuleSpec& spec, std::string_view if_match) {
  auto current = get_module(spec.device_id, spec.module_id);
  if (!current) return current;
  CAIRN_TRY(etag_precondition(if_match, current->etag,
                              fmt::format("module '{}/{}'", spec.device_id, spec.module_id)));
  CAIRN_TRY(check_key(spec.primary_key, "primaryKey"));
  CAIRN_TRY(check_key(spec.secondary_key, "secondaryKey"));
  ModuleRecord m = *current;
  if (!spec.primary_key.empty()) m.primary_key = spec.primary_key;
  if (!spec.secondary_key.empty()) m.secondary_key = spec.secondary_key;
  if (spec.managed_by) m.managed_by = *spec.managed_by;
  m.etag = new_etag();
  WriteBatch batch;
  batch.add(WriteBatch::UpdateModule{m, current->etag});
  CAIRN_TRY(store_.write(batch));
  return m;
}

Result<ModuleRecord> Registry::get_module(const std::string& device_id,
                                          const std::string& module_id) {
  auto m = store_.find_module(device_id, module_id);
  if (!m) return std::move(m).error();
  if (!*m) {
    return make_error(errc::not_found,
                      fmt::format("module '{}' not found on device '{}'", module_id, device_id));
  }
  return std::move(**m);
}

Result<std::vector<ModuleRecord>> Registry::list_modules(const std::string& device_id) {
  auto device = get_device(device_id);
  if (!device) return std::move(device).error();
  return store_.list_modules(device_id);
}

Status Registry::delete_module(const std::string& device_id, const std::string& module_id,
                               std::string_view if_match) {
  auto current = get_module(device_id, module_id);
  if (!current) return std::move(current).error();
  CAIRN_TRY(etag_precondition(if_match, current->etag,
                              fmt::format("module '{}/{}'", device_id, module_id)));
  WriteBatch batch;
  batch.add(WriteBatch::DeleteModule{device_id, module_id, current->etag});
  return store_.write(batch);
}

Result<ModuleRecord> Registry::regenerate_module_key(const std::string& device_id,
                                                     const std::string& module_id, KeyKind which) {
  auto current = get_module(device_id, module_id);
  if (!current) return current;
  ModuleRecord m = *current;
  apply_regeneration(m.primary_key, m.secondary_key, which);
  m.etag = new_etag();
  WriteBatch batch;
  batch.add(WriteBatch::UpdateModule{m, current->etag});
  CAIRN_TRY(store_.write(batch));
  return m;
}

Result<ModuleRecord> Registry::ensure_module(const std::string& device_id,
                                             const std::string& module_id,
                                             const std::string& managed_by) {
  auto existing = store_.find_module(device_id, module_id);
  if (!existing) return std::move(existing).error();
  if (*existing) return std::move(**existing);
  ModuleSpec spec;
  spec.device_id = device_id;
  spec.module_id = module_id;
  spec.managed_by = managed_by;
  return create_module(spec);
}

}  // namespace cairn::cloud
