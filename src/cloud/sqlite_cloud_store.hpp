// SqliteCloudStore: the CloudStore in one SQLite file (WAL mode), by default HOME/data/cloud.db.
//
// Calls are synchronous (cairn-cloud makes them on its store worker thread, store_worker.hpp,
// and its telemetry writer thread, each on a connection of its own); each call is a
// few indexed statements (plus an fsync per commit with the default `full_sync`). Every
// statement is prepared once and reused. The schema carries a version; a file written by a
// newer cairn-cloud is refused rather than misread. On first creation the owner policy
// (kOwnerPolicy) is created with fresh keys.
//
// Thread-safety: one thread at a time (see CloudStore).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "cloud/cloud_store.hpp"

namespace cairn::cloud {

namespace detail {
class Database;
}

struct SqliteCloudStoreOptions {
  std::string path;  // parent directories are created
  // synchronous=FULL: a commit is on disk before the call returns, so a telemetry message the
  // sink acknowledged (and the edge then deleted) survives a power cut. NORMAL is faster but
  // may lose the last commits on power loss (not on a process crash).
  bool full_sync = true;
};

class SqliteCloudStore final : public CloudStore {
 public:
  // 2: telemetry.dedupe_key (unique per device and module when not empty) and the
  // telemetry_duplicates_by_key counter. A version 1 store is migrated at open.
  static constexpr std::int64_t kSchemaVersion = 2;

  static Result<std::unique_ptr<SqliteCloudStore>> open(const SqliteCloudStoreOptions& options);
  ~SqliteCloudStore() override;

  Result<std::optional<DeviceRecord>> find_device(const std::string& device_id) override;
  Result<std::vector<DeviceRecord>> list_devices(std::size_t limit) override;
  Result<std::optional<ModuleRecord>> find_module(const std::string& device_id,
                                                  const std::string& module_id) override;
  Result<std::vector<ModuleRecord>> list_modules(const std::string& device_id) override;
  Result<std::optional<TwinRecord>> find_twin(const TwinKey& key) override;
  Result<std::optional<DeploymentRecord>> find_deployment(const std::string& device_id) override;
  Result<std::optional<PolicyRecord>> find_policy(const std::string& name) override;
  Result<std::vector<PolicyRecord>> list_policies() override;
  Status write(const WriteBatch& batch) override;
  Status set_connection_state(const TwinKey& who, bool connected, std::int64_t at_ms) override;
  Result<std::vector<bool>> insert_telemetry(std::span<TelemetryRecord> records) override;
  using CloudStore::insert_telemetry;
  Result<std::vector<TelemetryRecord>> list_telemetry(const TelemetryQuery& query) override;
  Result<StoreCounts> counts() override;

  // How long a call waits for a lock another connection or process holds before failing with
  // errc::unavailable (5 s after open). The store worker bounds each job by what is left of
  // its time limit.
  Status set_busy_timeout(std::chrono::milliseconds timeout);

  // Runs raw SQL on the connection: tests use it to damage rows on purpose.
  Status exec_for_test(const char* sql);

 private:
  explicit SqliteCloudStore(std::unique_ptr<detail::Database> db);
  Status migrate();
  Status apply(const WriteBatch::Op& op);

  std::unique_ptr<detail::Database> db_;
};

}  // namespace cairn::cloud
