// Group commit and multi-threaded use of MessageStore.
#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/message_store.hpp"
#include "store_test_util.hpp"

namespace cairn::store {
namespace {

using testing::open_or_die;
using testing::options_for;
using testing::queue;
using testing::target;
using testing::TempDir;

TEST(MessageStoreGroupCommit, PendingAppendsShareTransactionsOfAtMostMaxBatch) {
  TempDir dir;
  Options o = options_for(dir, Options::Sync::full);
  o.max_batch = 100;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);

  constexpr int kAppends = 1000;
  std::atomic<int> done{0};
  {
    testing::WriterGate gate(*store);  // commit #1
    for (int i = 0; i < kAppends; ++i) {
      store->append("m" + std::to_string(i), {target("q")},
                    [&done](Result<std::vector<std::uint64_t>> r) {
                      EXPECT_TRUE(r.ok());
                      ++done;
                    });
    }
    gate.release();
  }
  ASSERT_TRUE(store->flush().ok());
  EXPECT_EQ(done, kAppends);
  const Stats s = store->stats();
  EXPECT_EQ(s.appended_total, static_cast<std::uint64_t>(kAppends));
  EXPECT_EQ(s.commits_total, 1u + kAppends / 100);  // the gate, then ten full batches
}

TEST(MessageStoreGroupCommit, ConcurrentProducersAreBatched) {
  TempDir dir;
  auto store = open_or_die(options_for(dir, Options::Sync::full));
  ASSERT_TRUE(store);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::atomic<int> failures{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        store->append("t" + std::to_string(t) + "-" + std::to_string(i), {target("q")},
                      [&failures](Result<std::vector<std::uint64_t>> r) {
                        if (!r.ok()) ++failures;
                      });
      }
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(store->flush().ok());
  EXPECT_EQ(failures, 0);
  const Stats s = store->stats();
  EXPECT_EQ(s.appended_total, static_cast<std::uint64_t>(kThreads * kPerThread));
  // One fsync per append would be 8000 commits; group commit needs a handful.
  EXPECT_LE(s.commits_total * 10, s.appended_total) << "commits=" << s.commits_total;
}

TEST(MessageStoreConcurrency, ProducersConsumerAndKvReadersInParallel) {
  TempDir dir;
  auto store = open_or_die(options_for(dir));
  ASSERT_TRUE(store);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 300;

  // Per-thread callback results, in callback order.
  std::vector<std::vector<std::uint64_t>> own_seqs(kThreads);
  std::mutex shared_mu;
  std::set<std::uint64_t> shared_seqs;
  std::atomic<bool> producing{true};
  std::atomic<int> errors{0};

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string own = "own" + std::to_string(t);
      for (int i = 0; i < kPerThread; ++i) {
        store->append(own + ":" + std::to_string(i), {target(own), target("shared", 1)},
                      [&, t](Result<std::vector<std::uint64_t>> r) {
                        if (!r.ok()) {
                          ++errors;
                          return;
                        }
                        own_seqs[static_cast<std::size_t>(t)].push_back((*r)[0]);
                        std::lock_guard lock(shared_mu);
                        shared_seqs.insert((*r)[1]);
                      });
        if (i % 50 == 0) {
          store->put("kv", own, std::to_string(i), [&](Status s) {
            if (!s.ok()) ++errors;
          });
        }
      }
    });
  }
  // A consumer draining the shared queue while producers run: read, then ack what it read.
  std::size_t consumed = 0;
  std::thread consumer([&] {
    std::uint64_t last = 0;
    while (producing || consumed < kThreads * kPerThread) {
      auto r = testing::read_sync(*store, queue("shared", 1), last, 64);
      if (!r.ok()) {
        ++errors;
        return;
      }
      for (const Entry& e : *r) {
        if (e.seq <= last) ++errors;  // strictly increasing
        last = e.seq;
        ++consumed;
      }
      if (!r->empty() && !testing::ack_sync(*store, queue("shared", 1), last).ok()) ++errors;
      if (r->empty() && !producing) break;
    }
  });
  // Synchronous kv readers on the read connection, concurrently with the writer.
  std::thread kv_reader([&] {
    while (producing) {
      if (!store->list("kv").ok()) ++errors;
      if (!store->get("kv", "own0").ok()) ++errors;
      (void)store->stats();
    }
  });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(store->flush().ok());
  producing = false;
  consumer.join();
  kv_reader.join();

  EXPECT_EQ(errors, 0);
  EXPECT_EQ(consumed, static_cast<std::size_t>(kThreads * kPerThread));
  for (const auto& seqs : own_seqs) {
    ASSERT_EQ(seqs.size(), static_cast<std::size_t>(kPerThread));
    for (std::size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], i + 1);
  }
  EXPECT_EQ(shared_seqs.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(*shared_seqs.begin(), 1u);
  EXPECT_EQ(*shared_seqs.rbegin(), static_cast<std::uint64_t>(kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    auto msgs = testing::messages_of(*store, queue("own" + std::to_string(t)));
    ASSERT_EQ(msgs.size(), static_cast<std::size_t>(kPerThread));
    EXPECT_EQ(msgs.back(), "own" + std::to_string(t) + ":" + std::to_string(kPerThread - 1));
  }
  EXPECT_TRUE(testing::messages_of(*store, queue("shared", 1)).empty());
  EXPECT_EQ(store->stats().stored_messages, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_TRUE(store->check_integrity().ok());
  auto kv = store->list("kv");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->size(), static_cast<std::size_t>(kThreads));
}

}  // namespace
}  // namespace cairn::store
