#include "cloud/telemetry_sink.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"
#include "core/crypto.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;
using testing::CloudTest;
using testing::open_store;

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

using namespace std::chrono_literals;

class TelemetrySinkTest : public CloudTest {
 protected:
  // The sink writes through a connection of its own, as in cairn-cloud; the test's store_
  // reads what it wrote (and locks or damages the file when a test needs it).
  std::shared_ptr<TelemetrySink> open_sink(TelemetrySinkOptions options) {
    auto sink = TelemetrySink::open(io_, open_store(dir_.file("data/cloud.db")), std::move(options),
                                    [this] { return now_ms_; });
    EXPECT_TRUE(sink.ok()) << sink.error().to_string();
    return sink.ok() ? *sink : nullptr;
  }
  std::shared_ptr<TelemetrySink> open_sink(const std::string& file = "") {
    TelemetrySinkOptions options;
    options.jsonl_path = file;
    return open_sink(std::move(options));
  }
  // Runs the io_context (where acknowledgements arrive) until `done` or 20 s.
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_for(5ms);
    }
    return done();
  }
  // Delivers and waits for the acknowledgement; returns whether it came.
  bool deliver(TelemetrySink& sink, const Message& m, bool dup = false) {
    bool acked = false;
    EXPECT_TRUE(sink.deliver("", m, {}, dup, [&] { acked = true; }));
    EXPECT_FALSE(acked);  // never inside deliver: the endpoint's pump must not re-enter
    return run_until([&] { return acked; });
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
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

// A stop between a commit and the write of its lines (kill -9) leaves the file behind the store:
// the next start appends what the store holds after the file's last line and cuts a torn line.
TEST_F(TelemetrySinkTest, TheFileCatchesUpWithTheStoreAtStart) {
  make_device("d");
  const std::string path = dir_.file("out/telemetry.jsonl");
  auto sink = open_sink(path);
  ASSERT_NE(sink, nullptr);
  for (const char* id : {"id-1", "id-2", "id-3"}) {
    EXPECT_TRUE(deliver(*sink, telemetry("d", "", id, "x", "text/plain")));
  }
  sink.reset();
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  {
    // The file as a kill left it: the first line, then half of a second.
    std::ofstream out(path, std::ios::trunc);
    out << lines[0].dump() << "\n"
        << R"({"seq":)";
  }
  sink = open_sink(path);
  ASSERT_NE(sink, nullptr);
  ASSERT_TRUE(run_until([&] {
    std::ifstream in(path);
    return std::count(std::istreambuf_iterator<char>(in), {}, '\n') >= 3;
  }));
  EXPECT_TRUE(deliver(*sink, telemetry("d", "", "id-4", "x", "text/plain")));
  auto after = read_lines(path);
  ASSERT_EQ(after.size(), 4u);
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i]["messageId"], "id-" + std::to_string(i + 1));
  }
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

TEST_F(TelemetrySinkTest, ALockedStoreIsRetriedUntilTheMessageIsStored) {
  make_device("d");
  auto sink = open_sink();
  ASSERT_NE(sink, nullptr);
  // Another writer holds the database past the busy timeout: a transient failure. The sink
  // used to drop the batch unacknowledged and never try again.
  ASSERT_TRUE(store_->exec_for_test("BEGIN IMMEDIATE").ok());
  bool acked = false;
  EXPECT_TRUE(sink->deliver("", telemetry("d", "", "id", "x"), {}, false, [&] { acked = true; }));
  ASSERT_TRUE(run_until([&] { return sink->counters().store_failures >= 1; }));
  EXPECT_FALSE(acked);  // nothing is acknowledged before it is stored
  auto c = sink->counters();
  EXPECT_TRUE(c.failing);
  EXPECT_NE(c.last_failure.find("locked"), std::string::npos) << c.last_failure;
  EXPECT_EQ(c.waiting, 1u);
  ASSERT_TRUE(store_->exec_for_test("COMMIT").ok());
  ASSERT_TRUE(run_until([&] { return acked; }));
  c = sink->counters();
  EXPECT_EQ(c.stored, 1u);
  EXPECT_FALSE(c.failing);
  EXPECT_EQ(c.waiting, 0u);
  EXPECT_EQ(store_->list_telemetry(TelemetryQuery{})->size(), 1u);
}

