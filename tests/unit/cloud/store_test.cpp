#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "cloud/sqlite_cloud_store.hpp"
#include "cloud_test_util.hpp"

namespace cairn::cloud {
namespace {

using testing::open_store;
using testing::TempDir;

DeviceRecord device(const std::string& id) {
  DeviceRecord d;
  d.device_id = id;
  d.generation_id = "638000000000000001";
  d.etag = "etag-" + id;
  d.enabled = true;
  d.status_reason = "";
  d.status_updated_ms = 1000;
  d.primary_key = "cHJpbWFyeS1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";
  d.secondary_key = "c2Vjb25kYXJ5LWtleS0wMTIzNDU2Nzg5YWJjZA==";
  d.iot_edge = true;
  return d;
}

ModuleRecord module(const std::string& d, const std::string& m) {
  ModuleRecord r;
  r.device_id = d;
  r.module_id = m;
  r.generation_id = "638000000000000002";
  r.etag = "etag-" + d + "/" + m;
  r.primary_key = "bW9kdWxlLXByaW1hcnktMDEyMzQ1Njc4OWFi";
  r.secondary_key = "bW9kdWxlLXNlY29uZGFyeS0wMTIzNDU2Nzg5";
  r.managed_by = "iotEdge";
  return r;
}

TwinRecord twin_of(const std::string& d, const std::string& m, std::string etag) {
  return TwinRecord{TwinKey{d, m}, twin::Twin{}, std::move(etag)};
}

Status insert_device_with_twin(CloudStore& store, const DeviceRecord& d) {
  WriteBatch b;
  b.add(WriteBatch::InsertDevice{d});
  b.add(WriteBatch::PutTwin{twin_of(d.device_id, "", "t1"), ""});
  return store.write(b);
}

TEST(SqliteCloudStore, FirstStartCreatesTheOwnerPolicyAndKeepsItAcrossReopen) {
  TempDir dir;
  PolicyRecord owner;
  {
    auto store = open_store(dir.file("data/cloud.db"));
    ASSERT_NE(store, nullptr);
    auto p = store->find_policy(kOwnerPolicy);
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(p->has_value());
    owner = **p;
    EXPECT_FALSE(owner.primary_key.empty());
    EXPECT_NE(owner.primary_key, owner.secondary_key);
  }
  auto store = open_store(dir.file("data/cloud.db"));
  ASSERT_NE(store, nullptr);
  auto again = store->find_policy(kOwnerPolicy);
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ(**again, owner);  // not regenerated on the second start
  auto all = store->list_policies();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

TEST(SqliteCloudStore, DevicesModulesTwinsAndDeploymentsRoundTripThroughReopen) {
  TempDir dir;
  const auto path = dir.file("cloud.db");
  DeviceRecord d = device("edge-1");
  ModuleRecord m = module("edge-1", "$edgeAgent");
  twin::Twin t;
  ASSERT_TRUE(t.patch_tags({{"site", "north"}}).ok());
  ASSERT_TRUE(t.patch_reported({{"temp", 21.5}}).ok());
  DeploymentRecord dep{"edge-1", 3, {{"modulesContent", {{"$edgeAgent", {{"a", 1}}}}}}, 42};
  {
    auto store = open_store(path);
    ASSERT_NE(store, nullptr);
    WriteBatch b;
    b.add(WriteBatch::InsertDevice{d});
    b.add(WriteBatch::InsertModule{m});
    b.add(WriteBatch::PutTwin{TwinRecord{TwinKey{"edge-1", ""}, t, "te1"}, ""});
    b.add(WriteBatch::PutTwin{twin_of("edge-1", "$edgeAgent", "tm1"), ""});
    b.add(WriteBatch::PutDeployment{dep});
    ASSERT_TRUE(store->write(b).ok());
  }
  auto store = open_store(path);
  ASSERT_NE(store, nullptr);
  auto rd = store->find_device("edge-1");
  ASSERT_TRUE(rd.ok() && rd->has_value());
  EXPECT_EQ(**rd, d);
  auto rm = store->find_module("edge-1", "$edgeAgent");
  ASSERT_TRUE(rm.ok() && rm->has_value());
  EXPECT_EQ(**rm, m);
  auto rt = store->find_twin(TwinKey{"edge-1", ""});
  ASSERT_TRUE(rt.ok() && rt->has_value());
  EXPECT_EQ((*rt)->twin, t);
  EXPECT_EQ((*rt)->etag, "te1");
  auto rdep = store->find_deployment("edge-1");
  ASSERT_TRUE(rdep.ok() && rdep->has_value());
  EXPECT_EQ(**rdep, dep);
  auto list = store->list_modules("edge-1");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  auto missing = store->find_device("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST(SqliteCloudStore, AFailingBatchChangesNothing) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(insert_device_with_twin(*store, device("d1")).ok());
  WriteBatch b;
  b.add(WriteBatch::InsertDevice{device("d2")});
  b.add(WriteBatch::InsertModule{module("d2", "m")});
  b.add(WriteBatch::InsertDevice{device("d1")});  // exists: the whole batch fails
  auto s = store->write(b);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, errc::already_exists);
  auto d2 = store->find_device("d2");
  ASSERT_TRUE(d2.ok());
  EXPECT_FALSE(d2->has_value());
  auto m = store->find_module("d2", "m");
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value());
}

TEST(SqliteCloudStore, ConditionalWritesCheckTheEtag) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  DeviceRecord d = device("d1");
  ASSERT_TRUE(insert_device_with_twin(*store, d).ok());
  DeviceRecord changed = d;
  changed.enabled = false;
  changed.etag = "etag-2";
  WriteBatch stale;
  stale.add(WriteBatch::UpdateDevice{changed, "not-the-etag"});
  auto s = store->write(stale);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, errc::cancelled);
  WriteBatch ok;
  ok.add(WriteBatch::UpdateDevice{changed, d.etag});
  ASSERT_TRUE(store->write(ok).ok());
  EXPECT_EQ(**store->find_device("d1"), changed);

