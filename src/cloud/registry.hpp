// Registry: the device and module identities of cairn-cloud, and their IoT Hub service-API JSON
// shapes (`Device`, `Module`).
//
// A device or module authenticates with SAS tokens signed by one of its two symmetric keys
// (generated when the caller gives none). Creating an identity also creates its (empty) twin,
// in the same write; deleting a device deletes its modules, every twin and its deployment.
// Updates and deletes honour If-Match: "" or "*" match anything, otherwise the identity's
// current etag must be given.
//
// Errors: errc::invalid_argument (bad id, key, status, body: HTTP 400), errc::not_found (404),
// errc::already_exists (409), errc::cancelled (the If-Match etag does not match: 412), store
// errors as they come (corruption, io_error: 500).
//
// Thread-safety: as the CloudStore it uses (one thread at a time).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cloud/cloud_store.hpp"
#include "core/result.hpp"

namespace cairn::cloud {

enum class KeyKind { primary, secondary, swap };
// "primary" | "secondary" | "swap" (case-insensitive).
Result<KeyKind> parse_key_kind(std::string_view text);

// What a caller asks for when creating or updating a device. Unset members: on create the
// defaults (enabled, not an edge device, fresh keys); on update the current values.
struct DeviceSpec {
  std::string device_id;
  std::optional<bool> enabled;
  std::optional<std::string> status_reason;
  std::string primary_key;  // "" = generate (create) / keep (update)
  std::string secondary_key;
  std::optional<bool> iot_edge;
};

struct ModuleSpec {
  std::string device_id;
  std::string module_id;
  std::string primary_key;  // "" = generate (create) / keep (update)
  std::string secondary_key;
  std::optional<std::string> managed_by;
};

// Reads an IoT Hub `Device` / `Module` body (PUT /devices/{id}[/modules/{mid}]). Fields the
// service computes (etag, generationId, connectionState, ...) are ignored; wrong types, an
// unknown status, X.509 or other non-SAS authentication are errc::invalid_argument.
Result<DeviceSpec> device_spec_from_json(const nlohmann::json& body);
Result<ModuleSpec> module_spec_from_json(const nlohmann::json& body);

// IoT Hub `Device` / `Module` JSON, keys included. `connected_now` overrides the stored
// connection state (the hub knows the live state; the stored one may predate a restart).
nlohmann::json device_to_json(const DeviceRecord& device,
                              std::optional<bool> connected_now = std::nullopt);
nlohmann::json module_to_json(const ModuleRecord& module,
                              std::optional<bool> connected_now = std::nullopt);

class Registry {
 public:
  // `store` must outlive the registry.
  explicit Registry(CloudStore& store, Clock clock = {});

  Result<DeviceRecord> create_device(const DeviceSpec& spec);
  Result<DeviceRecord> update_device(const DeviceSpec& spec, std::string_view if_match);
  Result<DeviceRecord> get_device(const std::string& device_id);
  Result<std::vector<DeviceRecord>> list_devices(std::size_t limit);
  Status delete_device(const std::string& device_id, std::string_view if_match);
  Result<DeviceRecord> regenerate_device_key(const std::string& device_id, KeyKind which);

  Result<ModuleRecord> create_module(const ModuleSpec& spec);
  Result<ModuleRecord> update_module(const ModuleSpec& spec, std::string_view if_match);
  Result<ModuleRecord> get_module(const std::string& device_id, const std::string& module_id);
  // errc::not_found if the device does not exist.
  Result<std::vector<ModuleRecord>> list_modules(const std::string& device_id);
  Status delete_module(const std::string& device_id, const std::string& module_id,
                       std::string_view if_match);
  Result<ModuleRecord> regenerate_module_key(const std::string& device_id,
                                             const std::string& module_id, KeyKind which);

  // Returns the module, creating it (fresh keys, `managed_by`, empty twin) if the device has
  // none of that name. Used for modules an edge device brings along.
  Result<ModuleRecord> ensure_module(const std::string& device_id, const std::string& module_id,
                                     const std::string& managed_by);

  // The record create_module would write, for callers that insert the module (and its twin) as
  // part of a larger batch, like applyConfigurationContent. Validates the ids and keys only.
  Result<ModuleRecord> new_module_record(const ModuleSpec& spec) const;

  CloudStore& store() { return store_; }
  std::int64_t now_ms() const;

 private:
  CloudStore& store_;
  Clock clock_;
};

}  // namespace cairn::cloud
