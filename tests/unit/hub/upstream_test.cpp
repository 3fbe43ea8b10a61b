// The upstream link's dedupe keys: the store id they start with, and what makes two keys equal.
#include "hub/upstream.hpp"

#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "../store/store_test_util.hpp"
#include "mqtt/iothub_topics.hpp"

namespace cairn::hub {
namespace {

using store::testing::open_or_die;
using store::testing::options_for;
using store::testing::TempDir;

Message enqueued_at(std::string time) {
  Message m;
  m.body = "x";
  m.system.set("enqueuedTime", std::move(time));
  return m;
}

TEST(UpstreamStoreId, IsKeptByTheStoreAndNewForANewStore) {
  TempDir dir;
  std::string first;
  {
    auto store = open_or_die(options_for(dir));
    ASSERT_TRUE(store);
    auto id = Upstream::load_store_id(*store);
    ASSERT_TRUE(id.ok()) << id.error().to_string();
    first = *id;
    EXPECT_EQ(first.size(), 16u);
    EXPECT_EQ(first.find_first_not_of("0123456789abcdef"), std::string::npos) << first;
    auto again = Upstream::load_store_id(*store);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, first);
  }
  {
    auto reopened = open_or_die(options_for(dir));
    ASSERT_TRUE(reopened);
    auto id = Upstream::load_store_id(*reopened);
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(*id, first);  // a restart keeps it
  }
  TempDir other;
  auto fresh = open_or_die(options_for(other));
  ASSERT_TRUE(fresh);
  auto id = Upstream::load_store_id(*fresh);
  ASSERT_TRUE(id.ok());
  EXPECT_NE(*id, first);  // a reinstall (a new store) does not
}

TEST(UpstreamDedupeKey, SameStoredMessageSameKeyAnyOtherDiffers) {
  constexpr auto kOwn = Upstream::QueueKind::per_identity;
  const Message m = enqueued_at("2026-12-03T07:26:08.123Z");
  const std::string key = Upstream::dedupe_key("00112233aabbccdd", kOwn, QueuePosition{0, 42}, m);
  EXPECT_EQ(key, "00112233aabbccdd-i.0.42.20261203072608123");
  EXPECT_EQ(Upstream::dedupe_key("00112233aabbccdd", kOwn, QueuePosition{0, 42}, m), key);
  EXPECT_NE(Upstream::dedupe_key("00112233aabbccdd", kOwn, QueuePosition{0, 43}, m), key);
  EXPECT_NE(Upstream::dedupe_key("00112233aabbccdd", kOwn, QueuePosition{1, 42}, m), key);
  EXPECT_NE(Upstream::dedupe_key("99112233aabbccdd", kOwn, QueuePosition{0, 42}, m), key);
  // A sequence number handed out again (a power cut without fsync) to a later message.
  EXPECT_NE(Upstream::dedupe_key("00112233aabbccdd", kOwn, QueuePosition{0, 42},
                                 enqueued_at("2026-12-03T07:26:08.124Z")),
            key);
  EXPECT_EQ(Upstream::dedupe_key("00112233aabbccdd", kOwn, QueuePosition{-2, 1}, Message{}),
            "00112233aabbccdd-i.-2.1");
}

TEST(UpstreamDedupeKey, TheSharedQueueKeepsTheKeysSentBeforePerIdentityQueues) {
  const Message m = enqueued_at("2026-12-03T07:26:08.123Z");
  // The format of every key sent from the one $upstream queue, before per-identity queues:
  // a message left there by an upgrade goes up with the key it had.
  EXPECT_EQ(Upstream::dedupe_key("00112233aabbccdd", Upstream::QueueKind::shared,
                                 QueuePosition{0, 42}, m),
            "00112233aabbccdd.0.42.20261203072608123");
  // The same position in a per-identity queue (whose numbers start again at 1) is another key.
  EXPECT_NE(Upstream::dedupe_key("00112233aabbccdd", Upstream::QueueKind::per_identity,
                                 QueuePosition{0, 42}, m),
            Upstream::dedupe_key("00112233aabbccdd", Upstream::QueueKind::shared,
                                 QueuePosition{0, 42}, m));
}

TEST(UpstreamDedupeKey, NeverLongerThanTheCloudTakes) {
  for (auto kind : {Upstream::QueueKind::per_identity, Upstream::QueueKind::shared}) {
    const std::string longest = Upstream::dedupe_key(
        "00112233aabbccdd", kind,
        QueuePosition{std::numeric_limits<std::int32_t>::min(),
                      std::numeric_limits<std::uint64_t>::max()},
        enqueued_at("+275760-09-13T00:00:00.000Z and then some 0123456789 digits"));
    EXPECT_LE(longest.size(), iothub::kMaxDedupeKeyBytes) << longest;
  }
}

}  // namespace
}  // namespace cairn::hub
