// Functional tests of MessageStore: queue semantics, fan-out, reopen, TTL, size cap, kv.
#include "store/message_store.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/clock.hpp"
#include "store_test_util.hpp"

namespace cairn::store {
namespace {

using testing::append_one;
using testing::append_sync;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::messages_of;
using testing::open_or_die;
using testing::options_for;
using testing::queue;
using testing::target;
using testing::TempDir;

constexpr std::int64_t kPast = 1;  // 1970: long expired
const std::int64_t kFuture = now_unix_ms() + 3'600'000;

TEST(MessageStore, OpenCreatesDirectoryAndEmptyStore) {
  TempDir dir;
  Options o;
  o.path = dir.file("a/b/c/store.db");
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  const Stats s = store->stats();
  EXPECT_TRUE(s.healthy);
  EXPECT_EQ(s.stored_messages, 0u);
  EXPECT_EQ(s.stored_bytes, 0u);
  EXPECT_EQ(s.commits_total, 0u);
  auto qs = testing::queues_sync(*store);
  ASSERT_TRUE(qs.ok());
  EXPECT_THAT(*qs, IsEmpty());
  EXPECT_TRUE(store->check_integrity().ok());
}

TEST(MessageStore, OpenRejectsBadOptions) {
  TempDir dir;
  Options empty;
  auto r = MessageStore::open(empty);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);

  Options zero_batch = options_for(dir);
  zero_batch.max_batch = 0;
  r = MessageStore::open(zero_batch);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);
}

TEST(MessageStore, SecondOpenOfTheSameFileIsRefusedUntilTheFirstCloses) {
  TempDir dir;
  auto first = open_or_die(options_for(dir));
  ASSERT_TRUE(first);
  auto second = MessageStore::open(options_for(dir));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, errc::unavailable);
  first.reset();
  EXPECT_TRUE(MessageStore::open(options_for(dir)).ok());
}

TEST(MessageStore, SequencesArePerQueueAndPriorityAndReadsAreOrdered) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  EXPECT_EQ(append_one(*store, "a0-1", target("a", 0)), 1u);
  EXPECT_EQ(append_one(*store, "a1-1", target("a", 1)), 1u);
  EXPECT_EQ(append_one(*store, "a0-2", target("a", 0)), 2u);
  EXPECT_EQ(append_one(*store, "b0-1", target("b", 0)), 1u);
  EXPECT_EQ(append_one(*store, "a1-2", target("a", 1)), 2u);
  EXPECT_EQ(append_one(*store, "a0-3", target("a", 0)), 3u);

  EXPECT_THAT(messages_of(*store, queue("a", 0)), ElementsAre("a0-1", "a0-2", "a0-3"));
  EXPECT_THAT(messages_of(*store, queue("a", 1)), ElementsAre("a1-1", "a1-2"));
  EXPECT_THAT(messages_of(*store, queue("b", 0)), ElementsAre("b0-1"));
  EXPECT_THAT(messages_of(*store, queue("never")), IsEmpty());

  auto entries = testing::read_sync(*store, queue("a", 0));
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 3u);
  for (std::size_t i = 0; i < entries->size(); ++i) {
    const Entry& e = (*entries)[i];
    EXPECT_EQ(e.seq, i + 1);
    EXPECT_EQ(e.queue, queue("a", 0));
    EXPECT_EQ(e.expires_at_ms, 0);
    EXPECT_GT(e.enqueued_at_ms, 0);
  }
  EXPECT_EQ(store->stats().appended_total, 6u);
}

