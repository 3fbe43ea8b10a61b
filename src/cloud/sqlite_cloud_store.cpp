#include "cloud/sqlite_cloud_store.hpp"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "cloud/detail/sqlite_db.hpp"
#include "core/crypto.hpp"
#include "core/json.hpp"
#include "core/log.hpp"

namespace cairn::cloud {
namespace {

using detail::Database;
using detail::Query;

// Version 2 (kSchemaVersion). Times are Unix milliseconds; booleans 0/1; keys base64 text.
constexpr const char* kSchema = R"sql(
CREATE TABLE schema_version(version INTEGER NOT NULL);
CREATE TABLE devices(
  device_id TEXT PRIMARY KEY NOT NULL,
  generation_id TEXT NOT NULL,
  etag TEXT NOT NULL,
  enabled INTEGER NOT NULL,
  status_reason TEXT NOT NULL,
  status_updated_ms INTEGER NOT NULL,
  primary_key TEXT NOT NULL,
  secondary_key TEXT NOT NULL,
  iot_edge INTEGER NOT NULL,
  connected INTEGER NOT NULL DEFAULT 0,
  connection_state_updated_ms INTEGER NOT NULL DEFAULT 0,
  last_activity_ms INTEGER NOT NULL DEFAULT 0,
  c2d_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE modules(
  device_id TEXT NOT NULL,
  module_id TEXT NOT NULL,
  generation_id TEXT NOT NULL,
  etag TEXT NOT NULL,
  primary_key TEXT NOT NULL,
  secondary_key TEXT NOT NULL,
  managed_by TEXT NOT NULL,
  connected INTEGER NOT NULL DEFAULT 0,
  connection_state_updated_ms INTEGER NOT NULL DEFAULT 0,
  last_activity_ms INTEGER NOT NULL DEFAULT 0,
  c2d_count INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(device_id, module_id));
CREATE TABLE twins(
  device_id TEXT NOT NULL,
  module_id TEXT NOT NULL,
  etag TEXT NOT NULL,
  document TEXT NOT NULL,
  PRIMARY KEY(device_id, module_id));
CREATE TABLE telemetry(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  device_id TEXT NOT NULL,
  module_id TEXT NOT NULL,
  message_id TEXT NOT NULL,
  enqueued_time TEXT NOT NULL,
  stored_ms INTEGER NOT NULL,
  system_properties TEXT NOT NULL,
  app_properties TEXT NOT NULL,
  body BLOB NOT NULL,
  dedupe_key TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX telemetry_message_id ON telemetry(device_id, module_id, message_id)
  WHERE message_id <> '';
CREATE UNIQUE INDEX telemetry_dedupe_key ON telemetry(device_id, module_id, dedupe_key)
  WHERE dedupe_key <> '';
CREATE INDEX telemetry_sender ON telemetry(device_id, module_id, seq);
CREATE TABLE counters(name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
INSERT INTO counters(name, value) VALUES('telemetry_stored', 0), ('telemetry_duplicates', 0),
  ('telemetry_duplicates_by_key', 0);
CREATE TABLE policies(
  name TEXT PRIMARY KEY NOT NULL,
  primary_key TEXT NOT NULL,
  secondary_key TEXT NOT NULL,
  rights TEXT NOT NULL);
CREATE TABLE deployments(
  device_id TEXT PRIMARY KEY NOT NULL,
  version INTEGER NOT NULL,
  content TEXT NOT NULL,
  applied_ms INTEGER NOT NULL);
)sql";

// Version 1 to 2: the dedupe key of cairnd's cloud link. Rows stored before have none.
constexpr const char* kMigrateTo2 = R"sql(
ALTER TABLE telemetry ADD COLUMN dedupe_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX telemetry_dedupe_key ON telemetry(device_id, module_id, dedupe_key)
  WHERE dedupe_key <> '';
INSERT INTO counters(name, value) VALUES('telemetry_duplicates_by_key', 0);
UPDATE schema_version SET version = 2;
)sql";

constexpr const char* kOwnerRights = "RegistryWrite, ServiceConnect, DeviceConnect";

// --- statements (each prepared once per connection) ---
constexpr const char* kFindDevice =
    "SELECT device_id, generation_id, etag, enabled, status_reason, status_updated_ms, "
    "primary_key, secondary_key, iot_edge, connected, connection_state_updated_ms, "
    "last_activity_ms, c2d_count FROM devices WHERE device_id = ?1";
constexpr const char* kListDevices =
    "SELECT device_id, generation_id, etag, enabled, status_reason, status_updated_ms, "
    "primary_key, secondary_key, iot_edge, connected, connection_state_updated_ms, "
    "last_activity_ms, c2d_count FROM devices ORDER BY device_id LIMIT ?1";
constexpr const char* kInsertDevice =
    "INSERT INTO devices(device_id, generation_id, etag, enabled, status_reason, "
    "status_updated_ms, primary_key, secondary_key, iot_edge, connected, "
    "connection_state_updated_ms, last_activity_ms, c2d_count) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
    "ON CONFLICT(device_id) DO NOTHING";
constexpr const char* kUpdateDevice =
    "UPDATE devices SET etag = ?2, enabled = ?3, status_reason = ?4, status_updated_ms = ?5, "
    "primary_key = ?6, secondary_key = ?7, iot_edge = ?8 WHERE device_id = ?1 AND (?9 = '' OR etag "
    "= ?9)";
constexpr const char* kDeviceEtag = "SELECT etag FROM devices WHERE device_id = ?1";
constexpr const char* kDeleteDevice = "DELETE FROM devices WHERE device_id = ?1";
constexpr const char* kDeleteDeviceModules = "DELETE FROM modules WHERE device_id = ?1";
constexpr const char* kDeleteDeviceTwins = "DELETE FROM twins WHERE device_id = ?1";
constexpr const char* kDeleteDeviceDeployment = "DELETE FROM deployments WHERE device_id = ?1";
constexpr const char* kDeviceConnection =
    "UPDATE devices SET connected = ?2, connection_state_updated_ms = ?3, "
    "last_activity_ms = max(last_activity_ms, ?3) WHERE device_id = ?1";
constexpr const char* kDeviceActivity =
    "UPDATE devices SET last_activity_ms = max(last_activity_ms, ?2) WHERE device_id = ?1";

constexpr const char* kFindModule =
    "SELECT device_id, module_id, generation_id, etag, primary_key, secondary_key, managed_by, "
    "connected, connection_state_updated_ms, last_activity_ms, c2d_count FROM modules "
    "WHERE device_id = ?1 AND module_id = ?2";
constexpr const char* kListModules =
    "SELECT device_id, module_id, generation_id, etag, primary_key, secondary_key, managed_by, "
    "connected, connection_state_updated_ms, last_activity_ms, c2d_count FROM modules "
    "WHERE device_id = ?1 ORDER BY module_id";
constexpr const char* kInsertModule =
    "INSERT INTO modules(device_id, module_id, generation_id, etag, primary_key, secondary_key, "
    "managed_by, connected, connection_state_updated_ms, last_activity_ms, c2d_count) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
    "ON CONFLICT(device_id, module_id) DO NOTHING";
constexpr const char* kUpdateModule =
    "UPDATE modules SET etag = ?3, primary_key = ?4, secondary_key = ?5, managed_by = ?6 "
    "WHERE device_id = ?1 AND module_id = ?2 AND (?7 = '' OR etag = ?7)";
constexpr const char* kModuleEtag =
    "SELECT etag FROM modules WHERE device_id = ?1 AND module_id = ?2";
constexpr const char* kDeleteModule = "DELETE FROM modules WHERE device_id = ?1 AND module_id = ?2";
constexpr const char* kModuleConnection =
    "UPDATE modules SET connected = ?3, connection_state_updated_ms = ?4, "
    "last_activity_ms = max(last_activity_ms, ?4) WHERE device_id = ?1 AND module_id = ?2";
constexpr const char* kModuleActivity =
    "UPDATE modules SET last_activity_ms = max(last_activity_ms, ?3) "
    "WHERE device_id = ?1 AND module_id = ?2";

constexpr const char* kFindTwin =
    "SELECT etag, document FROM twins WHERE device_id = ?1 AND module_id = ?2";
constexpr const char* kInsertTwin =
    "INSERT INTO twins(device_id, module_id, etag, document) VALUES(?1, ?2, ?3, ?4) "
    "ON CONFLICT(device_id, module_id) DO NOTHING";
constexpr const char* kUpdateTwin =
    "UPDATE twins SET etag = ?3, document = ?4 WHERE device_id = ?1 AND module_id = ?2 "
    "AND (?5 = '' OR etag = ?5)";
constexpr const char* kTwinEtag = "SELECT etag FROM twins WHERE device_id = ?1 AND module_id = ?2";
constexpr const char* kDeleteTwin = "DELETE FROM twins WHERE device_id = ?1 AND module_id = ?2";

constexpr const char* kFindDeployment =
    "SELECT device_id, version, content, applied_ms FROM deployments WHERE device_id = ?1";
constexpr const char* kPutDeployment =
    "INSERT OR REPLACE INTO deployments(device_id, version, content, applied_ms) "
    "VALUES(?1, ?2, ?3, ?4)";

constexpr const char* kFindPolicy =
    "SELECT name, primary_key, secondary_key, rights FROM policies WHERE name = ?1";
constexpr const char* kListPolicies =
    "SELECT name, primary_key, secondary_key, rights FROM policies ORDER BY name";
constexpr const char* kPutPolicy =
    "INSERT OR REPLACE INTO policies(name, primary_key, secondary_key, rights) "
    "VALUES(?1, ?2, ?3, ?4)";

// A conflict on either unique index (message id, dedupe key) is a duplicate: DO NOTHING without
// a target covers both.
constexpr const char* kInsertTelemetry =
    "INSERT INTO telemetry(device_id, module_id, message_id, enqueued_time, stored_ms, "
    "system_properties, app_properties, body, dedupe_key) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING";
constexpr const char* kListTelemetry =
    "SELECT seq, device_id, module_id, message_id, enqueued_time, stored_ms, system_properties, "
    "app_properties, body, dedupe_key FROM telemetry WHERE seq > ?1 AND (?2 IS NULL OR "
    "device_id = ?2) AND (?3 IS NULL OR module_id = ?3) ORDER BY seq LIMIT ?4";
constexpr const char* kAddToCounter = "UPDATE counters SET value = value + ?2 WHERE name = ?1";
constexpr const char* kCounts =
    "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM modules), "
    "(SELECT value FROM counters WHERE name = 'telemetry_stored'), "
    "(SELECT value FROM counters WHERE name = 'telemetry_duplicates'), "
    "(SELECT value FROM counters WHERE name = 'telemetry_duplicates_by_key')";

std::string client_name(std::string_view device_id, std::string_view module_id) {
  return module_id.empty() ? std::string(device_id)
                           : std::string(device_id) + "/" + std::string(module_id);
}

DeviceRecord read_device(const Query& q) {
  DeviceRecord d;
  d.device_id = q.column_text(0);
  d.generation_id = q.column_text(1);
  d.etag = q.column_text(2);
  d.enabled = q.column_int(3) != 0;
  d.status_reason = q.column_text(4);
  d.status_updated_ms = q.column_int(5);
  d.primary_key = q.column_text(6);
  d.secondary_key = q.column_text(7);
  d.iot_edge = q.column_int(8) != 0;
  d.connected = q.column_int(9) != 0;
  d.connection_state_updated_ms = q.column_int(10);
  d.last_activity_ms = q.column_int(11);
  d.cloud_to_device_message_count = q.column_int(12);
  return d;
}

ModuleRecord read_module(const Query& q) {
  ModuleRecord m;
  m.device_id = q.column_text(0);
  m.module_id = q.column_text(1);
  m.generation_id = q.column_text(2);
  m.etag = q.column_text(3);
  m.primary_key = q.column_text(4);
  m.secondary_key = q.column_text(5);
  m.managed_by = q.column_text(6);
  m.connected = q.column_int(7) != 0;
  m.connection_state_updated_ms = q.column_int(8);
  m.last_activity_ms = q.column_int(9);
  m.cloud_to_device_message_count = q.column_int(10);
  return m;
}

PolicyRecord read_policy(const Query& q) {
  return PolicyRecord{q.column_text(0), q.column_text(1), q.column_text(2), q.column_text(3)};
}

// Property bags are stored as JSON objects in their original order.
std::string properties_to_text(const Properties& props) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [k, v] : props.entries()) j[k] = v;
  // Values come off the wire and may hold invalid UTF-8: keep the bytes unchanged rather than
  // fail the insert (the JSON-lines writer replaces them when it prints).
  return dump_json(j);
}

Result<Properties> properties_from_text(std::string_view text, std::int64_t seq,
                                        std::string_view column) {
  auto j = nlohmann::ordered_json::parse(text, nullptr, false);
  auto bad = [&] {
    return make_error(errc::corruption,
                      fmt::format("telemetry row seq={} in the cloud store: {} is not a JSON "
                                  "object of strings",
                                  seq, column));
  };
  if (j.is_discarded() || !j.is_object()) return bad();
  Properties props;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) return bad();
    props.set(it.key(), it.value().get<std::string>());
  }
  return props;
}

