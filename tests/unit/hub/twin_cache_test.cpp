// TwinCache on a real store, without a cloud: what a standalone device does with twins, and
// that everything survives a restart.
#include "hub/twin_cache.hpp"

#include <gtest/gtest.h>

#include "../store/store_test_util.hpp"

namespace cairn::hub {
namespace {

using nlohmann::json;

class TwinCacheTest : public ::testing::Test {
 protected:
  store::testing::TempDir dir;
  asio::io_context io;
  // Keeps run_for() waiting for the store's callbacks instead of returning at once.
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::unique_ptr<store::MessageStore> store;
  std::shared_ptr<TwinCache> cache;
  std::vector<std::pair<std::string, json>> notified;
  Principal module{"edge1", "m1"};

  void SetUp() override { open(); }

  void open() {
    cache.reset();
    store.reset();
    store::Options o;
    o.path = dir.file("hub.db");
    auto s = store::MessageStore::open(o);
    ASSERT_TRUE(s) << s.error().message;
    store = std::move(*s);
    cache = std::make_shared<TwinCache>(io, *store, [this](const std::string& id, const json& p) {
      notified.emplace_back(id, p);
      return true;
    });
  }

  // Runs the io_context until `reply` has been called.
  std::pair<int, std::string> run(std::function<void(TwinProvider::Reply)> op) {
    std::optional<std::pair<int, std::string>> out;
    op([&](int status, std::string body) { out.emplace(status, std::move(body)); });
    for (int i = 0; i < 1000 && !out; ++i) {
      io.restart();
      io.run_for(std::chrono::milliseconds(5));
    }
    EXPECT_TRUE(out) << "no reply";
    return out.value_or(std::make_pair(0, std::string()));
  }
  json get() {
    auto [status, body] = run([&](auto reply) { cache->get_twin(module, reply); });
    EXPECT_EQ(status, 200);
    return json::parse(body);
  }
  int patch(const std::string& body) {
    return run([&](auto reply) { cache->patch_reported(module, body, reply); }).first;
  }
};

TEST_F(TwinCacheTest, NewTwinHasBothSectionsAtVersionOne) {
  EXPECT_EQ(get(), (json{{"desired", {{"$version", 1}}}, {"reported", {{"$version", 1}}}}));
}

TEST_F(TwinCacheTest, ReportedPatchesMergeQueueAndSurviveARestart) {
  EXPECT_EQ(patch(R"({"temp": 21, "fw": {"v": "1.0", "by": "a"}})"), 204);
  EXPECT_EQ(patch(R"({"fw": {"v": "1.1"}, "temp": null})"), 204);
  const json reported{{"$version", 3}, {"fw", {{"v", "1.1"}, {"by", "a"}}}};
  EXPECT_EQ(get()["reported"], reported);
  ASSERT_TRUE(store->flush());
  open();  // a restart: the twin and the waiting changes are still there
  EXPECT_EQ(get()["reported"], reported);
  // Both patches wait as one, which still deletes what the second deleted.
  auto waiting = cache->pending_reported("edge1/m1");
  ASSERT_TRUE(waiting);
  EXPECT_EQ(*waiting, (json{{"temp", nullptr}, {"fw", {{"v", "1.1"}, {"by", "a"}}}}));
  // That one is being sent: a patch arriving meanwhile waits behind it, not inside it.
  EXPECT_EQ(patch(R"({"temp": 22})"), 204);
  EXPECT_EQ(patch(R"({"fw": {"by": null}})"), 204);
  EXPECT_EQ(*cache->pending_reported("edge1/m1"), *waiting);
  cache->reported_sent("edge1/m1");
  auto second = cache->pending_reported("edge1/m1");
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, (json{{"temp", 22}, {"fw", {{"by", nullptr}}}}));
  cache->reported_sent("edge1/m1");
  EXPECT_FALSE(cache->pending_reported("edge1/m1"));
  EXPECT_EQ(cache->clients_with_pending(), std::vector<std::string>{});
}

TEST_F(TwinCacheTest, WaitingChangesStayWithinOnePatchOrThePatchIsRefused) {
  // Names set and deleted again leave their deletions waiting for the cloud; past
  // twin::kMaxPatchBytes of them the client's patch is refused and nothing changes.
  const std::string name(1000, 'n');
  std::optional<std::string> refused;
  bool refused_deletion = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    const std::string key = name + std::to_string(i);
    if (patch(json{{key, i}}.dump()) == 400) {
      refused = key;
    } else if (patch(json{{key, nullptr}}.dump()) == 400) {
      refused = key;
      refused_deletion = true;
    }
  }
  ASSERT_TRUE(refused) << "the waiting changes grew without a bound";
  EXPECT_EQ(cache->counters().reported_over_limit, 1u);
  // The refused patch changed nothing: a refused deletion leaves its name reported, a
  // refused addition leaves it out.
  EXPECT_EQ(get()["reported"].contains(*refused), refused_deletion);
  auto waiting = cache->pending_reported("edge1/m1");
  ASSERT_TRUE(waiting);
  EXPECT_LE(waiting->dump().size(), twin::kMaxPatchBytes);
  cache->reported_sent("edge1/m1");
  EXPECT_FALSE(cache->pending_reported("edge1/m1"));
}