TEST(MessageStore, ReadHonoursAfterSeqAndMax) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  for (int i = 1; i <= 10; ++i) append_one(*store, "m" + std::to_string(i), target("q"));

  auto r = testing::read_sync(*store, queue("q"), 3, 4);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].seq, 4u);
  EXPECT_EQ((*r)[3].seq, 7u);
  EXPECT_EQ((*r)[3].message, "m7");

  r = testing::read_sync(*store, queue("q"), 10, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(*r, IsEmpty());
  r = testing::read_sync(*store, queue("q"), 0, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(*r, IsEmpty());
  r = testing::read_sync(*store, queue("q"), std::numeric_limits<std::uint64_t>::max(), 4);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(*r, IsEmpty());
}

TEST(MessageStore, AckRemovesEverythingUpToSeqAndIsIdempotent) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  for (int i = 1; i <= 5; ++i) append_one(*store, "m" + std::to_string(i), target("q"));
  append_one(*store, "other", target("q", 1));

  ASSERT_TRUE(testing::ack_sync(*store, queue("q"), 3).ok());
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("m4", "m5"));
  EXPECT_EQ(store->stats().acked_total, 3u);
  EXPECT_EQ(store->stats().stored_messages, 3u);

  // Again, lower, zero and for unknown queues: all succeed and change nothing.
  ASSERT_TRUE(testing::ack_sync(*store, queue("q"), 3).ok());
  ASSERT_TRUE(testing::ack_sync(*store, queue("q"), 1).ok());
  ASSERT_TRUE(testing::ack_sync(*store, queue("q"), 0).ok());
  ASSERT_TRUE(testing::ack_sync(*store, queue("nobody"), 7).ok());
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("m4", "m5"));
  EXPECT_EQ(store->stats().acked_total, 3u);

  // "Everything" (UINT64_MAX must not wrap to -1 in SQL); the other priority is untouched.
  ASSERT_TRUE(
      testing::ack_sync(*store, queue("q"), std::numeric_limits<std::uint64_t>::max()).ok());
  EXPECT_THAT(messages_of(*store, queue("q")), IsEmpty());
  EXPECT_THAT(messages_of(*store, queue("q", 1)), ElementsAre("other"));
  EXPECT_EQ(store->stats().stored_messages, 1u);
  EXPECT_EQ(store->stats().stored_bytes, 5u);

  // An ack without a callback is fine too.
  store->ack(queue("q", 1), 1);
  ASSERT_TRUE(store->flush().ok());
  EXPECT_EQ(store->stats().stored_messages, 0u);
  EXPECT_TRUE(store->check_integrity().ok());
}

TEST(MessageStore, AcksAloneWaitToShareTheNextCommit) {
  TempDir dir;
  Options o = options_for(dir);
  o.ack_delay_ms = 3'600'000;  // longer than the test: only other work ends the wait
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  for (int i = 1; i <= 3; ++i) append_one(*store, "m" + std::to_string(i), target("q"));
  const std::uint64_t commits = store->stats().commits_total;

  std::promise<Status> acked;
  auto acked_future = acked.get_future();
  store->ack(queue("q"), 1, [&acked](Status s) { acked.set_value(std::move(s)); });
  store->ack(queue("q"), 2);
  // Alone, the acks wait (an hour here): nothing commits them.
  EXPECT_EQ(acked_future.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  EXPECT_EQ(store->stats().acked_total, 0u);
  append_one(*store, "m4", target("q"));
  ASSERT_TRUE(acked_future.get().ok());

  const Stats s = store->stats();
  EXPECT_EQ(s.commits_total, commits + 1) << "the acks and the append share one commit";
  EXPECT_EQ(s.acked_total, 2u);
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("m3", "m4"));
  EXPECT_TRUE(store->check_integrity().ok());
}

// Appends that may wait, handed over together; `done` gets each one's outcome.
void append_waiting(MessageStore& store, const std::vector<std::string>& messages,
                    std::function<void(Status)> done, bool can_wait = true) {
  std::vector<MessageStore::AppendRequest> requests;
  for (const auto& m : messages) {
    requests.push_back(
        {m,
         {target("q")},
         [done](Result<std::vector<std::uint64_t>> r) { done(r ? Status{} : Status(r.error())); },
         can_wait});
  }
  store.append_all(std::move(requests));
}

