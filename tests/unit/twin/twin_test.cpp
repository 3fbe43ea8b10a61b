// Twin: versions, section limits, failed changes leaving everything as it was, device view,
// storage round trip.
#include "twin/twin.hpp"

#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "json_literal.hpp"

namespace cairn::twin {
namespace {

using test_support::j;

TEST(Twin, FreshTwinStartsAtVersionOne) {
  const Twin t;
  EXPECT_EQ(t.device_view(), j(R"({"desired":{"$version":1},"reported":{"$version":1}})"));
  EXPECT_EQ(t.version, 1);
}

TEST(Twin, ReportedPatchMergesAndBumpsVersions) {
  Twin t;
  ASSERT_TRUE(t.patch_reported(j(R"({"a":1,"b":{"c":"x","d":2}})")));
  ASSERT_TRUE(t.patch_reported(j(R"({"$version":99,"b":{"c":null,"e":[1,2]},"f":true})")));
  EXPECT_EQ(t.reported, j(R"({"a":1,"b":{"d":2,"e":[1,2]},"f":true})"));
  EXPECT_EQ(t.reported_version, 3);
  EXPECT_EQ(t.desired_version, 1);
  EXPECT_EQ(t.version, 3);
  // Versions bump even when nothing changes, as IoT Hub's do.
  ASSERT_TRUE(t.patch_reported(json::object()));
  EXPECT_EQ(t.reported_version, 4);
  EXPECT_EQ(t.device_view()["reported"]["$version"], 4);
}

TEST(Twin, DesiredPatchReturnsDeliveredPatch) {
  Twin t;
  auto first = t.patch_desired(j(R"({"rate":5,"mode":{"a":1}})"));
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(*first, j(R"({"rate":5,"mode":{"a":1},"$version":2})"));
  // A stale "$version" in the patch is replaced by the new one.
  auto second = t.patch_desired(j(R"({"$version":1,"mode":null,"gone":null})"));
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, j(R"({"mode":null,"gone":null,"$version":3})"));
  EXPECT_EQ(t.desired, j(R"({"rate":5})"));
  EXPECT_EQ(t.desired_version, 3);
  EXPECT_EQ(t.reported_version, 1);
  EXPECT_EQ(t.version, 3);
}

TEST(Twin, ReplaceDesiredDeliversTheDiff) {
  Twin t;
  ASSERT_TRUE(t.patch_desired(j(R"({"a":1,"b":{"c":1,"d":2},"e":[1]})")));
  auto delivered = t.replace_desired(j(R"({"$version":5,"b":{"c":1,"d":3},"e":[1],"f":"new",
                                           "g":null})"));
  ASSERT_TRUE(delivered) << delivered.error().message;
  EXPECT_EQ(*delivered, j(R"({"a":null,"b":{"d":3},"f":"new","$version":3})"));
  EXPECT_EQ(t.desired, j(R"({"b":{"c":1,"d":3},"e":[1],"f":"new"})"));
  // Replacing with the same content still bumps the version (rollbacks do too).
  auto same = t.replace_desired(t.desired);
  ASSERT_TRUE(same);
  EXPECT_EQ(*same, j(R"({"$version":4})"));
}

TEST(Twin, TagsBumpOnlyTheDocumentVersion) {
  Twin t;
  ASSERT_TRUE(t.patch_tags(j(R"({"site":"berlin","rack":{"row":3}})")));
  ASSERT_TRUE(t.patch_tags(j(R"({"rack":{"row":null,"slot":1}})")));
  EXPECT_EQ(t.tags, j(R"({"site":"berlin","rack":{"slot":1}})"));
  ASSERT_TRUE(t.replace_tags(j(R"({"owner":"ops"})")));
  EXPECT_EQ(t.tags, j(R"({"owner":"ops"})"));
  EXPECT_EQ(t.version, 4);
  EXPECT_EQ(t.desired_version, 1);
  EXPECT_EQ(t.reported_version, 1);
  EXPECT_FALSE(t.device_view().contains("tags"));
}

// Every way a change can fail leaves the twin exactly as it was.
TEST(Twin, FailedChangesChangeNothing) {
  Twin t;
  ASSERT_TRUE(t.patch_reported(j(R"({"r":1})")));
  ASSERT_TRUE(t.patch_desired(j(R"({"d":1})")));
  ASSERT_TRUE(t.patch_tags(j(R"({"t":1})")));
  const Twin before = t;
  const json bad[] = {
      json::array(),
      j(R"({"ok":1,"a.b":2})"),
      j(R"({"ok":1,"arr":[null]})"),
      json{{"ok", 1}, {"s", std::string(4097, 'x')}},
      json{{"ok", 1}, {"s", "bad\xff"}},
      j(R"({"$metadata":{}})"),
  };
  for (const auto& patch : bad) {
    SCOPED_TRACE(patch.dump(-1, ' ', false, json::error_handler_t::replace));
    EXPECT_FALSE(t.patch_reported(patch));
    EXPECT_FALSE(t.patch_desired(patch));
    EXPECT_FALSE(t.replace_desired(patch));
    EXPECT_FALSE(t.patch_tags(patch));
    EXPECT_FALSE(t.replace_tags(patch));
    EXPECT_EQ(t, before);
  }
  const Status s = t.patch_reported(j(R"({"a":{"b":{"c":[1,null]}}})"));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "reported.a.b.c[1]: arrays may not contain null");
}