// Checks the etag a conditional operation expects (`expected` empty: only that the row exists);
// distinguishes "gone" from "changed". `module_id` is bound when the statement has a second
// parameter (module and twin rows).
Status check_etag(Database& db, const char* sql, std::string_view device_id,
                  std::optional<std::string_view> module_id, std::string_view expected,
                  std::string_view what) {
  Query q(db, sql);
  q.bind(1, device_id);
  if (module_id) q.bind(2, *module_id);
  auto row = q.step(fmt::format("read etag of {}", what));
  if (!row) return std::move(row).error();
  if (!*row) return make_error(errc::not_found, fmt::format("{} not found", what));
  if (!expected.empty() && q.column_text(0) != expected) {
    return make_error(
        errc::cancelled,
        fmt::format("{} was changed by someone else (etag is no longer '{}')", what, expected));
  }
  return {};
}

}  // namespace

SqliteCloudStore::SqliteCloudStore(std::unique_ptr<detail::Database> db) : db_(std::move(db)) {}
SqliteCloudStore::~SqliteCloudStore() = default;

Result<std::unique_ptr<SqliteCloudStore>> SqliteCloudStore::open(
    const SqliteCloudStoreOptions& options) {
  if (options.path.empty()) {
    return make_error(errc::invalid_argument, "the cloud store needs a database file path");
  }
  std::error_code ec;
  auto parent = std::filesystem::path(options.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) {
    return make_error(errc::io_error, fmt::format("cannot create the directory '{}': {}",
                                                  parent.string(), ec.message()));
  }
  auto db = Database::open(options.path);
  if (!db) return std::move(db).error();
  std::unique_ptr<SqliteCloudStore> store(new SqliteCloudStore(std::move(*db)));
  Database& d = *store->db_;
  CAIRN_TRY(d.exec("PRAGMA busy_timeout = 5000", "set busy timeout"));
  CAIRN_TRY(d.exec("PRAGMA journal_mode = WAL", "enable WAL"));
  CAIRN_TRY(d.exec(options.full_sync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                   "set synchronous"));
  CAIRN_TRY(store->migrate());
  return store;
}