TEST(MessageStore, AppendsThatCanWaitShareTheNextCommitThatCannot) {
  TempDir dir;
  Options o = options_for(dir);
  o.append_delay_us = 600'000'000;  // longer than the test: only other work ends the wait
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  const std::uint64_t commits = store->stats().commits_total;

  std::promise<Status> first;
  auto first_done = first.get_future();
  append_waiting(*store, {"a"}, [&first](Status s) { first.set_value(std::move(s)); });
  std::atomic<int> waited{0};
  append_waiting(*store, {"b", "c"}, [&waited](Status s) { waited += s.ok() ? 1 : 100; });
  EXPECT_EQ(first_done.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  EXPECT_EQ(store->stats().appended_total, 0u);

  // One request that cannot wait takes the others with it.
  append_waiting(
      *store, {"d", "e"}, [](Status) {}, /*can_wait=*/false);
  ASSERT_TRUE(first_done.get().ok());
  ASSERT_TRUE(store->flush().ok());
  EXPECT_EQ(waited, 2);
  EXPECT_EQ(store->stats().commits_total, commits + 1) << "one commit for all five";
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("a", "b", "c", "d", "e"));
}

TEST(MessageStore, AppendsThatCanWaitCommitOnTheirOwnInTime) {
  TempDir dir;
  Options o = options_for(dir);
  o.append_delay_us = 20'000;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  std::promise<Status> done;
  auto committed = done.get_future();
  append_waiting(*store, {"a"}, [&done](Status s) { done.set_value(std::move(s)); });
  ASSERT_EQ(committed.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(committed.get().ok());
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("a"));
}

TEST(MessageStore, ClosingDoesNotWaitForAppendsThatCanWait) {
  TempDir dir;
  Options o = options_for(dir);
  o.append_delay_us = 600'000'000;
  std::optional<errc> outcome;
  {
    auto store = open_or_die(o);
    ASSERT_TRUE(store);
    append_waiting(*store, {"a"},
                   [&outcome](Status s) { outcome = s ? errc::ok : s.error().code; });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the writer is waiting
  }  // would block for ten minutes if the close waited for the delay
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(*outcome, errc::cancelled);
}

TEST(MessageStore, FanOutSharesOneBodyUntilTheLastAck) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  const std::string body(1000, 'x');
  auto seqs =
      append_sync(*store, body, {target("$upstream"), target("m2/input1", 1), target("m3")});
  ASSERT_TRUE(seqs.ok());
  EXPECT_THAT(*seqs, ElementsAre(1u, 1u, 1u));
  append_one(*store, "second", target("m3"));

  Stats s = store->stats();
  EXPECT_EQ(s.stored_messages, 2u);
  EXPECT_EQ(s.stored_bytes, 1006u);  // the fanned-out body counts once

  ASSERT_TRUE(testing::ack_sync(*store, queue("$upstream"), 1).ok());
  ASSERT_TRUE(testing::ack_sync(*store, queue("m2/input1", 1), 1).ok());
  s = store->stats();
  EXPECT_EQ(s.stored_messages, 2u);
  EXPECT_THAT(messages_of(*store, queue("m3")), ElementsAre(body, "second"));
  EXPECT_TRUE(store->check_integrity().ok());

  ASSERT_TRUE(testing::ack_sync(*store, queue("m3"), 1).ok());
  s = store->stats();
  EXPECT_EQ(s.stored_messages, 1u);
  EXPECT_EQ(s.stored_bytes, 6u);
  EXPECT_EQ(s.acked_total, 3u);
  EXPECT_TRUE(store->check_integrity().ok());
}

TEST(MessageStore, ReopenRestoresSequencesContentAndTotals) {
  TempDir dir;
  const std::string binary("\0\xff\x01payload\0", 11);
  {
    auto store = open_or_die(options_for(dir, Options::Sync::full));
    ASSERT_TRUE(store);
    append_one(*store, "a1", target("a"));
    append_one(*store, binary, target("a", 0, kFuture));
    append_one(*store, "b1", target("b", 2));
    append_one(*store, "b2", target("b", 2));
    ASSERT_TRUE(testing::ack_sync(*store, queue("b", 2), 2).ok());  // b is now empty
    ASSERT_TRUE(testing::put_sync(*store, "sessions", "dev1", "state").ok());
  }
  auto store = open_or_die(options_for(dir, Options::Sync::full));
  ASSERT_TRUE(store);
  auto a = testing::read_sync(*store, queue("a"));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0].message, "a1");
  EXPECT_EQ((*a)[1].message, binary);
  EXPECT_EQ((*a)[1].seq, 2u);
  EXPECT_EQ((*a)[1].expires_at_ms, kFuture);

  // Sequence numbers continue, including for a queue that was acked to empty.
  EXPECT_EQ(append_one(*store, "a3", target("a")), 3u);
  EXPECT_EQ(append_one(*store, "b3", target("b", 2)), 3u);

  const Stats s = store->stats();
  EXPECT_EQ(s.stored_messages, 4u);
  EXPECT_EQ(s.stored_bytes, 2u + binary.size() + 2u + 2u);
  auto v = store->get("sessions", "dev1");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->value_or("missing"), "state");
  EXPECT_TRUE(store->check_integrity().ok());
}

