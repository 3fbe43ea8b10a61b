#include "cloud/registry.hpp"

#include <gtest/gtest.h>

#include "cloud/ids.hpp"
#include "cloud_test_util.hpp"
#include "core/crypto.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;
using testing::CloudTest;

class RegistryTest : public CloudTest {};

TEST_F(RegistryTest, CreateGeneratesKeysAndCreatesTheTwin) {
  DeviceRecord d = make_device("sensor-1");
  EXPECT_EQ(d.device_id, "sensor-1");
  EXPECT_TRUE(d.enabled);
  EXPECT_FALSE(d.iot_edge);
  EXPECT_FALSE(d.etag.empty());
  EXPECT_EQ(d.generation_id.size(), 18u);
  EXPECT_EQ(crypto::base64_decode(d.primary_key)->size(), 32u);
  EXPECT_NE(d.primary_key, d.secondary_key);
  auto got = registry_->get_device("sensor-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, d);
  auto twin = store_->find_twin(TwinKey{"sensor-1", ""});
  ASSERT_TRUE(twin.ok() && twin->has_value());
  EXPECT_EQ((*twin)->twin, twin::Twin{});
}

TEST_F(RegistryTest, CreateKeepsGivenKeysAndRejectsBadOnes) {
  DeviceSpec spec;
  spec.device_id = "k";
  spec.primary_key = crypto::base64_encode(std::string(16, 'a'));
  auto d = registry_->create_device(spec);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->primary_key, spec.primary_key);
  EXPECT_FALSE(d->secondary_key.empty());

  DeviceSpec bad;
  bad.device_id = "k2";
  bad.primary_key = crypto::base64_encode("short");
  auto r = registry_->create_device(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_FALSE(store_->find_device("k2")->has_value());
}

TEST_F(RegistryTest, IdsFollowIotHubRules) {
  for (const char* ok : {"a", "dev-1:x.y+z%_#*?!(),=@;$'", "A9"}) {
    EXPECT_TRUE(valid_identity_id(ok)) << ok;
  }
  for (std::string bad : {std::string(), std::string("has space"), std::string("slash/no"),
                          std::string(129, 'a'), std::string("quote\"no"), std::string("ü")}) {
    EXPECT_FALSE(valid_identity_id(bad)) << bad;
    DeviceSpec spec;
    spec.device_id = bad;
    auto r = registry_->create_device(spec);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, errc::invalid_argument);
  }
  EXPECT_TRUE(valid_identity_id(std::string(128, 'a')));
  auto counts = store_->counts();
  EXPECT_EQ(counts->devices, 0);
}

TEST_F(RegistryTest, CreatingTwiceConflicts) {
  make_device("d");
  DeviceSpec spec;
  spec.device_id = "d";
  auto again = registry_->create_device(spec);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, errc::already_exists);
}

TEST_F(RegistryTest, UpdateHonoursIfMatch) {
  DeviceRecord d = make_device("d");
  DeviceSpec spec;
  spec.device_id = "d";
  spec.enabled = false;
  spec.status_reason = "maintenance";
  now_ms_ += 5000;
  auto stale = registry_->update_device(spec, "\"not-it\"");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, errc::cancelled);
  EXPECT_TRUE(registry_->get_device("d")->enabled);

  auto updated = registry_->update_device(spec, "\"" + d.etag + "\"");
  ASSERT_TRUE(updated.ok()) << updated.error().to_string();
  EXPECT_FALSE(updated->enabled);
  EXPECT_EQ(updated->status_reason, "maintenance");
  EXPECT_EQ(updated->status_updated_ms, now_ms_);
  EXPECT_NE(updated->etag, d.etag);
  EXPECT_EQ(updated->primary_key, d.primary_key);  // not given: kept
  EXPECT_EQ(updated->generation_id, d.generation_id);

  spec.enabled = true;
  auto star = registry_->update_device(spec, "*");
  ASSERT_TRUE(star.ok());
  EXPECT_TRUE(star->enabled);

  DeviceSpec missing;
  missing.device_id = "ghost";
  auto r = registry_->update_device(missing, "*");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::not_found);
}

