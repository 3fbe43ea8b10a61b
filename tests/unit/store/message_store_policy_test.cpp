// The store's failure policy (docs/failure_policy.md): a transient failure (here the database
// locked by another process, SQLITE_BUSY) refuses writes with a reason and the store recovers
// by itself once the cause goes; expiry works in bounded batches.
#include <string>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "core/clock.hpp"
#include "store/failure.hpp"
#include "store/message_store.hpp"
#include "store_test_util.hpp"

namespace cairn::store {
namespace {

using testing::append_one;
using testing::append_sync;
using testing::open_or_die;
using testing::options_for;
using testing::queue;
using testing::target;
using testing::TempDir;

// One classification for every store (the message store and cairn-cloud's telemetry writer).
TEST(MessageStorePolicy, FailuresAreTransientFatalOrTheRequestsOwn) {
  EXPECT_EQ(classify_failure(make_error(errc::unavailable, "database is locked")),
            Failure::transient);
  EXPECT_EQ(classify_failure(make_error(errc::io_error, "disk I/O error")), Failure::fatal);
  EXPECT_EQ(classify_failure(make_error(errc::corruption, "malformed")), Failure::fatal);
  EXPECT_EQ(classify_failure(make_error(errc::internal, "constraint failed")), Failure::other);
  EXPECT_EQ(classify_failure(make_error(errc::limit_exceeded, "too big")), Failure::other);
}

// The tests below hold a lock past the store's busy timeout, which they shorten to fail fast.
constexpr int kShortBusyTimeoutMs = 200;

TEST(MessageStorePolicy, LockedDatabaseRefusesWithAReasonAndRecoversByItself) {
  TempDir dir;
  Options o = options_for(dir);
  o.busy_timeout_ms = kShortBusyTimeoutMs;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(append_one(*store, "before", target("q")), 1u);

  // Another process takes the write lock and keeps it past the store's busy timeout.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(o.path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  auto refused = append_sync(*store, "refused", {target("q")});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::unavailable) << refused.error().to_string();
  EXPECT_NE(refused.error().message.find("retry later"), std::string::npos)
      << refused.error().message;
  Stats st = store->stats();
  EXPECT_TRUE(st.healthy);  // transient: not the sticky failure
  EXPECT_TRUE(st.refusing);
  EXPECT_NE(st.refusal_reason.find("locked"), std::string::npos) << st.refusal_reason;
  EXPECT_EQ(st.refused_writes_total, 1u);

  // The lock goes: the next write succeeds without reopening, and nothing was half-written.
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  // Sequence number 2 went to the refused append at submission and is not given again.
  EXPECT_EQ(append_one(*store, "after", target("q")), 3u);
  st = store->stats();
  EXPECT_FALSE(st.refusing);
  EXPECT_TRUE(st.refusal_reason.empty());
  EXPECT_EQ(testing::messages_of(*store, queue("q")),
            (std::vector<std::string>{"before", "after"}));
  EXPECT_TRUE(store->check_integrity());
}

TEST(MessageStorePolicy, ARolledBackNewQueueIsNotUsedAfterRecovery) {
  // The failed batch created the queue row, then rolled back: the store must not keep
  // appending to a queue id that no longer exists.
  TempDir dir;
  Options o = options_for(dir);
  o.busy_timeout_ms = kShortBusyTimeoutMs;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(o.path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_FALSE(append_sync(*store, "refused", {target("fresh")}));
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  // Sequence number 1 went to the refused append at submission and is not given again.
  EXPECT_EQ(append_one(*store, "kept", target("fresh")), 2u);
  EXPECT_EQ(testing::messages_of(*store, queue("fresh")), (std::vector<std::string>{"kept"}));
  EXPECT_TRUE(store->check_integrity());
}

TEST(MessageStorePolicy, ExpiryDeletesInBoundedBatches) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  const std::uint64_t total = kMaxExpirePerCall + 7;
  for (std::uint64_t i = 0; i < total; ++i) {
    store->append("m", {Target{queue("q"), 1}}, [](Result<std::vector<std::uint64_t>>) {});
  }
  store->append("live", {target("q")}, [](Result<std::vector<std::uint64_t>>) {});
  ASSERT_TRUE(store->flush());
  auto first = testing::expire_sync(*store);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, kMaxExpirePerCall);
  auto second = testing::expire_sync(*store);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, 7u);
  EXPECT_EQ(testing::messages_of(*store, queue("q")), (std::vector<std::string>{"live"}));
  EXPECT_EQ(store->stats().expired_total, total);
  EXPECT_TRUE(store->check_integrity());
}

}  // namespace
}  // namespace cairn::store