// A queue's next_seq is written to the file only when its newest entry goes: each way it can
// go must leave the sequence to continue after a reopen, never restart.
TEST(MessageStore, SequencesContinueAfterReopenHoweverTheNewestEntryWent) {
  TempDir dir;
  const Options o = options_for(dir, Options::Sync::full);
  {
    auto store = open_or_die(o);
    ASSERT_TRUE(store);
    // Acked: "a" keeps its older entries, "b" is acked to empty ("everything") in the batch
    // of its append, "c" through its newest seq.
    append_one(*store, "a1", target("a"));
    append_one(*store, "a2", target("a"));
    ASSERT_TRUE(testing::ack_sync(*store, queue("a"), 1).ok());
    store->append("b1", {target("b")}, nullptr);
    store->ack(queue("b"), std::numeric_limits<std::uint64_t>::max());
    ASSERT_TRUE(store->flush().ok());
    append_one(*store, "c1", target("c"));
    ASSERT_TRUE(testing::ack_sync(*store, queue("c"), 1).ok());
    // Expired and met by a read: "e" loses its newest entry, not its oldest.
    append_one(*store, "e1", target("e"));
    append_one(*store, "e2", target("e", 0, kPast));
    auto read = testing::read_sync(*store, queue("e"));
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(read->size(), 1u);
  }
  {
    auto store = open_or_die(o);
    ASSERT_TRUE(store);
    EXPECT_EQ(append_one(*store, "a3", target("a")), 3u);
    EXPECT_EQ(append_one(*store, "b2", target("b")), 2u);
    EXPECT_EQ(append_one(*store, "c2", target("c")), 2u);
    EXPECT_EQ(append_one(*store, "e3", target("e")), 3u);
    EXPECT_THAT(messages_of(*store, queue("a")), ElementsAre("a2", "a3"));
    EXPECT_THAT(messages_of(*store, queue("e")), ElementsAre("e1", "e3"));
    // Expired and deleted by expire().
    append_one(*store, "d1", target("d", 0, kPast));
    auto expired = testing::expire_sync(*store);
    ASSERT_TRUE(expired.ok());
    EXPECT_EQ(*expired, 1u);
  }
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(append_one(*store, "d2", target("d")), 2u);
  EXPECT_TRUE(store->check_integrity().ok());
}

TEST(MessageStore, QueuesListsNonEmptyQueuesAndThoseAppendedToInThisProcess) {
  TempDir dir;
  {
    auto store = open_or_die(options_for(dir));
    ASSERT_TRUE(store);
    append_one(*store, "x", target("full", 1));
    append_one(*store, "y", target("full", 1));
    append_one(*store, "z", target("drained"));
    ASSERT_TRUE(testing::ack_sync(*store, queue("drained"), 1).ok());
    auto qs = testing::queues_sync(*store);
    ASSERT_TRUE(qs.ok());
    ASSERT_EQ(qs->size(), 2u);  // sorted by endpoint, priority
    EXPECT_EQ((*qs)[0].queue, queue("drained"));
    EXPECT_EQ((*qs)[0].length, 0u);
    EXPECT_EQ((*qs)[0].oldest_seq, 0u);
    EXPECT_EQ((*qs)[1].queue, queue("full", 1));
    EXPECT_EQ((*qs)[1].length, 2u);
    EXPECT_EQ((*qs)[1].oldest_seq, 1u);
  }
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  auto qs = testing::queues_sync(*store);
  ASSERT_TRUE(qs.ok());
  ASSERT_EQ(qs->size(), 1u);
  EXPECT_EQ((*qs)[0].queue, queue("full", 1));
}