TEST_F(RegistryTest, DeleteCascadesToModulesAndTwins) {
  DeviceRecord d = make_device("edge", true);
  make_module("edge", "m1");
  make_module("edge", "m2");
  make_device("other");
  auto wrong = registry_->delete_device("edge", "\"nope\"");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, errc::cancelled);
  ASSERT_TRUE(registry_->delete_device("edge", d.etag).ok());
  EXPECT_EQ(registry_->get_device("edge").error().code, errc::not_found);
  EXPECT_FALSE(store_->find_module("edge", "m1")->has_value());
  EXPECT_FALSE(store_->find_twin(TwinKey{"edge", "m2"})->has_value());
  EXPECT_FALSE(store_->find_twin(TwinKey{"edge", ""})->has_value());
  EXPECT_TRUE(registry_->get_device("other").ok());
  // Re-creating gives a new generation.
  DeviceRecord again = make_device("edge");
  EXPECT_NE(again.generation_id, d.generation_id);
}

TEST_F(RegistryTest, ModulesLiveOnTheirDevice) {
  make_device("d");
  ModuleRecord m = make_module("d", "$edgeAgent");
  EXPECT_EQ(m.module_id, "$edgeAgent");
  EXPECT_TRUE(store_->find_twin(TwinKey{"d", "$edgeAgent"})->has_value());
  ModuleSpec orphan;
  orphan.device_id = "ghost";
  orphan.module_id = "m";
  auto r = registry_->create_module(orphan);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_EQ(registry_->list_modules("ghost").error().code, errc::not_found);
  auto list = registry_->list_modules("d");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);

  ModuleSpec update;
  update.device_id = "d";
  update.module_id = "$edgeAgent";
  update.managed_by = "someone";
  auto stale = registry_->update_module(update, "stale");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, errc::cancelled);
  auto u = registry_->update_module(update, m.etag);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->managed_by, "someone");

  ASSERT_TRUE(registry_->delete_module("d", "$edgeAgent", "*").ok());
  EXPECT_FALSE(store_->find_twin(TwinKey{"d", "$edgeAgent"})->has_value());
  EXPECT_EQ(registry_->delete_module("d", "$edgeAgent", "*").error().code, errc::not_found);
}

TEST_F(RegistryTest, EnsureModuleCreatesOnceAndKeepsTheExisting) {
  make_device("d", true);
  auto first = registry_->ensure_module("d", "filter", "iotEdge");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->managed_by, "iotEdge");
  auto second = registry_->ensure_module("d", "filter", "iotEdge");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, *first);
}

TEST_F(RegistryTest, RegeneratesKeys) {
  DeviceRecord d = make_device("d");
  auto primary = registry_->regenerate_device_key("d", KeyKind::primary);
  ASSERT_TRUE(primary.ok());
  EXPECT_NE(primary->primary_key, d.primary_key);
  EXPECT_EQ(primary->secondary_key, d.secondary_key);
  EXPECT_NE(primary->etag, d.etag);
  auto secondary = registry_->regenerate_device_key("d", KeyKind::secondary);
  ASSERT_TRUE(secondary.ok());
  EXPECT_EQ(secondary->primary_key, primary->primary_key);
  EXPECT_NE(secondary->secondary_key, d.secondary_key);
  auto swapped = registry_->regenerate_device_key("d", KeyKind::swap);
  ASSERT_TRUE(swapped.ok());
  EXPECT_EQ(swapped->primary_key, secondary->secondary_key);
  EXPECT_EQ(swapped->secondary_key, secondary->primary_key);
  EXPECT_EQ(*registry_->get_device("d"), *swapped);

  ModuleRecord m = make_module("d", "m");
  auto mk = registry_->regenerate_module_key("d", "m", KeyKind::primary);
  ASSERT_TRUE(mk.ok());
  EXPECT_NE(mk->primary_key, m.primary_key);
  EXPECT_EQ(registry_->regenerate_module_key("d", "x", KeyKind::swap).error().code,
            errc::not_found);
  EXPECT_EQ(parse_key_kind("Swap").value(), KeyKind::swap);
  EXPECT_FALSE(parse_key_kind("tertiary").ok());
}