Status SqliteCloudStore::migrate() {
  Database& d = *db_;
  return d.transaction([&]() -> Status {
    Query has(d,
              "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
              "name = 'schema_version'");
    auto row = has.step("read the schema");
    if (!row) return std::move(row).error();
    if (has.column_int(0) == 0) {
      CAIRN_TRY(d.exec(kSchema, "create the cloud schema"));
      Query v(d, "INSERT INTO schema_version(version) VALUES(?1)");
      v.bind(1, kSchemaVersion);
      CAIRN_TRY(v.run("write the schema version"));
      // First start: the owner policy, whose key the operator reads to build a connection
      // string (HostName=...;SharedAccessKeyName=iothubowner;SharedAccessKey=...).
      PolicyRecord owner{kOwnerPolicy, crypto::generate_key(), crypto::generate_key(),
                         kOwnerRights};
      Query p(d, kPutPolicy);
      p.bind(1, owner.name).bind(2, owner.primary_key).bind(3, owner.secondary_key);
      p.bind(4, owner.rights);
      CAIRN_TRY(p.run("create the owner policy"));
      log::info("cloud", "created a new cloud store, schema_version={}", kSchemaVersion);
      return {};
    }
    Query v(d, "SELECT version FROM schema_version");
    auto vrow = v.step("read the schema version");
    if (!vrow) return std::move(vrow).error();
    if (!*vrow) {
      return make_error(errc::corruption, "the cloud store has no schema_version row");
    }
    const std::int64_t version = v.column_int(0);
    if (version > kSchemaVersion) {
      return make_error(errc::corruption,
                        fmt::format("the cloud store has schema version {}, newer than this "
                                    "cairn-cloud understands ({}); upgrade cairn-cloud",
                                    version, kSchemaVersion));
    }
    if (version < 1) {
      return make_error(errc::corruption,
                        fmt::format("the cloud store has an invalid schema version {}", version));
    }
    if (version == 1) {
      CAIRN_TRY(d.exec(kMigrateTo2, "migrate the cloud store to schema version 2"));
      log::info("cloud", "migrated the cloud store to schema_version=2 (telemetry dedupe keys)");
    }
    return {};
  });
}