  WriteBatch twin_stale;
  twin_stale.add(WriteBatch::PutTwin{twin_of("d1", "", "t2"), "wrong"});
  auto ts = store->write(twin_stale);
  ASSERT_FALSE(ts.ok());
  EXPECT_EQ(ts.error().code, errc::cancelled);
  WriteBatch twin_missing;
  twin_missing.add(WriteBatch::PutTwin{twin_of("nobody", "", "t2"), "t1"});
  auto tm = store->write(twin_missing);
  ASSERT_FALSE(tm.ok());
  EXPECT_EQ(tm.error().code, errc::not_found);
}

TEST(SqliteCloudStore, DeletingADeviceDeletesItsModulesTwinsAndDeployment) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  WriteBatch b;
  b.add(WriteBatch::InsertDevice{device("d1")});
  b.add(WriteBatch::PutTwin{twin_of("d1", "", "a"), ""});
  b.add(WriteBatch::InsertModule{module("d1", "m1")});
  b.add(WriteBatch::PutTwin{twin_of("d1", "m1", "b"), ""});
  b.add(WriteBatch::InsertDevice{device("d2")});
  b.add(WriteBatch::PutTwin{twin_of("d2", "", "c"), ""});
  b.add(WriteBatch::PutDeployment{DeploymentRecord{"d1", 1, nlohmann::json::object(), 1}});
  ASSERT_TRUE(store->write(b).ok());
  WriteBatch del;
  del.add(WriteBatch::DeleteDevice{"d1", ""});
  ASSERT_TRUE(store->write(del).ok());
  EXPECT_FALSE(store->find_device("d1")->has_value());
  EXPECT_FALSE(store->find_module("d1", "m1")->has_value());
  EXPECT_FALSE(store->find_twin(TwinKey{"d1", ""})->has_value());
  EXPECT_FALSE(store->find_twin(TwinKey{"d1", "m1"})->has_value());
  EXPECT_FALSE(store->find_deployment("d1")->has_value());
  EXPECT_TRUE(store->find_twin(TwinKey{"d2", ""})->has_value());  // others untouched
  WriteBatch again;
  again.add(WriteBatch::DeleteDevice{"d1", ""});
  auto s = store->write(again);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, errc::not_found);
}

TEST(SqliteCloudStore, AModuleNeedsItsDevice) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  WriteBatch b;
  b.add(WriteBatch::InsertModule{module("ghost", "m")});
  auto s = store->write(b);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, errc::not_found);
}