TEST_F(RegistryTest, DeviceJsonHasTheIotHubShape) {
  DeviceRecord d = make_device("d", true);
  json j = device_to_json(d);
  EXPECT_EQ(j["deviceId"], "d");
  EXPECT_EQ(j["generationId"], d.generation_id);
  EXPECT_EQ(j["etag"], d.etag);
  EXPECT_EQ(j["status"], "enabled");
  EXPECT_TRUE(j["statusReason"].is_null());
  EXPECT_EQ(j["connectionState"], "Disconnected");
  EXPECT_EQ(j["lastActivityTime"], "0001-01-01T00:00:00Z");
  EXPECT_EQ(j["statusUpdatedTime"], "2027-01-15T08:00:00.000Z");
  EXPECT_EQ(j["cloudToDeviceMessageCount"], 0);
  EXPECT_EQ(j["authentication"]["type"], "sas");
  EXPECT_EQ(j["authentication"]["symmetricKey"]["primaryKey"], d.primary_key);
  EXPECT_TRUE(j["authentication"]["x509Thumbprint"]["primaryThumbprint"].is_null());
  EXPECT_EQ(j["capabilities"]["iotEdge"], true);
  EXPECT_EQ(device_to_json(d, true)["connectionState"], "Connected");

  ModuleRecord m = make_module("d", "m");
  json mj = module_to_json(m);
  EXPECT_EQ(mj["moduleId"], "m");
  EXPECT_EQ(mj["deviceId"], "d");
  EXPECT_TRUE(mj["managedBy"].is_null());
  EXPECT_EQ(mj["authentication"]["symmetricKey"]["secondaryKey"], m.secondary_key);
  EXPECT_FALSE(mj.contains("capabilities"));
}

TEST(RegistryJson, ReadsDeviceBodies) {
  auto spec = device_spec_from_json(json::parse(R"({
    "deviceId": "d1", "status": "disabled", "statusReason": "why",
    "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": null},
                       "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null}},
    "capabilities": {"iotEdge": true}, "etag": "ignored", "connectionState": "Connected"})"));
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->device_id, "d1");
  EXPECT_EQ(spec->enabled, false);
  EXPECT_EQ(spec->status_reason, "why");
  EXPECT_EQ(spec->iot_edge, true);
  EXPECT_TRUE(spec->primary_key.empty());

  for (const char* bad : {
           R"([])",
           R"({"deviceId": 5})",
           R"({"status": "sleeping"})",
           R"({"authentication": {"type": "selfSigned"}})",
           R"({"authentication": {"x509Thumbprint": {"primaryThumbprint": "ABCD"}}})",
           R"({"authentication": {"symmetricKey": {"primaryKey": "not base64!"}}})",
           R"({"authentication": "sas"})",
           R"({"capabilities": {"iotEdge": "yes"}})",
       }) {
    auto r = device_spec_from_json(json::parse(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument) << bad;
  }
  auto m = module_spec_from_json(json::parse(R"({"deviceId":"d","moduleId":"m","managedBy":"x"})"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->managed_by, "x");
  EXPECT_FALSE(module_spec_from_json(json::parse(R"({"moduleId": []})")).ok());
}

TEST(EtagMatching, FollowsIfMatchRules) {
  EXPECT_TRUE(etag_matches("", "abc"));
  EXPECT_TRUE(etag_matches("*", "abc"));
  EXPECT_TRUE(etag_matches("\"*\"", "abc"));
  EXPECT_TRUE(etag_matches("\"abc\"", "abc"));
  EXPECT_TRUE(etag_matches("abc", "abc"));
  EXPECT_TRUE(etag_matches("W/\"abc\"", "abc"));
  EXPECT_TRUE(etag_matches("\"x\", \"abc\"", "abc"));
  EXPECT_FALSE(etag_matches("\"abd\"", "abc"));
  EXPECT_FALSE(etag_matches("\"\"", "abc"));
}

}  // namespace
}  // namespace cairn::cloud