Result<std::optional<DeviceRecord>> SqliteCloudStore::find_device(const std::string& device_id) {
  Query q(*db_, kFindDevice);
  q.bind(1, device_id);
  auto row = q.step(fmt::format("read device '{}'", device_id));
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<DeviceRecord>{};
  return std::optional<DeviceRecord>(read_device(q));
}

Result<std::vector<DeviceRecord>> SqliteCloudStore::list_devices(std::size_t limit) {
  Query q(*db_, kListDevices);
  q.bind(1, static_cast<std::int64_t>(limit));
  std::vector<DeviceRecord> out;
  for (;;) {
    auto row = q.step("list devices");
    if (!row) return std::move(row).error();
    if (!*row) return out;
    out.push_back(read_device(q));
  }
}

Result<std::optional<ModuleRecord>> SqliteCloudStore::find_module(const std::string& device_id,
                                                                  const std::string& module_id) {
  Query q(*db_, kFindModule);
  q.bind(1, device_id).bind(2, module_id);
  auto row = q.step(fmt::format("read module '{}/{}'", device_id, module_id));
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<ModuleRecord>{};
  return std::optional<ModuleRecord>(read_module(q));
}

Result<std::vector<ModuleRecord>> SqliteCloudStore::list_modules(const std::string& device_id) {
  Query q(*db_, kListModules);
  q.bind(1, device_id);
  std::vector<ModuleRecord> out;
  for (;;) {
    auto row = q.step(fmt::format("list modules of '{}'", device_id));
    if (!row) return std::move(row).error();
    if (!*row) return out;
    out.push_back(read_module(q));
  }
}

