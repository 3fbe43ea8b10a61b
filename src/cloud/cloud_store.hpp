// CloudStore: everything cairn-cloud keeps on disk — device and module identities, twins of
// record, the telemetry devices sent, service access policies and edge deployments.
//
// This is the seam where storage engines plug in: SqliteCloudStore (one file, one machine) is
// the default, and a PostgreSQL backend can implement the same interface for several
// cairn-cloud instances sharing one database. To make that possible, every conditional write
// carries the etag it expects (optimistic concurrency) instead of relying on the caller being
// the only writer, and every multi-row change is one WriteBatch applied all-or-nothing.
//
// Errors: errc::not_found / errc::already_exists for a batch operation whose row is missing /
// present, errc::cancelled when a row's etag is not the one a batch operation expected (another
// writer got there first; the caller maps this to HTTP 412), errc::corruption naming the row
// when stored data does not decode, errc::io_error / errc::unavailable when the disk or the
// database fails. A failed batch changes nothing.
//
// Thread-safety: implementations are used from one thread at a time (cairn-cloud calls them on
// its store worker's and its telemetry writer's threads, each with a connection of its own,
// never on its io thread); they do no locking of their own.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/message.hpp"
#include "core/result.hpp"
#include "twin/twin.hpp"

namespace cairn::cloud {

// Wall-clock milliseconds since the Unix epoch; injected so tests can pin time.
using Clock = std::function<std::int64_t()>;

struct DeviceRecord {
  std::string device_id;
  std::string generation_id;  // changes when a device of the same id is deleted and re-created
  std::string etag;           // changes on every identity change (keys, status, capabilities)
  bool enabled = true;
  std::string status_reason;
  std::int64_t status_updated_ms = 0;
  std::string primary_key;  // base64
  std::string secondary_key;
  bool iot_edge = false;  // capabilities.iotEdge: may sign for its modules (see authenticator)
  bool connected = false;
  std::int64_t connection_state_updated_ms = 0;
  std::int64_t last_activity_ms = 0;
  std::int64_t cloud_to_device_message_count = 0;

  friend bool operator==(const DeviceRecord&, const DeviceRecord&) = default;
};

struct ModuleRecord {
  std::string device_id;
  std::string module_id;
  std::string generation_id;
  std::string etag;
  std::string primary_key;
  std::string secondary_key;
  std::string managed_by;  // "iotEdge" for modules an edge deployment or edge hub created
  bool connected = false;
  std::int64_t connection_state_updated_ms = 0;
  std::int64_t last_activity_ms = 0;
  std::int64_t cloud_to_device_message_count = 0;

  friend bool operator==(const ModuleRecord&, const ModuleRecord&) = default;
};

// Names one twin (and one connected client): a device, or a module when module_id is set.
struct TwinKey {
  std::string device_id;
  std::string module_id;
  // "d" or "d/m": the MQTT client id of the twin's owner.
  std::string client_id() const {
    return module_id.empty() ? device_id : device_id + "/" + module_id;
  }
  friend bool operator==(const TwinKey&, const TwinKey&) = default;
};

struct TwinRecord {
  TwinKey key;
  twin::Twin twin;
  std::string etag;  // changes on every write of the twin
};

// One device-to-cloud message as stored.
struct TelemetryRecord {
  std::int64_t seq = 0;  // assigned by the store, increasing: a tailing cursor
  std::string device_id;
  std::string module_id;
  std::string message_id;  // "" when the sender set none
  // The sender's dedupe key (iothub::kDedupeKeyProperty: what cairnd's cloud link adds to
  // every message); "" when it sent none. Messages with neither a message id nor a dedupe key
  // are never deduped.
  std::string dedupe_key;
  std::string enqueued_time;  // ISO 8601 UTC with milliseconds
  std::int64_t stored_ms = 0;
  Properties system;
  Properties app;
  std::string body;  // raw bytes

  friend bool operator==(const TelemetryRecord&, const TelemetryRecord&) = default;
};

struct TelemetryQuery {
  std::optional<std::string> device_id;
  std::optional<std::string> module_id;
  std::int64_t after_seq = 0;  // only records with seq > after_seq
  std::size_t limit = 100;
};

// A service access policy: who may use the REST API (SAS tokens with skn={name}).
struct PolicyRecord {
  std::string name;
  std::string primary_key;
  std::string secondary_key;
  std::string rights;  // IoT Hub's names, comma-separated; informational for now