// n members "s0".."s<n-1>" holding strings of `len` bytes: n * (2 + len) bytes IoT Hub counting
// for n <= 10.
json filler(int n, std::size_t len, const char* prefix = "s") {
  json out = json::object();
  for (int i = 0; i < n; ++i) out[prefix + std::to_string(i)] = std::string(len, 'v');
  return out;
}

TEST(Twin, ReportedSectionLimitIsExact) {
  Twin t;
  ASSERT_TRUE(t.patch_reported(filler(8, 4000)));  // 8 * 4002 = 32016
  // Bring it to exactly 32768: "t" (1) + 751.
  ASSERT_TRUE(t.patch_reported(json{{"t", std::string(751, 'w')}}));
  EXPECT_EQ(section_size(t.reported), 32u * 1024u);
  const Twin before = t;
  const Status s = t.patch_reported(j(R"({"u":true})"));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::limit_exceeded);
  EXPECT_EQ(s.error().message,
            "reported: the section would be 32773 bytes (IoT Hub counting), more than the 32768 "
            "allowed");
  EXPECT_EQ(t, before);
  // Shrinking and growing in one patch is judged by the result.
  EXPECT_TRUE(t.patch_reported(j(R"({"t":null,"u":true})")));
}

TEST(Twin, DesiredSectionLimitIsExact) {
  Twin t;
  ASSERT_TRUE(t.patch_desired(filler(8, 4000)));
  ASSERT_TRUE(t.patch_desired(json{{"t", std::string(751, 'w')}}));
  const Twin before = t;
  auto r = t.patch_desired(j(R"({"u":1})"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_EQ(t, before);
  auto replaced = t.replace_desired(filler(9, 4000));  // 36018
  ASSERT_FALSE(replaced);
  EXPECT_EQ(replaced.error().code, errc::limit_exceeded);
  EXPECT_EQ(t, before);
}

TEST(Twin, TagsLimitIsEightKiB) {
  Twin t;
  ASSERT_TRUE(t.patch_tags(json{{"a", std::string(4095, 'x')}, {"b", std::string(4095, 'x')}}));
  EXPECT_EQ(section_size(t.tags), 8u * 1024u);
  const Twin before = t;
  const Status s = t.patch_tags(j(R"({"c":1})"));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::limit_exceeded);
  EXPECT_NE(s.error().message.find("tags: the section would be 8201 bytes"), std::string::npos);
  EXPECT_EQ(t, before);
  EXPECT_FALSE(t.replace_tags(filler(3, 4000)));
  EXPECT_EQ(t, before);
}

TEST(Twin, VersionOverflowIsRefused) {
  Twin t;
  t.reported_version = std::numeric_limits<std::int64_t>::max();
  const Twin before = t;
  const Status s = t.patch_reported(j(R"({"a":1})"));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::limit_exceeded);
  EXPECT_EQ(t, before);
  EXPECT_TRUE(t.patch_desired(j(R"({"a":1})")));
}

TEST(Twin, DesiredPatchSince) {
  Twin t;
  ASSERT_TRUE(t.patch_desired(j(R"({"a":1,"b":{"c":2}})")));
  const json client = t.device_view()["desired"];  // what a client got from GET
  EXPECT_EQ(t.desired_patch_since(client), std::nullopt);

  ASSERT_TRUE(t.patch_desired(j(R"({"a":null,"b":{"c":3},"d":[1]})")));
  ASSERT_TRUE(t.patch_desired(j(R"({"d":[1,2]})")));
  const auto patch = t.desired_patch_since(client);
  ASSERT_TRUE(patch.has_value());
  EXPECT_EQ(*patch, j(R"({"a":null,"b":{"c":3},"d":[1,2],"$version":4})"));

  // Applying it brings the client's copy up to date.
  json updated = client;
  updated.erase("$version");
  json body = *patch;
  body.erase("$version");
  merge_patch(updated, body);
  EXPECT_EQ(updated, t.desired);

  // A client with nothing (or a non-object) gets everything.
  EXPECT_EQ(t.desired_patch_since(json()), j(R"({"b":{"c":3},"d":[1,2],"$version":4})"));
  // $metadata in the client's copy is ignored.
  json with_metadata = t.device_view()["desired"];
  with_metadata["$metadata"] = {{"$lastUpdated", "2024-01-01T00:00:00.000Z"}};
  EXPECT_EQ(t.desired_patch_since(with_metadata), std::nullopt);
}