TEST_F(TelemetrySinkTest, AMessageTheStoreRefusesIsDeadLetteredAndTheRestFlows) {
  make_device("d");
  // The store refuses one message for good (a constraint), and only that one.
  ASSERT_TRUE(store_
                  ->exec_for_test("CREATE TRIGGER refuse_poison BEFORE INSERT ON telemetry "
                                  "WHEN NEW.message_id = 'poison' BEGIN "
                                  "SELECT RAISE(ABORT, 'poison refused'); END")
                  .ok());
  std::vector<std::pair<Message, std::string>> dead;
  TelemetrySinkOptions options;
  options.first_retry = 1ms;
  options.max_retry = 5ms;
  options.max_store_attempts = 3;
  options.dead_letter = [&](const Message& m, const std::string& reason) {
    dead.emplace_back(m, reason);
  };
  auto sink = open_sink(std::move(options));
  ASSERT_NE(sink, nullptr);
  bool poison_acked = false;
  const Message poison = telemetry("d", "", "poison", "p");
  EXPECT_TRUE(sink->deliver("", poison, {}, false, [&] { poison_acked = true; }));
  // Failing on its own, it may as well be the store: retried, not blamed.
  ASSERT_TRUE(run_until([&] { return sink->counters().store_failures >= 3; }));
  EXPECT_FALSE(poison_acked);
  EXPECT_TRUE(dead.empty());
  // Each message after it is stored (the queue behind it flows) while it fails again.
  int acked = 0;
  for (const char* id : {"a", "b"}) {
    EXPECT_TRUE(sink->deliver("", telemetry("d", "", id, "x"), {}, false, [&] { ++acked; }));
    const int want = acked + 1;
    ASSERT_TRUE(run_until([&] { return acked == want; })) << id;
  }
  EXPECT_FALSE(poison_acked);
  EXPECT_TRUE(dead.empty());
  // The third time it fails while others are stored, it is set aside and acknowledged.
  EXPECT_TRUE(sink->deliver("", telemetry("d", "", "c", "x"), {}, false, [&] { ++acked; }));
  ASSERT_TRUE(run_until([&] { return poison_acked && acked == 3; }));
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].first, poison);
  EXPECT_NE(dead[0].second.find("poison refused"), std::string::npos) << dead[0].second;
  const auto c = sink->counters();
  EXPECT_EQ(c.dead_lettered, 1u);
  EXPECT_EQ(c.stored, 3u);
  EXPECT_EQ(c.waiting, 0u);
  EXPECT_EQ(store_->list_telemetry(TelemetryQuery{})->size(), 3u);
}

TEST_F(TelemetrySinkTest, ABurstIsStoredTogetherWithDuplicatesInsideItDropped) {
  make_device("d");
  const std::string path = dir_.file("telemetry.jsonl");
  auto sink = open_sink(path);
  ASSERT_NE(sink, nullptr);
  int acked = 0;
  for (const char* id : {"a", "b", "a", "c"}) {
    EXPECT_TRUE(sink->deliver("", telemetry("d", "", id, "x"), {}, false, [&] { ++acked; }));
  }
  EXPECT_EQ(acked, 0);  // acknowledgements run on the io_context, never inside deliver
  ASSERT_TRUE(run_until([&] { return acked == 4; }));
  EXPECT_EQ(sink->counters().stored, 3u);
  EXPECT_EQ(sink->counters().duplicates, 1u);
  EXPECT_EQ(store_->counts()->duplicates, 1);
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["messageId"], "a");
  EXPECT_EQ(lines[1]["messageId"], "b");
  EXPECT_EQ(lines[2]["messageId"], "c");
}

TEST_F(TelemetrySinkTest, WhenEveryMessageFailsAlikeNoneIsBlamed) {
  make_device("d");
  TelemetrySinkOptions options;
  options.first_retry = 1ms;
  options.max_retry = 2ms;
  options.max_store_attempts = 1;
  int dead = 0;
  options.dead_letter = [&](const Message&, const std::string&) { ++dead; };
  auto sink = open_sink(std::move(options));
  ASSERT_NE(sink, nullptr);
  // The store is broken, not the messages: they wait (unacknowledged), none is dead-lettered.
  ASSERT_TRUE(store_->exec_for_test("DROP TABLE telemetry").ok());
  int acked = 0;
  for (const char* id : {"a", "b"}) {
    EXPECT_TRUE(sink->deliver("", telemetry("d", "", id, "x"), {}, false, [&] { ++acked; }));
  }
  ASSERT_TRUE(run_until([&] { return sink->counters().store_failures >= 5; }));
  EXPECT_EQ(acked, 0);
  EXPECT_EQ(dead, 0);
  EXPECT_EQ(sink->counters().dead_lettered, 0u);
  EXPECT_EQ(sink->counters().waiting, 2u);
}

TEST_F(TelemetrySinkTest, ConnectionStateIsWrittenOnTheWriterThread) {
  make_device("d");
  auto sink = open_sink();
  ASSERT_NE(sink, nullptr);
  // A locked database holds the writer up, not the caller: record_connection returns at once.
  ASSERT_TRUE(store_->exec_for_test("BEGIN IMMEDIATE").ok());
  const auto before = std::chrono::steady_clock::now();
  sink->record_connection(TwinKey{"d", ""}, true, now_ms_);
  sink->record_connection(TwinKey{"nobody", ""}, true, now_ms_);  // unknown: counted, logged
  EXPECT_LT(std::chrono::steady_clock::now() - before, 1s);
  ASSERT_TRUE(store_->exec_for_test("COMMIT").ok());
  ASSERT_TRUE(run_until([&] { return sink->counters().connection_record_failures >= 1; }));
  auto d = store_->find_device("d");
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_TRUE((*d)->connected);
  EXPECT_EQ((*d)->connection_state_updated_ms, now_ms_);
  EXPECT_EQ(sink->counters().connection_record_failures, 1u);
}

TEST_F(TelemetrySinkTest, AnUnwritableFileIsAnErrorAtOpen) {
  TelemetrySinkOptions options;
  options.jsonl_path = "/proc/no/such/file";
  auto sink = TelemetrySink::open(io_, open_store(dir_.file("data/cloud.db")), options);
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
