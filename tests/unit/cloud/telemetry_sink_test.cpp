#include "cloud/telemetry_sink.hpp"

#include <fstream>

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"
#include "core/crypto.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;
using testing::CloudTest;

Message telemetry(const std::string& device, const std::string& module, const std::string& id,
                  std::string body, const std::string& content_type = "") {
  Message m;
  m.body = std::move(body);
  m.system.set("connectionDeviceId", device);
  if (!module.empty()) m.system.set("connectionModuleId", module);
  if (!id.empty()) m.system.set("messageId", id);
  if (!content_type.empty()) m.system.set("contentType", content_type);
  m.system.set("enqueuedTime", "2027-01-15T08:00:00.123Z");
  m.app.set("alert", "true");
  return m;
}

std::vector<json> read_lines(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

class TelemetrySinkTest : public CloudTest {
 protected:
  std::shared_ptr<TelemetrySink> open_sink(const std::string& file = "") {
    auto sink =
        TelemetrySink::open(io_, *store_, TelemetrySinkOptions{file}, [this] { return now_ms_; });
    EXPECT_TRUE(sink.ok()) << sink.error().to_string();
    return sink.ok() ? *sink : nullptr;
  }
  // Delivers and runs the posted acknowledgement; returns whether it was acknowledged.
  bool deliver(TelemetrySink& sink, const Message& m, bool dup = false) {
    bool acked = false;
    EXPECT_TRUE(sink.deliver("", m, dup, [&] { acked = true; }));
    EXPECT_FALSE(acked);  // never inside deliver: the endpoint's pump must not re-enter
    io_.restart();
    io_.poll();
    return acked;
  }

  asio::io_context io_;
};

TEST_F(TelemetrySinkTest, StoresAcknowledgesAndDropsResentMessages) {
  make_device("d");
  const std::string path = dir_.file("out/telemetry.jsonl");
  auto sink = open_sink(path);
  ASSERT_NE(sink, nullptr);
  EXPECT_TRUE(deliver(*sink, telemetry("d", "", "id-1", R"({"t":1})", "application/json")));
  EXPECT_TRUE(deliver(*sink, telemetry("d", "", "id-1", R"({"t":1})", "application/json"), true));
  EXPECT_TRUE(deliver(*sink, telemetry("d", "", "id-2", "plain", "text/plain; charset=utf-8")));
  EXPECT_EQ(sink->counters().stored, 2u);
  EXPECT_EQ(sink->counters().duplicates, 1u);
  auto stored = store_->list_telemetry(TelemetryQuery{});
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 2u);
  EXPECT_EQ((*stored)[0].enqueued_time, "2027-01-15T08:00:00.123Z");
  EXPECT_EQ((*stored)[0].stored_ms, now_ms_);
  EXPECT_EQ((*store_->find_device("d"))->last_activity_ms, now_ms_);

  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);  // the duplicate is not written again
  EXPECT_EQ(lines[0]["deviceId"], "d");
  EXPECT_EQ(lines[0]["moduleId"], "");
  EXPECT_EQ(lines[0]["messageId"], "id-1");
  EXPECT_EQ(lines[0]["enqueuedTime"], "2027-01-15T08:00:00.123Z");
  EXPECT_EQ(lines[0]["body"], R"({"t":1})");
  EXPECT_FALSE(lines[0].contains("bodyEncoding"));
  EXPECT_EQ(lines[0]["properties"]["alert"], "true");
  EXPECT_EQ(lines[0]["systemProperties"]["contentType"], "application/json");
  EXPECT_EQ(lines[1]["body"], "plain");
  EXPECT_GT(lines[1]["seq"].get<std::int64_t>(), lines[0]["seq"].get<std::int64_t>());
}

TEST_F(TelemetrySinkTest, BinaryOrUntypedBodiesAreBase64) {
  make_device("d");
  make_module("d", "m");
  const std::string path = dir_.file("telemetry.jsonl");
  auto sink = open_sink(path);
  ASSERT_NE(sink, nullptr);
  const std::string binary("\x00\x01\xfe\xff", 4);
  EXPECT_TRUE(deliver(*sink, telemetry("d", "m", "b1", binary, "application/octet-stream")));
  EXPECT_TRUE(deliver(*sink, telemetry("d", "m", "b2", R"({"t":1})")));  // no content type
  // Claims JSON but is not UTF-8.
  EXPECT_TRUE(deliver(*sink, telemetry("d", "m", "b3", "\xc3\x28", "application/json")));
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["moduleId"], "m");
  EXPECT_EQ(lines[0]["bodyEncoding"], "base64");
  EXPECT_EQ(*crypto::base64_decode(lines[0]["body"].get<std::string>()), binary);
  EXPECT_EQ(lines[1]["bodyEncoding"], "base64");
  EXPECT_EQ(lines[2]["bodyEncoding"], "base64");
  EXPECT_EQ(*crypto::base64_decode(lines[2]["body"].get<std::string>()), "\xc3\x28");
}

