// Shared by the cloud tests: a temporary directory holding a real SQLite cloud store, the
// registry and twins on top of it, and a pinned clock.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "cloud/registry.hpp"
#include "cloud/sqlite_cloud_store.hpp"
#include "cloud/twins.hpp"
#include <stdlib.h>

namespace cairn::cloud::testing {

inline constexpr std::int64_t kNowMs = 1'800'000'000'000;  // 2027-01-15
inline constexpr std::int64_t kNowS = kNowMs / 1000;
inline constexpr const char* kHost = "cloud.example";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-cloud-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::unique_ptr<SqliteCloudStore> open_store(const std::string& path) {
  auto s = SqliteCloudStore::open(SqliteCloudStoreOptions{path, false});
  if (!s) {
    ADD_FAILURE() << "open failed: " << s.error().to_string();
    return nullptr;
  }
  return std::move(*s);
}

// A store, a registry and the twins of record in a fresh directory.
class CloudTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }

  void reopen() {
    twins_.reset();
    registry_.reset();
    store_.reset();
    store_ = open_store(dir_.file("data/cloud.db"));
    ASSERT_NE(store_, nullptr);
    registry_ = std::make_unique<Registry>(*store_, [this] { return now_ms_; });
    twins_ = std::make_unique<CloudTwins>(*store_);
  }

  DeviceRecord make_device(const std::string& id, bool edge = false) {
    DeviceSpec spec;
    spec.device_id = id;
    spec.iot_edge = edge;
    auto d = registry_->create_device(spec);
    EXPECT_TRUE(d.ok()) << d.error().to_string();
    return d.ok() ? *d : DeviceRecord{};
  }
  ModuleRecord make_module(const std::string& device, const std::string& module) {
    ModuleSpec spec;
    spec.device_id = device;
    spec.module_id = module;
    auto m = registry_->create_module(spec);
    EXPECT_TRUE(m.ok()) << m.error().to_string();
    return m.ok() ? *m : ModuleRecord{};
  }

  TempDir dir_;
  std::int64_t now_ms_ = kNowMs;
  std::unique_ptr<SqliteCloudStore> store_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<CloudTwins> twins_;
};

}  // namespace cairn::cloud::testing