TEST(SqliteCloudStore, TelemetryIsStoredOncePerMessageIdAndSurvivesReopen) {
  TempDir dir;
  const auto path = dir.file("cloud.db");
  {
    auto store = open_store(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(insert_device_with_twin(*store, device("d1")).ok());
    TelemetryRecord r;
    r.device_id = "d1";
    r.message_id = "m-1";
    r.enqueued_time = "2027-01-15T08:00:00.000Z";
    r.stored_ms = 5000;
    r.system.set("messageId", "m-1");
    r.system.set("contentType", "application/json");
    r.app.set("zeta", "1");
    r.app.set("alpha", "2");
    r.body = std::string("\x00\xff{}", 4);
    auto first = store->insert_telemetry(r);
    ASSERT_TRUE(first.ok());
    EXPECT_TRUE(*first);
    EXPECT_GT(r.seq, 0);
    TelemetryRecord again = r;
    auto dup = store->insert_telemetry(again);
    ASSERT_TRUE(dup.ok());
    EXPECT_FALSE(*dup);
    // Same message id from another sender is another message.
    TelemetryRecord other = r;
    other.module_id = "m";
    ASSERT_TRUE(*store->insert_telemetry(other));
    // Messages without an id are never deduplicated.
    TelemetryRecord anon = r;
    anon.message_id.clear();
    ASSERT_TRUE(*store->insert_telemetry(anon));
    ASSERT_TRUE(*store->insert_telemetry(anon));
    EXPECT_EQ((*store->find_device("d1"))->last_activity_ms, 5000);
  }
  auto store = open_store(path);
  ASSERT_NE(store, nullptr);
  auto counts = store->counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->telemetry, 4);
  EXPECT_EQ(counts->duplicates, 1);
  EXPECT_EQ(counts->devices, 1);
  TelemetryQuery all;
  auto list = store->list_telemetry(all);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 4u);
  const TelemetryRecord& first = (*list)[0];
  EXPECT_EQ(first.body, std::string("\x00\xff{}", 4));
  ASSERT_EQ(first.app.entries().size(), 2u);
  EXPECT_EQ(first.app.entries()[0].first, "zeta");  // order kept
  EXPECT_EQ(first.system.get("contentType"), "application/json");
  // Tailing and filters.
  TelemetryQuery after;
  after.after_seq = first.seq;
  after.limit = 2;
  auto page = store->list_telemetry(after);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_GT((*page)[0].seq, first.seq);
  TelemetryQuery by_module;
  by_module.device_id = "d1";
  by_module.module_id = "m";
  auto mod = store->list_telemetry(by_module);
  ASSERT_TRUE(mod.ok());
  ASSERT_EQ(mod->size(), 1u);
  EXPECT_EQ((*mod)[0].module_id, "m");
}

TEST(SqliteCloudStore, TelemetryIsStoredOncePerDedupeKeyAndCountedApart) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  TelemetryRecord r;
  r.device_id = "d1";
  r.module_id = "sensor";
  r.dedupe_key = "00112233aabbccdd.0.1.20270115080000000";
  r.enqueued_time = "2027-01-15T08:00:00.000Z";
  r.body = "a";
  ASSERT_TRUE(*store->insert_telemetry(r));
  TelemetryRecord resent = r;
  EXPECT_FALSE(*store->insert_telemetry(resent));
  // The key is the sender's: the same key from another module or device is another message.
  TelemetryRecord other_module = r;
  other_module.module_id = "other";
  EXPECT_TRUE(*store->insert_telemetry(other_module));
  TelemetryRecord other_device = r;
  other_device.device_id = "d2";
  EXPECT_TRUE(*store->insert_telemetry(other_device));
  // A message id and a key: a re-send is recognised by either; the id is counted as before.
  TelemetryRecord with_id = r;
  with_id.dedupe_key = "00112233aabbccdd.0.2.20270115080000001";
  with_id.message_id = "own-1";
  EXPECT_TRUE(*store->insert_telemetry(with_id));
  TelemetryRecord with_id_again = with_id;
  EXPECT_FALSE(*store->insert_telemetry(with_id_again));
  // Within one batch too.
  std::vector<TelemetryRecord> batch(2, r);
  batch[0].dedupe_key = batch[1].dedupe_key = "00112233aabbccdd.0.3.20270115080000002";
  auto stored = store->insert_telemetry(std::span<TelemetryRecord>(batch));
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, (std::vector<bool>{true, false}));
  auto counts = store->counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->telemetry, 5);
  EXPECT_EQ(counts->duplicates, 3);
  EXPECT_EQ(counts->duplicates_by_key, 2);
  auto list = store->list_telemetry(TelemetryQuery{});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 5u);
  EXPECT_EQ((*list)[0].dedupe_key, r.dedupe_key);
}

