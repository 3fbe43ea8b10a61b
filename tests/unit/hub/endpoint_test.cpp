// Endpoint against a real message store: the orders in which store results and append
// notifications can reach the hub thread.
#include "hub/endpoint.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "../store/store_test_util.hpp"

namespace cairn::hub {
namespace {

using store::testing::append_one;
using store::testing::open_or_die;
using store::testing::options_for;
using store::testing::target;
using store::testing::TempDir;

// Acknowledges every delivery on the next turn of the event loop, as a PUBACK would come
// back, and keeps the payloads.
class AckingConsumer : public Consumer {
 public:
  explicit AckingConsumer(asio::io_context& io) : io_(io) {}
  bool deliver(const std::string&, const Message& m, QueuePosition at, bool,
               std::function<void()> on_ack) override {
    payloads.push_back(m.body);
    positions.push_back(at);
    if (acks) {
      asio::post(io_, std::move(on_ack));
    } else {
      held.push_back(std::move(on_ack));
    }
    return true;
  }
  bool acks = true;  // false: acknowledgements are held (a link that does not answer)
  std::vector<std::string> payloads;
  std::vector<QueuePosition> positions;
  std::vector<std::function<void()>> held;  // with acks = false: the PUBACKs not sent yet

 private:
  asio::io_context& io_;
};

routing::Endpoint filter_input() {
  return routing::Endpoint{routing::Endpoint::Kind::module_input, "filter", "in"};
}

Message message(std::string body) {
  Message m;
  m.body = std::move(body);
  return m;
}

// A real store and an endpoint for the module input filter/in with an acknowledging consumer
// attached; `io` runs what the hub thread would.
struct Harness {
  Harness(const TempDir& dir, std::size_t window) : store(open_or_die(options_for(dir))) {
    if (!store) throw std::runtime_error("the store did not open");
    endpoint = std::make_shared<Endpoint>(io, *store, filter_input(), window);
    endpoint->attach(consumer);
  }

  // Stores a message for filter/in, as the hub does, and returns its sequence number; with
  // `notify`, the endpoint is told at once.
  std::uint64_t append(const std::string& body, std::int32_t priority = 0, bool notify = true) {
    const std::uint64_t seq =
        append_one(*store, encode_message(message(body)), target("filter/in", priority));
    if (seq != 0 && notify) {
      endpoint->appended(priority, seq, 0, std::make_shared<const Message>(message(body)));
    }
    return seq;
  }

  // Hands `bodies` to the store in one go as the hub does: each entry is offered to the
  // endpoint before its commit (Endpoint::appending) and announced after it (appended), or
  // withdrawn if it failed. Returns the placements.
  std::vector<store::MessageStore::Placement> append_early(const std::vector<std::string>& bodies) {
    std::vector<store::MessageStore::AppendRequest> requests;
    for (const auto& body : bodies) {
      auto m = std::make_shared<const Message>(message(body));
      requests.push_back({encode_message(*m),
                          {target("filter/in")},
                          [this, m](Result<std::vector<std::uint64_t>> r) {
                            asio::post(io, [this, m, r = std::move(r)] {
                              if (r) endpoint->appended(0, (*r)[0], 0, m);
                            });
                          }});
    }
    auto placements = store->append_all(std::move(requests));
    for (std::size_t i = 0; i < placements.size(); ++i) {
      if (placements[i].expected) {
        endpoint->appending(0, placements[i].seqs[0], 0,
                            std::make_shared<const Message>(message(bodies[i])));
      }
    }
    return placements;
  }

  // Runs the hub thread's work and the store's until both are idle.
  void settle() {
    for (int quiet_rounds = 0; quiet_rounds < 3;) {
      ASSERT_TRUE(store->flush());
      io.restart();
      quiet_rounds = io.poll() == 0 ? quiet_rounds + 1 : 0;
    }
  }