TEST(MessageStore, ReadSkipsDeletesAndCountsExpiredEntries) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  append_one(*store, "live1", target("q", 0, kFuture));
  append_one(*store, "dead1", target("q", 0, kPast));
  append_one(*store, "live2", target("q"));
  append_one(*store, "dead2", target("q", 0, now_unix_ms() - 1));
  append_one(*store, "live3", target("q", 0, kFuture));

  auto r = testing::read_sync(*store, queue("q"), 0, 2);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].message, "live1");
  EXPECT_EQ((*r)[1].message, "live2");
  EXPECT_EQ((*r)[1].seq, 3u);
  // Only the expired entry met on the way was dropped.
  EXPECT_EQ(store->stats().expired_total, 1u);
  EXPECT_EQ(store->stats().stored_messages, 4u);

  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("live1", "live2", "live3"));
  EXPECT_EQ(store->stats().expired_total, 2u);
  EXPECT_EQ(store->stats().stored_messages, 3u);
  EXPECT_TRUE(store->check_integrity().ok());
}

TEST(MessageStore, ExpireDropsEveryExpiredEntryAndOnlyUnreferencedBodies) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  // One body, expired in one queue and alive in the other: per-route TTLs differ.
  ASSERT_TRUE(append_sync(*store, "shared", {target("a", 0, kPast), target("b", 0, kFuture)}).ok());
  append_one(*store, "dead-a", target("a", 0, kPast));
  append_one(*store, "dead-c", target("c", 3, kPast));
  append_one(*store, "live-c", target("c", 3));

  auto n = testing::expire_sync(*store);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);
  const Stats s = store->stats();
  EXPECT_EQ(s.expired_total, 3u);
  EXPECT_EQ(s.stored_messages, 2u);  // "shared" (still in b) and "live-c"
  EXPECT_EQ(s.stored_bytes, 12u);
  EXPECT_THAT(messages_of(*store, queue("a")), IsEmpty());
  EXPECT_THAT(messages_of(*store, queue("b")), ElementsAre("shared"));
  EXPECT_THAT(messages_of(*store, queue("c", 3)), ElementsAre("live-c"));

  n = testing::expire_sync(*store);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_TRUE(store->check_integrity().ok());
}

TEST(MessageStore, SizeCapRefusesAndChangesNothing) {
  TempDir dir;
  Options o = options_for(dir);
  o.max_bytes = 100;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  append_one(*store, std::string(60, 'a'), target("q"));

  auto r = append_sync(*store, std::string(41, 'b'), {target("q"), target("r")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  r = append_sync(*store, std::string(101, 'c'), {target("r")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::limit_exceeded);

  Stats s = store->stats();
  EXPECT_EQ(s.rejected_full_total, 2u);
  EXPECT_EQ(s.stored_bytes, 60u);
  EXPECT_EQ(s.stored_messages, 1u);
  EXPECT_EQ(s.appended_total, 1u);
  EXPECT_TRUE(s.healthy);
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre(std::string(60, 'a')));
  EXPECT_THAT(messages_of(*store, queue("r")), IsEmpty());

  // Exactly full is allowed. The refused append's sequence number in q (2, handed out at
  // submission) is not given again: a consumer may have been told of it (Placement).
  EXPECT_EQ(append_one(*store, std::string(40, 'd'), target("q")), 3u);
  EXPECT_EQ(store->stats().stored_bytes, 100u);
  // Acking frees space.
  ASSERT_TRUE(testing::ack_sync(*store, queue("q"), 3).ok());
  EXPECT_EQ(append_one(*store, std::string(100, 'e'), target("q")), 4u);
}

TEST(MessageStore, SizeCapCountsAppendsQueuedInTheSameBatch) {
  TempDir dir;
  Options o = options_for(dir);
  o.max_bytes = 100;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  append_one(*store, std::string(50, 'x'), target("q"));

  std::vector<Result<std::vector<std::uint64_t>>> results;
  {
    testing::WriterGate gate(*store);
    // One batch: an ack freeing 50, then 40 + 40 + 40 against a cap of 100.
    store->ack(queue("q"), 1);
    for (int i = 0; i < 3; ++i) {
      store->append(
          std::string(40, 'y'), {target("q")},
          [&results](Result<std::vector<std::uint64_t>> r) { results.push_back(std::move(r)); });
    }
    gate.release();
    ASSERT_TRUE(store->flush().ok());
  }
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].ok());
  EXPECT_TRUE(results[1].ok());
  ASSERT_FALSE(results[2].ok());
  EXPECT_EQ(results[2].error().code, errc::limit_exceeded);
  const Stats s = store->stats();
  EXPECT_EQ(s.stored_bytes, 80u);
  EXPECT_EQ(s.rejected_full_total, 1u);
}

