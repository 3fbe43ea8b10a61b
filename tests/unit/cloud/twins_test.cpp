#include "cloud/twins.hpp"

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;
using testing::CloudTest;

struct Answer {
  int status = 0;
  std::string body;
};

class TwinsTest : public CloudTest {
 protected:
  Answer get(const hub::Principal& who) {
    Answer a;
    twins_->get_twin(who, [&](int status, std::string body) { a = {status, std::move(body)}; });
    return a;
  }
  Answer report(const hub::Principal& who, std::string_view body) {
    Answer a;
    twins_->patch_reported(who, body, [&](int status, std::string b) {
      a = {status, std::move(b)};
    });
    return a;
  }
  TwinRecord stored(const TwinKey& key) { return **store_->find_twin(key); }
};

TEST_F(TwinsTest, DeviceGetsItsTwinAndPatchesReported) {
  make_device("d");
  hub::Principal who{"d", ""};
  Answer first = get(who);
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(json::parse(first.body),
            json::parse(R"({"desired":{"$version":1},"reported":{"$version":1}})"));
  const std::string etag_before = stored(TwinKey{"d", ""}).etag;
  Answer patched = report(who, R"({"temp": 21.5, "fw": {"version": "1.2"}})");
  EXPECT_EQ(patched.status, 204);
  EXPECT_TRUE(patched.body.empty());
  TwinRecord after = stored(TwinKey{"d", ""});
  EXPECT_EQ(after.twin.reported["temp"], 21.5);
  EXPECT_EQ(after.twin.reported_version, 2);
  EXPECT_NE(after.etag, etag_before);
  Answer again = get(who);
  EXPECT_EQ(json::parse(again.body)["reported"]["fw"]["version"], "1.2");
  EXPECT_EQ(twins_->counters().reported_patches, 1u);
}

TEST_F(TwinsTest, ModuleTwinsAreSeparate) {
  make_device("d");
  make_module("d", "m");
  EXPECT_EQ(report(hub::Principal{"d", "m"}, R"({"x": 1})").status, 204);
  EXPECT_EQ(stored(TwinKey{"d", "m"}).twin.reported["x"], 1);
  EXPECT_TRUE(stored(TwinKey{"d", ""}).twin.reported.empty());
  EXPECT_EQ(get(hub::Principal{"d", "nope"}).status, 404);
}

TEST_F(TwinsTest, BadReportedPatchesAre400AndStoreNothing) {
  make_device("d");
  hub::Principal who{"d", ""};
  const TwinRecord before = stored(TwinKey{"d", ""});
  std::string deep = "1";
  for (int i = 0; i < 12; ++i) deep = "{\"a\":" + deep + "}";
  const std::string oversize = "{\"big\":\"" + std::string(40 * 1024, 'x') + "\"}";
  std::string wide = "{";
  for (int i = 0; i < 20; ++i) {
    wide += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":\"" + std::string(2000, 'y') + "\"";
  }
  wide += "}";
  for (const std::string& bad :
       {deep, oversize, wide, std::string("{not json"), std::string("[1,2]"),
        std::string(R"({"$bad": 1})"), std::string(R"({"a.b": 1})")}) {
    Answer a = report(who, bad);
    EXPECT_EQ(a.status, 400) << bad.substr(0, 60);
    auto msg = json::parse(a.body, nullptr, false);
    ASSERT_TRUE(msg.is_object()) << a.body;
    EXPECT_TRUE(msg["message"].is_string());
    EXPECT_FALSE(msg["message"].get<std::string>().empty());
  }
  const TwinRecord after = stored(TwinKey{"d", ""});
  EXPECT_EQ(after.twin, before.twin);
  EXPECT_EQ(after.etag, before.etag);
  EXPECT_EQ(twins_->counters().reported_rejected, 7u);
}

TEST_F(TwinsTest, ServicePatchMergesDesiredAndTags) {
  make_device("d");
  const std::string etag = stored(TwinKey{"d", ""}).etag;
  auto w = twins_->update(TwinKey{"d", ""}, json::parse(R"({"tags": {"site": "north"},
                                          "properties": {"desired": {"rate": 5, "$version": 77}},
                                          "deviceId": "ignored"})"),
                          "\"" + etag + "\"");
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  ASSERT_TRUE(w->desired_patch.has_value());
  EXPECT_EQ((*w->desired_patch)["rate"], 5);
  EXPECT_EQ((*w->desired_patch)["$version"], 2);
  EXPECT_EQ(w->twin.twin.tags["site"], "north");
  EXPECT_NE(w->twin.etag, etag);

  // Null deletes; tags-only patches push nothing.
  auto w2 = twins_->update(TwinKey{"d", ""}, json::parse(R"({"tags": {"site": null}})"), "*");
  ASSERT_TRUE(w2.ok());
  EXPECT_FALSE(w2->desired_patch.has_value());
  EXPECT_TRUE(stored(TwinKey{"d", ""}).twin.tags.empty());
  EXPECT_EQ(stored(TwinKey{"d", ""}).twin.desired["rate"], 5);
}