  std::unique_ptr<store::MessageStore> store;
  asio::io_context io;
  std::shared_ptr<AckingConsumer> consumer = std::make_shared<AckingConsumer>(io);
  std::shared_ptr<Endpoint> endpoint;
};

TEST(Endpoint, AnAppendNotifiedDuringAReadThatMissedItIsStillDelivered) {
  // A group commit can run a read before an append in the same transaction, and the append's
  // notification can reach the hub thread before the read's result: the read then returns
  // without the entry the notification announced, and the entry must still go out.
  TempDir dir;
  Harness h(dir, 16);
  h.endpoint->has_backlog(0);     // starts a read of the (empty) queue
  ASSERT_TRUE(h.store->flush());  // the read ran; its result waits for the hub thread
  ASSERT_NE(h.append("late"), 0u);
  h.settle();
  EXPECT_EQ(h.consumer->payloads, std::vector<std::string>{"late"});
}

TEST(Endpoint, DeliversAppendsInOrderWhileTheConsumerKeepsUp) {
  TempDir dir;
  Harness h(dir, 4);
  std::vector<std::string> sent;
  for (int i = 0; i < 20; ++i) {
    sent.push_back("m" + std::to_string(i));
    h.append(sent.back());
  }
  h.settle();
  EXPECT_EQ(h.consumer->payloads, sent);
  EXPECT_TRUE(store::testing::messages_of(*h.store, store::testing::queue("filter/in")).empty());
}

TEST(Endpoint, ADeliveryNamesItsStoredEntryAlikeAfterARestart) {
  // The upstream link makes its dedupe keys from this position: a message delivered again
  // after a restart must come with the position it had before.
  using Position = std::pair<std::int32_t, std::uint64_t>;
  auto sorted_positions = [](const AckingConsumer& consumer) {
    std::vector<Position> out;
    for (const auto& at : consumer.positions) out.emplace_back(at.priority, at.seq);
    std::sort(out.begin(), out.end());
    return out;
  };
  TempDir dir;
  std::vector<Position> stored;
  {
    Harness h(dir, 16);
    h.consumer->acks = false;
    for (std::int32_t priority : {3, 3, 1}) {
      const std::uint64_t seq =
          h.append("p" + std::to_string(priority) + "-" + std::to_string(stored.size()), priority);
      ASSERT_NE(seq, 0u);
      stored.emplace_back(priority, seq);
    }
    std::sort(stored.begin(), stored.end());
    h.settle();
    EXPECT_EQ(sorted_positions(*h.consumer), stored);
  }
  Harness h(dir, 16);
  h.endpoint->has_backlog(1);
  h.endpoint->has_backlog(3);
  h.settle();
  EXPECT_EQ(sorted_positions(*h.consumer), stored);
}

TEST(Endpoint, AnEntryGoesOutWhileItsCommitIsUnderWayAndOnlyOnce) {
  TempDir dir;
  Harness h(dir, 16);
  h.endpoint->has_backlog(0);  // as at start-up: read the queue, here empty
  h.settle();
  {
    store::testing::WriterGate gate(*h.store);  // no commit until released
    const auto placements = h.append_early({"a", "b"});
    ASSERT_EQ(placements.size(), 2u);
    EXPECT_TRUE(placements[0].expected && placements[1].expected);
    EXPECT_EQ(placements[0].seqs, std::vector<std::uint64_t>{1});
    EXPECT_EQ(placements[1].seqs, std::vector<std::uint64_t>{2});
    h.io.poll();
    EXPECT_EQ(h.consumer->payloads, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(h.store->stats().appended_total, 0u);
  }
  h.settle();
  // Announced again after the commit, neither is sent twice; the acks deleted both.
  EXPECT_EQ(h.consumer->payloads, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(h.store->stats().appended_total, 2u);
  EXPECT_EQ(h.store->stats().acked_total, 2u);
  EXPECT_TRUE(store::testing::messages_of(*h.store, store::testing::queue("filter/in")).empty());
  // Later appends, early or not, follow in order.
  h.append("c");
  h.append_early({"d"});
  h.settle();
  EXPECT_EQ(h.consumer->payloads, (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(Endpoint, AnEntryWhoseAppendFailedIsNotSentIfStillWaiting) {
  TempDir dir;
  Harness h(dir, 1);  // one delivery in flight: the second entry waits in the cache
  h.endpoint->has_backlog(0);
  h.settle();
  h.consumer->acks = false;
  const auto msg = [](const std::string& body) {
    return std::make_shared<const Message>(message(body));
  };
  ASSERT_TRUE(h.endpoint->appending(0, 1, 0, msg("sent")));
  ASSERT_TRUE(h.endpoint->appending(0, 2, 0, msg("failed")));
  ASSERT_TRUE(h.endpoint->appending(0, 3, 0, msg("kept")));
  EXPECT_EQ(h.consumer->payloads, std::vector<std::string>{"sent"});
  h.endpoint->append_failed(0, 2);
  h.endpoint->append_failed(0, 1);  // already sent: stays sent, its ack still counts
  ASSERT_EQ(h.consumer->held.size(), 1u);
  h.consumer->held[0]();
  h.io.poll();
  EXPECT_EQ(h.consumer->payloads, (std::vector<std::string>{"sent", "kept"}));
  EXPECT_EQ(h.endpoint->counters().acked, 1u);
}

TEST(Endpoint, AnEntryIsNotTakenEarlyOutOfOrderOrWithoutAConsumer) {
  TempDir dir;
  Harness h(dir, 16);
  const auto m = std::make_shared<const Message>(message("x"));
  EXPECT_FALSE(h.endpoint->appending(0, 1, 0, m));  // the queue was never read: may hold more
  h.endpoint->has_backlog(0);
  h.settle();
  EXPECT_FALSE(h.endpoint->appending(0, 2, 0, m));  // 1 is not here yet
  h.endpoint->detach(h.consumer.get());
  EXPECT_FALSE(h.endpoint->appending(0, 1, 0, m));
  EXPECT_TRUE(h.consumer->payloads.empty());
}

}  // namespace
}  // namespace cairn::hub