TEST(MessageStore, AppendAllPlacesEachRequestBeforeItsCommit) {
  TempDir dir;
  Options o = options_for(dir);
  o.max_bytes = 100;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  std::vector<Result<std::vector<std::uint64_t>>> results(4, make_error(errc::internal, "none"));
  std::vector<MessageStore::Placement> placements;
  {
    testing::WriterGate gate(*store);
    std::vector<MessageStore::AppendRequest> requests;
    const std::vector<std::pair<std::size_t, std::vector<Target>>> shapes = {
        {60, {target("q")}}, {1, {}}, {41, {target("q")}}, {30, {target("r")}}};
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      requests.push_back(
          {std::string(shapes[i].first, 'm'), shapes[i].second,
           [&results, i](Result<std::vector<std::uint64_t>> r) { results[i] = std::move(r); }});
    }
    placements = store->append_all(std::move(requests));
    gate.release();
    ASSERT_TRUE(store->flush().ok());
  }
  ASSERT_EQ(placements.size(), 4u);
  // Fits: placed, expected, and committed where it was placed.
  EXPECT_EQ(placements[0].seqs, std::vector<std::uint64_t>{1});
  EXPECT_TRUE(placements[0].expected);
  ASSERT_TRUE(results[0].ok());
  EXPECT_EQ(*results[0], placements[0].seqs);
  // Bad input gets no sequence number.
  EXPECT_TRUE(placements[1].seqs.empty());
  EXPECT_FALSE(placements[1].expected);
  EXPECT_EQ(results[1].error().code, errc::invalid_argument);
  // Over the cap with what is not committed yet: not expected, and refused.
  EXPECT_EQ(placements[2].seqs, std::vector<std::uint64_t>{2});
  EXPECT_FALSE(placements[2].expected);
  EXPECT_EQ(results[2].error().code, errc::limit_exceeded);
  // Placement never promises more than the commit gives: this one counted the refused 41
  // bytes as well and was not expected, yet the writer, which knew better, stored it.
  EXPECT_FALSE(placements[3].expected);
  ASSERT_TRUE(results[3].ok());
  EXPECT_EQ(*results[3], placements[3].seqs);
  EXPECT_EQ(store->stats().stored_bytes, 90u);
  // Settled: the refused bytes no longer count against what the next append may expect.
  auto next = store->append_all({{std::string(10, 'n'), {target("r")}, nullptr}});
  ASSERT_EQ(next.size(), 1u);
  EXPECT_TRUE(next[0].expected);
  EXPECT_EQ(next[0].seqs, std::vector<std::uint64_t>{2});
  ASSERT_TRUE(store->flush().ok());
  EXPECT_EQ(store->stats().stored_bytes, 100u);
}

TEST(MessageStore, AppendRejectsInvalidTargetsWithoutStoring) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  auto r = append_sync(*store, "m", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  r = append_sync(*store, "m", {target("q"), target("q", 1), target("q")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_EQ(store->stats().stored_messages, 0u);
  EXPECT_TRUE(store->stats().healthy);
  EXPECT_EQ(append_one(*store, "ok", target("q")), 1u);
}

TEST(MessageStore, EmptyAndBinaryMessagesRoundTrip) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
  const std::string big(3 * 1024 * 1024, '\x7f');  // spills to overflow pages
  append_one(*store, "", target("q"));
  append_one(*store, all_bytes, target("q"));
  append_one(*store, big, target("q"));
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("", all_bytes, big));
  EXPECT_EQ(store->stats().stored_bytes, 256u + big.size());
}