TEST_F(TelemetrySinkTest, MessagesWithoutIdAreAllKeptAndTimeDefaultsToNow) {
  make_device("d");
  auto sink = open_sink();
  ASSERT_NE(sink, nullptr);
  Message m = telemetry("d", "", "", "x");
  m.system.erase("enqueuedTime");
  EXPECT_TRUE(deliver(*sink, m));
  EXPECT_TRUE(deliver(*sink, m));
  EXPECT_EQ(sink->counters().stored, 2u);
  auto stored = store_->list_telemetry(TelemetryQuery{});
  ASSERT_EQ(stored->size(), 2u);
  EXPECT_EQ((*stored)[0].enqueued_time, "2027-01-15T08:00:00.000Z");
}

TEST_F(TelemetrySinkTest, AStoreFailureLeavesTheMessageUnacknowledged) {
  make_device("d");
  auto sink = open_sink();
  ASSERT_NE(sink, nullptr);
  ASSERT_TRUE(store_->exec_for_test("DROP TABLE telemetry").ok());
  EXPECT_FALSE(deliver(*sink, telemetry("d", "", "id", "x")));
  EXPECT_EQ(sink->counters().store_failures, 1u);
  EXPECT_EQ(sink->counters().stored, 0u);
}

TEST_F(TelemetrySinkTest, ABurstIsStoredTogetherWithDuplicatesInsideItDropped) {
  make_device("d");
  const std::string path = dir_.file("telemetry.jsonl");
  auto sink = open_sink(path);
  ASSERT_NE(sink, nullptr);
  int acked = 0;
  for (const char* id : {"a", "b", "a", "c"}) {
    EXPECT_TRUE(sink->deliver("", telemetry("d", "", id, "x"), false, [&] { ++acked; }));
  }
  EXPECT_EQ(acked, 0);  // nothing is stored or acknowledged before the io_context runs
  EXPECT_TRUE(store_->list_telemetry(TelemetryQuery{})->empty());
  io_.poll();
  EXPECT_EQ(acked, 4);
  EXPECT_EQ(sink->counters().stored, 3u);
  EXPECT_EQ(sink->counters().duplicates, 1u);
  EXPECT_EQ(store_->counts()->duplicates, 1);
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["messageId"], "a");
  EXPECT_EQ(lines[1]["messageId"], "b");
  EXPECT_EQ(lines[2]["messageId"], "c");
}

TEST_F(TelemetrySinkTest, AStoreFailureLeavesTheWholeBurstUnacknowledged) {
  make_device("d");
  auto sink = open_sink();
  ASSERT_NE(sink, nullptr);
  ASSERT_TRUE(store_->exec_for_test("DROP TABLE telemetry").ok());
  int acked = 0;
  for (const char* id : {"a", "b"}) {
    EXPECT_TRUE(sink->deliver("", telemetry("d", "", id, "x"), false, [&] { ++acked; }));
  }
  io_.poll();
  EXPECT_EQ(acked, 0);
  EXPECT_EQ(sink->counters().store_failures, 2u);
}

TEST_F(TelemetrySinkTest, AnUnwritableFileIsAnErrorAtOpen) {
  auto sink = TelemetrySink::open(io_, *store_, TelemetrySinkOptions{"/proc/no/such/file"});
  ASSERT_FALSE(sink.ok());
  EXPECT_EQ(sink.error().code, errc::io_error);
}

TEST(TelemetryJson, UsesTheDocumentedShape) {
  TelemetryRecord r;
  r.seq = 7;
  r.device_id = "d";
  r.module_id = "m";
  r.message_id = "x";
  r.enqueued_time = "t";
  r.system.set("contentType", "application/json");
  r.body = "[1]";
  json j = telemetry_to_json(r);
  EXPECT_EQ(j, json::parse(R"({"seq":7,"deviceId":"d","moduleId":"m","messageId":"x",
    "enqueuedTime":"t","properties":{},"systemProperties":{"contentType":"application/json"},
    "body":"[1]"})"));
}

}  // namespace
}  // namespace cairn::cloud