  friend bool operator==(const PolicyRecord&, const PolicyRecord&) = default;
};

// The last applyConfigurationContent body applied to an edge device.
struct DeploymentRecord {
  std::string device_id;
  std::int64_t version = 0;  // 1 for the first deployment of a device, then +1 each time
  nlohmann::json content;
  std::int64_t applied_ms = 0;

  friend bool operator==(const DeploymentRecord&, const DeploymentRecord&) = default;
};

struct StoreCounts {
  std::int64_t devices = 0;
  std::int64_t modules = 0;
  std::int64_t telemetry = 0;   // messages stored
  std::int64_t duplicates = 0;  // re-sent messages dropped since the store was created
  // Of those, messages without a message id, recognised by their dedupe key alone.
  std::int64_t duplicates_by_key = 0;
};

// The name of the policy created on first start with every right.
inline constexpr const char* kOwnerPolicy = "iothubowner";

// Changes applied together: all of them or none.
class WriteBatch {
 public:
  struct InsertDevice {
    DeviceRecord device;
  };
  // Identity columns only (etag, status, keys, capabilities); connection state and activity are
  // written by set_connection_state / insert_telemetry.
  struct UpdateDevice {
    DeviceRecord device;
    std::string expected_etag;  // "" = whatever it is
  };
  // Also deletes the device's modules, their twins, the device twin and its deployment.
  struct DeleteDevice {
    std::string device_id;
    std::string expected_etag;  // "" = whatever it is
  };
  struct InsertModule {
    ModuleRecord module;
  };
  struct UpdateModule {
    ModuleRecord module;
    std::string expected_etag;  // "" = whatever it is
  };
  // Also deletes the module twin.
  struct DeleteModule {
    std::string device_id;
    std::string module_id;
    std::string expected_etag;  // "" = whatever it is
  };
  // With an expected etag: replaces an existing twin that still has it. Without: inserts a new
  // twin (errc::already_exists if there is one).
  struct PutTwin {
    TwinRecord twin;
    std::string expected_etag;
  };
  struct PutDeployment {
    DeploymentRecord deployment;
  };
  struct PutPolicy {
    PolicyRecord policy;
  };
  using Op = std::variant<InsertDevice, UpdateDevice, DeleteDevice, InsertModule, UpdateModule,
                          DeleteModule, PutTwin, PutDeployment, PutPolicy>;

  void add(Op op) { ops_.push_back(std::move(op)); }
  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }

 private:
  std::vector<Op> ops_;
};

class CloudStore {
 public:
  virtual ~CloudStore() = default;

  virtual Result<std::optional<DeviceRecord>> find_device(const std::string& device_id) = 0;
  // Ordered by device id; at most `limit`.
  virtual Result<std::vector<DeviceRecord>> list_devices(std::size_t limit) = 0;
  virtual Result<std::optional<ModuleRecord>> find_module(const std::string& device_id,
                                                          const std::string& module_id) = 0;
  virtual Result<std::vector<ModuleRecord>> list_modules(const std::string& device_id) = 0;
  virtual Result<std::optional<TwinRecord>> find_twin(const TwinKey& key) = 0;
  virtual Result<std::optional<DeploymentRecord>> find_deployment(const std::string& device_id) = 0;
  virtual Result<std::optional<PolicyRecord>> find_policy(const std::string& name) = 0;
  virtual Result<std::vector<PolicyRecord>> list_policies() = 0;

  // Applies every operation of `batch` in order, atomically.
  virtual Status write(const WriteBatch& batch) = 0;

  // Records that the device or module connected / disconnected at `at_ms` (also its last
  // activity). errc::not_found if the identity does not exist.
  virtual Status set_connection_state(const TwinKey& who, bool connected, std::int64_t at_ms) = 0;

  // Stores messages in one transaction (one commit, one fsync, however many there are) and
  // sets each stored record's `seq`, also moving the sender's last activity to its
  // `stored_ms`. stored[i] is false, and a duplicate is counted, when a message with the same
  // non-empty message id, or the same non-empty dedupe key, from the same device and module is
  // already stored (or comes earlier in `records`). On error nothing is stored.
  virtual Result<std::vector<bool>> insert_telemetry(std::span<TelemetryRecord> records) = 0;
  // One message: true if stored, false if a duplicate.
  Result<bool> insert_telemetry(TelemetryRecord& record) {
    auto stored = insert_telemetry(std::span<TelemetryRecord>(&record, 1));
    if (!stored) return std::move(stored).error();
    return static_cast<bool>(stored->front());
  }
  // Oldest first.
  virtual Result<std::vector<TelemetryRecord>> list_telemetry(const TelemetryQuery& query) = 0;

  virtual Result<StoreCounts> counts() = 0;
};

}  // namespace cairn::cloud