TEST(MessageStore, KeyValuePutGetListErase) {
  TempDir dir;
  const std::string binary("\0v\xff", 3);
  {
    auto store = open_or_die(options_for(dir));
    ASSERT_TRUE(store);
    auto missing = store->get("twins", "dev1");
    ASSERT_TRUE(missing.ok());
    EXPECT_FALSE(missing->has_value());

    ASSERT_TRUE(testing::put_sync(*store, "twins", "dev2", "{}").ok());
    ASSERT_TRUE(testing::put_sync(*store, "twins", "dev1", "old").ok());
    ASSERT_TRUE(testing::put_sync(*store, "twins", "dev1", binary).ok());  // overwrite
    ASSERT_TRUE(testing::put_sync(*store, "sessions", "dev1", "s").ok());

    auto v = store->get("twins", "dev1");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->value_or(""), binary);
    auto rows = store->list("twins");
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), 2u);
    EXPECT_EQ((*rows)[0].first, "dev1");
    EXPECT_EQ((*rows)[0].second, binary);
    EXPECT_EQ((*rows)[1].first, "dev2");
    auto none = store->list("nothing");
    ASSERT_TRUE(none.ok());
    EXPECT_THAT(*none, IsEmpty());

    ASSERT_TRUE(testing::erase_sync(*store, "twins", "dev2").ok());
    ASSERT_TRUE(testing::erase_sync(*store, "twins", "never-there").ok());
    EXPECT_EQ(store->stats().stored_messages, 0u);  // kv does not count as messages
  }
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  auto rows = store->list("twins");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].second, binary);
  auto s = store->get("sessions", "dev1");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->value_or(""), "s");
}

TEST(MessageStore, FlushFromACallbackIsRefusedInsteadOfDeadlocking) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  std::promise<Status> inner;
  store->append("m", {target("q")},
                [&](Result<std::vector<std::uint64_t>>) { inner.set_value(store->flush()); });
  const Status s = inner.get_future().get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, errc::internal);
}

TEST(MessageStore, AcksQueuedAtCloseAreCommittedAndOtherWorkCancelled) {
  TempDir dir;
  std::optional<errc> late_append;
  {
    auto store = open_or_die(options_for(dir));
    ASSERT_TRUE(store);
    append_one(*store, "a", target("q"));
    append_one(*store, "b", target("q"));
    auto gate = std::make_unique<testing::WriterGate>(*store);
    store->ack(queue("q"), 1);
    store->append("c", {target("q")}, [&late_append](Result<std::vector<std::uint64_t>> r) {
      late_append = r ? errc::ok : r.error().code;
    });
    // The store closes while its writer is held: the writer finds it closing when released.
    std::thread releaser([&gate] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      gate->release();
    });
    store.reset();
    releaser.join();
  }
  ASSERT_TRUE(late_append.has_value());
  EXPECT_EQ(*late_append, errc::cancelled);
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  EXPECT_THAT(messages_of(*store, queue("q")), ElementsAre("b"));
}

TEST(MessageStore, DestructorRunsEveryCallbackExactlyOnce) {
  TempDir dir;
  std::atomic<int> ok{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> other{0};
  constexpr int kCount = 2000;
  {
    auto store = open_or_die(options_for(dir));
    ASSERT_TRUE(store);
    for (int i = 0; i < kCount; ++i) {
      store->append("m", {target("q")}, [&](Result<std::vector<std::uint64_t>> r) {
        if (r.ok()) {
          ++ok;
        } else if (r.error().code == errc::cancelled) {
          ++cancelled;
        } else {
          ++other;
        }
      });
    }
  }
  EXPECT_EQ(ok + cancelled, kCount);
  EXPECT_EQ(other, 0);
  // Whatever reported success is on disk.
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  EXPECT_EQ(store->stats().stored_messages, static_cast<std::uint64_t>(ok.load()));
}

}  // namespace
}  // namespace cairn::store