TEST_F(TwinsTest, ServiceWritesCheckIfMatchAndInput) {
  make_device("d");
  const TwinRecord before = stored(TwinKey{"d", ""});
  auto stale = twins_->update(TwinKey{"d", ""}, json::parse(R"({"tags": {"a": 1}})"), "\"old\"");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, errc::cancelled);
  for (const char* bad : {
           R"([])",
           R"({"tags": 5})",
           R"({"properties": []})",
           R"({"properties": {"desired": "x"}})",
           R"({"properties": {"reported": {"a": 1}}})",
           R"({"properties": {"desired": {"a": 1}}, "tags": {"$x": 1}})",
       }) {
    auto r = twins_->update(TwinKey{"d", ""}, json::parse(bad), "*");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument) << bad;
  }
  EXPECT_EQ(stored(TwinKey{"d", ""}).twin, before.twin);  // nothing half-applied
  auto missing = twins_->update(TwinKey{"ghost", ""}, json::object(), "*");
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST_F(TwinsTest, ServiceReplaceReplacesDesiredAndTags) {
  make_device("d");
  ASSERT_TRUE(twins_
                  ->update(TwinKey{"d", ""}, json::parse(R"({"tags":{"a":1,"b":2},
                                           "properties":{"desired":{"x":1,"y":2}}})"),
                           "*")
                  .ok());
  auto w = twins_->replace(TwinKey{"d", ""}, json::parse(R"({"tags":{"b":3},
                                           "properties":{"desired":{"y":2,"z":3,
                                             "$metadata":{},"$version":2},
                                           "reported":{"ignored":true}}})"),
                           "*");
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  const twin::Twin& t = w->twin.twin;
  EXPECT_EQ(t.tags, json::parse(R"({"b":3})"));
  EXPECT_EQ(t.desired, json::parse(R"({"y":2,"z":3})"));
  EXPECT_TRUE(t.reported.empty());
  ASSERT_TRUE(w->desired_patch.has_value());
  EXPECT_TRUE((*w->desired_patch)["x"].is_null());
  EXPECT_EQ((*w->desired_patch)["z"], 3);
  EXPECT_FALSE(w->desired_patch->contains("y"));
}

TEST_F(TwinsTest, ServiceJsonHasTheIotHubShape) {
  DeviceRecord d = make_device("d", true);
  make_module("d", "m");
  ASSERT_EQ(report(hub::Principal{"d", ""}, R"({"r": 1})").status, 204);
  TwinRecord rec = stored(TwinKey{"d", ""});
  auto j = twins_->service_json(rec, true);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["deviceId"], "d");
  EXPECT_FALSE(j->contains("moduleId"));
  EXPECT_EQ((*j)["etag"], rec.etag);
  EXPECT_EQ((*j)["deviceEtag"], d.etag);
  EXPECT_EQ((*j)["status"], "enabled");
  EXPECT_EQ((*j)["connectionState"], "Connected");
  EXPECT_EQ((*j)["authenticationType"], "sas");
  EXPECT_EQ((*j)["version"], rec.twin.version);
  EXPECT_EQ((*j)["properties"]["reported"]["r"], 1);
  EXPECT_EQ((*j)["properties"]["reported"]["$version"], 2);
  EXPECT_EQ((*j)["properties"]["desired"]["$version"], 1);
  EXPECT_EQ((*j)["capabilities"]["iotEdge"], true);
  EXPECT_TRUE((*j)["tags"].is_object());

  auto mj = twins_->service_json(stored(TwinKey{"d", "m"}));
  ASSERT_TRUE(mj.ok());
  EXPECT_EQ((*mj)["moduleId"], "m");
  EXPECT_EQ((*mj)["connectionState"], "Disconnected");
  EXPECT_FALSE(mj->contains("capabilities"));
}

}  // namespace
}  // namespace cairn::cloud
