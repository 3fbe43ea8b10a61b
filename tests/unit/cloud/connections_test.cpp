#include "cloud/connections.hpp"

#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"

namespace cairn::cloud {
namespace {

using testing::CloudTest;

class ConnectionTrackerTest : public CloudTest {};

TEST_F(ConnectionTrackerTest, RecordsConnectAndDisconnect) {
  make_device("d");
  make_module("d", "m");
  ConnectionTracker tracker(*store_, [this] { return now_ms_; });
  tracker.connected(hub::Principal{"d", "m"});
  auto m = **store_->find_module("d", "m");
  EXPECT_TRUE(m.connected);
  EXPECT_EQ(m.connection_state_updated_ms, now_ms_);
  EXPECT_FALSE((*store_->find_device("d"))->connected);  // the module, not the device

  now_ms_ += 1000;
  tracker.connected(hub::Principal{"d", ""});
  now_ms_ += 1000;
  tracker.disconnected(hub::Principal{"d", ""});
  auto d = **store_->find_device("d");
  EXPECT_FALSE(d.connected);
  EXPECT_EQ(d.connection_state_updated_ms, now_ms_);
  EXPECT_EQ(d.last_activity_ms, now_ms_);
  EXPECT_EQ(tracker.record_failures(), 0u);

  // An identity deleted while connected: counted, nothing else happens.
  ASSERT_TRUE(registry_->delete_module("d", "m", "*").ok());
  tracker.disconnected(hub::Principal{"d", "m"});
  EXPECT_EQ(tracker.record_failures(), 1u);
}

TEST_F(ConnectionTrackerTest, HandsRecordsToTheRecorderInsteadOfWriting) {
  make_device("d");
  std::vector<std::tuple<std::string, std::string, bool, std::int64_t>> records;
  ConnectionTracker tracker(
      [&](const TwinKey& who, bool connected, std::int64_t at_ms) {
        records.emplace_back(who.device_id, who.module_id, connected, at_ms);
      },
      [this] { return now_ms_; });
  tracker.connected(hub::Principal{"d", "m"});
  tracker.disconnected(hub::Principal{"d", ""});
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], std::make_tuple(std::string("d"), std::string("m"), true, now_ms_));
  EXPECT_EQ(records[1], std::make_tuple(std::string("d"), std::string(""), false, now_ms_));
  EXPECT_FALSE((*store_->find_device("d"))->connected);  // not written by the tracker itself
}

}  // namespace
}  // namespace cairn::cloud