Result<std::optional<TwinRecord>> SqliteCloudStore::find_twin(const TwinKey& key) {
  Query q(*db_, kFindTwin);
  q.bind(1, key.device_id).bind(2, key.module_id);
  auto row = q.step(fmt::format("read twin '{}'", key.client_id()));
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<TwinRecord>{};
  auto twin = twin::Twin::parse(q.column_text(1));
  if (!twin) {
    return make_error(errc::corruption, fmt::format("twin '{}' in the cloud store: {}",
                                                    key.client_id(), twin.error().message));
  }
  return std::optional<TwinRecord>(TwinRecord{key, std::move(*twin), q.column_text(0)});
}

Result<std::optional<DeploymentRecord>> SqliteCloudStore::find_deployment(
    const std::string& device_id) {
  Query q(*db_, kFindDeployment);
  q.bind(1, device_id);
  auto row = q.step(fmt::format("read the deployment of '{}'", device_id));
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<DeploymentRecord>{};
  auto content = nlohmann::json::parse(q.column_text(2), nullptr, false);
  if (content.is_discarded() || !content.is_object()) {
    return make_error(
        errc::corruption,
        fmt::format("deployment of '{}' in the cloud store is not a JSON object", device_id));
  }
  return std::optional<DeploymentRecord>(
      DeploymentRecord{q.column_text(0), q.column_int(1), std::move(content), q.column_int(3)});
}

Result<std::optional<PolicyRecord>> SqliteCloudStore::find_policy(const std::string& name) {
  Query q(*db_, kFindPolicy);
  q.bind(1, name);
  auto row = q.step(fmt::format("read policy '{}'", name));
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<PolicyRecord>{};
  return std::optional<PolicyRecord>(read_policy(q));
}