TEST_F(TwinCacheTest, BadPatchesAreRefusedWith400AndChangeNothing) {
  ASSERT_EQ(patch(R"({"keep": 1})"), 204);
  const json before = get();
  std::string deep = R"({"k":1})";
  for (int i = 0; i < 11; ++i) deep = R"({"a":)" + deep + "}";
  for (const std::string& bad :
       {std::string("not json"), std::string("[1,2]"), deep,
        R"({"s":")" + std::string(4097, 'x') + R"("})", std::string(R"({"a.b": 1})"),
        std::string(R"({"n": 4503599627370496})")}) {
    auto [status, body] = run([&](auto reply) { cache->patch_reported(module, bad, reply); });
    EXPECT_EQ(status, 400) << bad.substr(0, 60);
    EXPECT_TRUE(json::parse(body).contains("message")) << body;
  }
  EXPECT_EQ(get(), before);
  auto pending = cache->pending_reported("edge1/m1");
  ASSERT_TRUE(pending);
  cache->reported_sent("edge1/m1");
  EXPECT_FALSE(cache->pending_reported("edge1/m1")) << "a refused patch was queued";
}

TEST_F(TwinCacheTest, LocalDesiredPatchIsForwardedWithItsVersion) {
  std::optional<Result<json>> result;
  cache->patch_desired_local("edge1/m1", json{{"rate", 5}},
                             [&](Result<json> r) { result = std::move(r); });
  for (int i = 0; i < 1000 && !result; ++i) {
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(result && *result);
  EXPECT_EQ(**result, (json{{"rate", 5}, {"$version", 2}}));
  ASSERT_EQ(notified.size(), 1u);
  EXPECT_EQ(notified[0].first, "edge1/m1");
  EXPECT_EQ(notified[0].second, (json{{"rate", 5}, {"$version", 2}}));
  EXPECT_EQ(get()["desired"], (json{{"$version", 2}, {"rate", 5}}));
}

TEST_F(TwinCacheTest, CloudDesiredPatchesApplyInOrderAndStaleOnesAreIgnored) {
  cache->cloud_desired("edge1/m1", json{{"$version", 2}, {"a", 1}});
  cache->cloud_desired("edge1/m1", json{{"$version", 2}, {"a", 99}});  // a repeat
  cache->cloud_desired("edge1/m1", json{{"$version", 3}, {"a", nullptr}, {"b", 2}});
  EXPECT_EQ(get()["desired"], (json{{"$version", 3}, {"b", 2}}));
  EXPECT_EQ(notified.size(), 2u);
}

}  // namespace
}  // namespace cairn::hub