TEST(SqliteCloudStore, AVersion1StoreIsMigratedAndKeepsItsTelemetry) {
  TempDir dir;
  const auto path = dir.file("cloud.db");
  {
    auto store = open_store(path);
    ASSERT_NE(store, nullptr);
    TelemetryRecord r;
    r.device_id = "d1";
    r.message_id = "m-1";
    r.body = "old";
    ASSERT_TRUE(*store->insert_telemetry(r));
    // Back to the version 1 layout.
    ASSERT_TRUE(store
                    ->exec_for_test("DROP INDEX telemetry_dedupe_key; "
                                    "ALTER TABLE telemetry DROP COLUMN dedupe_key; "
                                    "DELETE FROM counters WHERE name = "
                                    "'telemetry_duplicates_by_key'; "
                                    "UPDATE schema_version SET version = 1")
                    .ok());
  }
  auto store = open_store(path);
  ASSERT_NE(store, nullptr);
  auto list = store->list_telemetry(TelemetryQuery{});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].body, "old");
  EXPECT_EQ((*list)[0].dedupe_key, "");
  TelemetryRecord keyed;
  keyed.device_id = "d1";
  keyed.dedupe_key = "k";
  ASSERT_TRUE(*store->insert_telemetry(keyed));
  EXPECT_FALSE(*store->insert_telemetry(keyed));
  auto counts = store->counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->duplicates_by_key, 1);
}

TEST(SqliteCloudStore, ConnectionStateIsRecorded) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(insert_device_with_twin(*store, device("d1")).ok());
  ASSERT_TRUE(store->set_connection_state(TwinKey{"d1", ""}, true, 7000).ok());
  auto d = **store->find_device("d1");
  EXPECT_TRUE(d.connected);
  EXPECT_EQ(d.connection_state_updated_ms, 7000);
  EXPECT_EQ(d.last_activity_ms, 7000);
  auto missing = store->set_connection_state(TwinKey{"d1", "nope"}, true, 7000);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST(SqliteCloudStore, CorruptRowsAreReportedByName) {
  TempDir dir;
  auto store = open_store(dir.file("cloud.db"));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(insert_device_with_twin(*store, device("d1")).ok());
  ASSERT_TRUE(
      store->exec_for_test("UPDATE twins SET document = '{broken' WHERE device_id = 'd1'").ok());
  auto t = store->find_twin(TwinKey{"d1", ""});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, errc::corruption);
  EXPECT_NE(t.error().message.find("twin 'd1'"), std::string::npos) << t.error().message;

  TelemetryRecord r;
  r.device_id = "d1";
  r.enqueued_time = "x";
  ASSERT_TRUE(store->insert_telemetry(r).ok());
  ASSERT_TRUE(store->exec_for_test("UPDATE telemetry SET app_properties = '[1]'").ok());
  auto list = store->list_telemetry(TelemetryQuery{});
  ASSERT_FALSE(list.ok());
  EXPECT_EQ(list.error().code, errc::corruption);
  EXPECT_NE(list.error().message.find("seq=" + std::to_string(r.seq)), std::string::npos)
      << list.error().message;

  ASSERT_TRUE(store
                  ->exec_for_test("INSERT INTO deployments(device_id, version, content, "
                                  "applied_ms) VALUES('d1', 1, 'nope', 0)")
                  .ok());
  auto dep = store->find_deployment("d1");
  ASSERT_FALSE(dep.ok());
  EXPECT_EQ(dep.error().code, errc::corruption);
  EXPECT_NE(dep.error().message.find("'d1'"), std::string::npos);
}

TEST(SqliteCloudStore, RefusesAStoreFromANewerVersion) {
  TempDir dir;
  const auto path = dir.file("cloud.db");
  {
    auto store = open_store(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->exec_for_test("UPDATE schema_version SET version = 99").ok());
  }
  auto again = SqliteCloudStore::open(SqliteCloudStoreOptions{path, false});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, errc::corruption);
  EXPECT_NE(again.error().message.find("99"), std::string::npos);
}

TEST(SqliteCloudStore, NotADatabaseIsAnError) {
  TempDir dir;
  const auto path = dir.file("cloud.db");
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("this is not an SQLite database, not at all, and it is long enough", f);
    std::fclose(f);
  }
  auto store = SqliteCloudStore::open(SqliteCloudStoreOptions{path, false});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, errc::corruption);
}

}  // namespace
}  // namespace cairn::cloud