TEST(Twin, DeviceViewRoundTrip) {
  Twin t;
  ASSERT_TRUE(t.patch_desired(j(R"({"a":{"b":1}})")));
  ASSERT_TRUE(t.patch_reported(j(R"({"x":"y"})")));
  ASSERT_TRUE(t.patch_reported(j(R"({"x":"z"})")));
  const json view = t.device_view();
  EXPECT_EQ(view, j(R"({"desired":{"a":{"b":1},"$version":2},
                        "reported":{"x":"z","$version":3}})"));
  auto back = Twin::from_device_view(view);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->desired, t.desired);
  EXPECT_EQ(back->reported, t.reported);
  EXPECT_EQ(back->desired_version, 2);
  EXPECT_EQ(back->reported_version, 3);
}

TEST(Twin, FromDeviceViewDropsMetadataAndReadsServiceForm) {
  auto t = Twin::from_device_view(j(R"({
      "deviceId":"d","moduleId":"m","version":9,"tags":{"site":"x"},
      "properties":{
        "desired":{"a":1,"$version":4,"$metadata":{"$lastUpdated":"2024-01-01T00:00:00.000Z"}},
        "reported":{"$version":2}}})"));
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->desired, j(R"({"a":1})"));
  EXPECT_EQ(t->reported, json::object());
  EXPECT_EQ(t->tags, j(R"({"site":"x"})"));
  EXPECT_EQ(t->desired_version, 4);
  EXPECT_EQ(t->version, 9);
}

TEST(Twin, FromDeviceViewRejectsBadShapes) {
  for (const char* text : {
           R"([])",
           R"({})",
           R"({"desired":{"$version":1}})",
           R"({"desired":{},"reported":{"$version":1}})",
           R"({"desired":{"$version":"1"},"reported":{"$version":1}})",
           R"({"desired":{"$version":1.5},"reported":{"$version":1}})",
           R"({"desired":{"$version":-1},"reported":{"$version":1}})",
           R"({"desired":[],"reported":{"$version":1}})",
           R"({"desired":{"$version":1},"reported":{"$version":1},"version":"x"})",
       }) {
    auto r = Twin::from_device_view(j(text));
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, errc::invalid_argument) << text;
  }
}

TEST(Twin, StorageRoundTrip) {
  Twin t;
  ASSERT_TRUE(t.patch_desired(j(R"({"f":1.25,"i":-4503599627370496,"s":"h\u00e9\u6e29",
                                    "a":[{"x":1},[true]]})")));
  ASSERT_TRUE(t.patch_reported(j(R"({"u":4503599627370495,"e":{}})")));
  ASSERT_TRUE(t.patch_tags(j(R"({"t":"v"})")));
  const std::string text = t.serialize();
  auto back = Twin::parse(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, t);
  EXPECT_EQ(back->serialize(), text);
  EXPECT_EQ(Twin::parse(Twin().serialize())->serialize(), Twin().serialize());
}

TEST(Twin, ParseOfGarbageIsCorruption) {
  const std::string good = Twin().serialize();
  std::vector<std::string> inputs = {
      "",
      "not json",
      "\xff\xfe",
      "[]",
      "{}",
      good.substr(0, good.size() / 2),
      std::string(100000, '['),
      R"({"format":2,"version":1,"desired":{},"desiredVersion":1,"reported":{},)"
      R"("reportedVersion":1,"tags":{}})",
      R"({"format":1,"version":1,"desired":[],"desiredVersion":1,"reported":{},)"
      R"("reportedVersion":1,"tags":{}})",
      R"({"format":1,"version":-1,"desired":{},"desiredVersion":1,"reported":{},)"
      R"("reportedVersion":1,"tags":{}})",
      R"({"format":1,"version":1,"desired":{},"desiredVersion":1.5,"reported":{},)"
      R"("reportedVersion":1,"tags":{}})",
      R"({"format":1,"version":1,"desired":{},"desiredVersion":1,"reported":{},"tags":{}})",
      R"({"format":1,"version":1,"desired":{},"desiredVersion":1,"reported":{},)"
      R"("reportedVersion":18446744073709551615,"tags":{}})",
  };
  for (const auto& text : inputs) {
    auto r = Twin::parse(text);
    ASSERT_FALSE(r) << text.substr(0, 80);
    EXPECT_EQ(r.error().code, errc::corruption) << text.substr(0, 80);
    EXPECT_EQ(r.error().message.rfind("stored twin: ", 0), 0u) << r.error().message;
  }
}

}  // namespace
}  // namespace cairn::twin