Result<std::vector<PolicyRecord>> SqliteCloudStore::list_policies() {
  Query q(*db_, kListPolicies);
  std::vector<PolicyRecord> out;
  for (;;) {
    auto row = q.step("list policies");
    if (!row) return std::move(row).error();
    if (!*row) return out;
    out.push_back(read_policy(q));
  }
}

Status SqliteCloudStore::write(const WriteBatch& batch) {
  if (batch.empty()) return {};
  return db_->transaction([&]() -> Status {
    for (const auto& op : batch.ops()) CAIRN_TRY(apply(op));
    return {};
  });
}

Status SqliteCloudStore::apply(const WriteBatch::Op& op) {
  Database& d = *db_;
  if (const auto* o = std::get_if<WriteBatch::InsertDevice>(&op)) {
    const DeviceRecord& r = o->device;
    Query q(d, kInsertDevice);
    q.bind(1, r.device_id).bind(2, r.generation_id).bind(3, r.etag);
    q.bind(4, std::int64_t{r.enabled}).bind(5, r.status_reason).bind(6, r.status_updated_ms);
    q.bind(7, r.primary_key).bind(8, r.secondary_key).bind(9, std::int64_t{r.iot_edge});
    q.bind(10, std::int64_t{r.connected}).bind(11, r.connection_state_updated_ms);
    q.bind(12, r.last_activity_ms).bind(13, r.cloud_to_device_message_count);
    CAIRN_TRY(q.run(fmt::format("insert device '{}'", r.device_id)));
    if (d.changes() == 0) {
      return make_error(errc::already_exists,
                        fmt::format("device '{}' already exists", r.device_id));
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::UpdateDevice>(&op)) {
    const DeviceRecord& r = o->device;
    const std::string what = fmt::format("device '{}'", r.device_id);
    CAIRN_TRY(check_etag(d, kDeviceEtag, r.device_id, std::nullopt, o->expected_etag, what));
    Query q(d, kUpdateDevice);
    q.bind(1, r.device_id).bind(2, r.etag).bind(3, std::int64_t{r.enabled});
    q.bind(4, r.status_reason).bind(5, r.status_updated_ms).bind(6, r.primary_key);
    q.bind(7, r.secondary_key).bind(8, std::int64_t{r.iot_edge}).bind(9, o->expected_etag);
    CAIRN_TRY(q.run("update " + what));
    if (d.changes() == 0) {
      return make_error(errc::cancelled, what + " changed while it was being updated");
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::DeleteDevice>(&op)) {
    const std::string what = fmt::format("device '{}'", o->device_id);
    CAIRN_TRY(check_etag(d, kDeviceEtag, o->device_id, std::nullopt, o->expected_etag, what));
    for (const char* sql :
         {kDeleteDevice, kDeleteDeviceModules, kDeleteDeviceTwins, kDeleteDeviceDeployment}) {
      Query q(d, sql);
      q.bind(1, o->device_id);
      CAIRN_TRY(q.run("delete " + what));
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::InsertModule>(&op)) {
    const ModuleRecord& r = o->module;
    CAIRN_TRY(check_etag(d, kDeviceEtag, r.device_id, std::nullopt, {},
                         fmt::format("device '{}'", r.device_id)));
    Query q(d, kInsertModule);
    q.bind(1, r.device_id).bind(2, r.module_id).bind(3, r.generation_id).bind(4, r.etag);
    q.bind(5, r.primary_key).bind(6, r.secondary_key).bind(7, r.managed_by);
    q.bind(8, std::int64_t{r.connected}).bind(9, r.connection_state_updated_ms);
    q.bind(10, r.last_activity_ms).bind(11, r.cloud_to_device_message_count);
    CAIRN_TRY(q.run(fmt::format("insert module '{}/{}'", r.device_id, r.module_id)));
    if (d.changes() == 0) {
      return make_error(errc::already_exists, fmt::format("module '{}' already exists on device "
                                                          "'{}'",
                                                          r.module_id, r.device_id));
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::UpdateModule>(&op)) {
    const ModuleRecord& r = o->module;
    const std::string what = fmt::format("module '{}/{}'", r.device_id, r.module_id);
    CAIRN_TRY(check_etag(d, kModuleEtag, r.device_id, r.module_id, o->expected_etag, what));
    Query q(d, kUpdateModule);
    q.bind(1, r.device_id).bind(2, r.module_id).bind(3, r.etag).bind(4, r.primary_key);
    q.bind(5, r.secondary_key).bind(6, r.managed_by).bind(7, o->expected_etag);
    CAIRN_TRY(q.run("update " + what));
    if (d.changes() == 0) {
      return make_error(errc::cancelled, what + " changed while it was being updated");
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::DeleteModule>(&op)) {
    const std::string what = fmt::format("module '{}/{}'", o->device_id, o->module_id);
    CAIRN_TRY(check_etag(d, kModuleEtag, o->device_id, o->module_id, o->expected_etag, what));
    for (const char* sql : {kDeleteModule, kDeleteTwin}) {
      Query q(d, sql);
      q.bind(1, o->device_id).bind(2, o->module_id);
      CAIRN_TRY(q.run("delete " + what));
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::PutTwin>(&op)) {
    const TwinRecord& r = o->twin;
    const std::string what = fmt::format("twin '{}'", r.key.client_id());
    const std::string document = r.twin.serialize();
    if (o->expected_etag.empty()) {
      Query q(d, kInsertTwin);
      q.bind(1, r.key.device_id).bind(2, r.key.module_id).bind(3, r.etag).bind(4, document);
      CAIRN_TRY(q.run("insert " + what));
      if (d.changes() == 0) return make_error(errc::already_exists, what + " already exists");
      return {};
    }
    CAIRN_TRY(check_etag(d, kTwinEtag, r.key.device_id, r.key.module_id, o->expected_etag, what));
    Query q(d, kUpdateTwin);
    q.bind(1, r.key.device_id).bind(2, r.key.module_id).bind(3, r.etag).bind(4, document);
    q.bind(5, o->expected_etag);
    CAIRN_TRY(q.run("update " + what));
    if (d.changes() == 0) {
      return make_error(errc::cancelled, what + " changed while it was being updated");
    }
    return {};
  }
  if (const auto* o = std::get_if<WriteBatch::PutDeployment>(&op)) {
    const DeploymentRecord& r = o->deployment;
    const std::string content = twin::dump_json(r.content);
    Query q(d, kPutDeployment);
    q.bind(1, r.device_id).bind(2, r.version).bind(3, content).bind(4, r.applied_ms);
    return q.run(fmt::format("store the deployment of '{}'", r.device_id));
  }
  if (const auto* o = std::get_if<WriteBatch::PutPolicy>(&op)) {
    const PolicyRecord& r = o->policy;
    Query q(d, kPutPolicy);
    q.bind(1, r.name).bind(2, r.primary_key).bind(3, r.secondary_key).bind(4, r.rights);
    return q.run(fmt::format("store policy '{}'", r.name));
  }
  return make_error(errc::internal, "unknown write batch operation");
}

Status SqliteCloudStore::set_connection_state(const TwinKey& who, bool connected,
                                              std::int64_t at_ms) {
  Query q(*db_, who.module_id.empty() ? kDeviceConnection : kModuleConnection);
  if (who.module_id.empty()) {
    q.bind(1, who.device_id).bind(2, std::int64_t{connected}).bind(3, at_ms);
  } else {
    q.bind(1, who.device_id).bind(2, who.module_id).bind(3, std::int64_t{connected});
    q.bind(4, at_ms);
  }
  CAIRN_TRY(q.run(fmt::format("record the connection state of '{}'", who.client_id())));
  if (db_->changes() == 0) {
    return make_error(errc::not_found, fmt::format("identity '{}' not found", who.client_id()));
  }
  return {};
}

Result<std::vector<bool>> SqliteCloudStore::insert_telemetry(std::span<TelemetryRecord> records) {
  std::vector<bool> stored(records.size(), false);
  Status s = db_->transaction([&]() -> Status {
    std::int64_t inserted = 0;
    std::int64_t duplicates_by_key = 0;
    std::map<std::pair<std::string, std::string>, std::int64_t> last_activity;
    for (std::size_t i = 0; i < records.size(); ++i) {
      TelemetryRecord& record = records[i];
      const std::string system = properties_to_text(record.system);
      const std::string app = properties_to_text(record.app);
      Query q(*db_, kInsertTelemetry);
      q.bind(1, record.device_id).bind(2, record.module_id).bind(3, record.message_id);
      q.bind(4, record.enqueued_time).bind(5, record.stored_ms).bind(6, system).bind(7, app);
      q.bind_blob(8, record.body).bind(9, record.dedupe_key);
      CAIRN_TRY(q.run("store a message"));
      if (db_->changes() == 0) {
        if (record.message_id.empty()) ++duplicates_by_key;
        continue;
      }
      stored[i] = true;
      ++inserted;
      record.seq = db_->last_insert_rowid();
      auto& at = last_activity[{record.device_id, record.module_id}];
      at = std::max(at, record.stored_ms);
    }
    // Once per sender, not per message. The sender may be unknown (deleted after it sent):
    // then there is nothing to update.
    for (const auto& [who, at] : last_activity) {
      const auto& [device_id, module_id] = who;
      Query a(*db_, module_id.empty() ? kDeviceActivity : kModuleActivity);
      if (module_id.empty()) {
        a.bind(1, device_id).bind(2, at);
      } else {
        a.bind(1, device_id).bind(2, module_id).bind(3, at);
      }
      CAIRN_TRY(
          a.run(fmt::format("record the activity of '{}'", client_name(device_id, module_id))));
    }
    const auto duplicates = static_cast<std::int64_t>(records.size()) - inserted;
    for (const auto& [counter, n] :
         {std::pair{"telemetry_stored", inserted}, std::pair{"telemetry_duplicates", duplicates},
          std::pair{"telemetry_duplicates_by_key", duplicates_by_key}}) {
      if (n == 0) continue;
      Query c(*db_, kAddToCounter);
      c.bind(1, std::string_view(counter)).bind(2, n);
      CAIRN_TRY(c.run("count messages"));
    }
    return {};
  });
  if (!s) return std::move(s).error();
  return stored;
}

Result<std::vector<TelemetryRecord>> SqliteCloudStore::list_telemetry(const TelemetryQuery& query) {
  Query q(*db_, kListTelemetry);
  q.bind(1, query.after_seq);
  if (query.device_id) q.bind(2, *query.device_id);
  if (query.module_id) q.bind(3, *query.module_id);
  q.bind(4, static_cast<std::int64_t>(query.limit));
  std::vector<TelemetryRecord> out;
  for (;;) {
    auto row = q.step("list telemetry");
    if (!row) return std::move(row).error();
    if (!*row) return out;
    TelemetryRecord r;
    r.seq = q.column_int(0);
    r.device_id = q.column_text(1);
    r.module_id = q.column_text(2);
    r.message_id = q.column_text(3);
    r.enqueued_time = q.column_text(4);
    r.stored_ms = q.column_int(5);
    auto system = properties_from_text(q.column_text(6), r.seq, "system_properties");
    if (!system) return std::move(system).error();
    auto app = properties_from_text(q.column_text(7), r.seq, "app_properties");
    if (!app) return std::move(app).error();
    r.system = std::move(*system);
    r.app = std::move(*app);
    r.body = q.column_blob(8);
    r.dedupe_key = q.column_text(9);
    out.push_back(std::move(r));
  }
}

Result<StoreCounts> SqliteCloudStore::counts() {
  Query q(*db_, kCounts);
  auto row = q.step("count the cloud store");
  if (!row) return std::move(row).error();
  if (!*row) return make_error(errc::internal, "count query returned no row");
  return StoreCounts{q.column_int(0), q.column_int(1), q.column_int(2), q.column_int(3),
                     q.column_int(4)};
}

Status SqliteCloudStore::set_busy_timeout(std::chrono::milliseconds timeout) {
  constexpr auto kMax = std::chrono::milliseconds(std::numeric_limits<int>::max());
  return db_->set_busy_timeout(static_cast<int>(std::min(timeout, kMax).count()));
}

Status SqliteCloudStore::exec_for_test(const char* sql) { return db_->exec(sql, "test SQL"); }

}  // namespace cairn::cloud
