// Endpoint: delivery of one route endpoint's durable queues (one per priority) to its
// consumer — for a module input, the module's MQTT session.
//
// Memory stays bounded whatever the backlog: only a window of recently appended messages is
// cached while the consumer keeps up; everything else is read back from the store in batches.
// The hub may offer an entry before its commit (appending(): its sequence number is final);
// the publisher's PUBACK still waits for the commit, so a commit that never happens can only
// cause a duplicate, never a loss.
// Delivery is at-least-once: an entry is deleted from its queue only when the consumer has
// acknowledged it and every earlier entry of that queue; on disconnect everything not yet
// acknowledged is delivered again (with DUP set) to the next session.
//
// Priorities: the lane with the lowest number is always served first (low priorities can
// starve, as in edgeHub). Expired entries are skipped and dropped. A stored entry that does
// not decode is moved to the dead-letter table in its turn (never settled ahead of entries
// before it); a failed store read is retried with back-off.
//
// Poison messages: for a module input, a delivery fails when the module disconnects while the
// message is the oldest one of its queue it has not acknowledged (a module that crashes on a
// message does exactly that, on every reconnect). After `max_delivery_attempts` such failures
// in a row the message is dead-lettered instead of being sent again, and the queue behind it
// moves on. The count is kept in memory (a restart starts it again). $upstream is exempt: its
// consumer re-attaches on every cloud link drop, which says nothing about the message.
//
// Thread-safety: used only on the hub's network thread. Store callbacks are posted there.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/backoff.hpp"
#include "core/message.hpp"
#include "net/asio.hpp"
#include "routing/route.hpp"
#include "store/message_store.hpp"

namespace cairn::hub {

// The store's key-value table holding dead-lettered (poison) messages: JSON {"endpoint",
// "reason", "atMs", "message" (the stored bytes, base64)}, key "{endpoint}/{unix ms}-{n}".
inline constexpr const char* kDeadLetterTable = "deadletter";

// Keeps a dead letter: (key, endpoint id, reason, the stored bytes). The hub's, which also
// holds the table to store.max_dead_letters.
using DeadLetterSink = std::function<void(const std::string& key, const std::string& endpoint,
                                          const std::string& reason, const std::string& bytes)>;

// Where a delivered message is stored: its entry in the endpoint's durable queue (the queue of
// its priority, and its sequence number there). The same for every delivery of that message,
// also after a restart; another message of the endpoint gets another position (sequence
// numbers only grow, docs/queue_format.md, except after a power cut without fsync). With it,
// when the entry expires: a consumer that holds a delivery before sending it (the upstream
// link while the cloud is away) must not send it after that.
struct QueuePosition {
  std::int32_t priority = 0;
  std::uint64_t seq = 0;
  std::int64_t expires_at_ms = 0;  // unix ms; 0 = never
};

// The identity a message bound for the cloud is sent as: "{device}" or "{device}/{module}",
// from its connection ids (a message without them is the edge device's own).
std::string upstream_sender(const Message& m, std::string_view default_device);

// What an endpoint needs from a connected consumer.
class Consumer {
 public:
  virtual ~Consumer() = default;
  // Queues a PUBLISH of `m`, stored at `at`, for input `input` (routing::Endpoint::input: for
  // $upstream, the sender of a per-identity queue, "" for the shared one); `on_ack` runs when the
  // consumer's PUBACK arrives (QoS 1), or once the socket took it (a QoS 0 subscription).
  // Returns false if the consumer is closing (the message is then not sent).
  virtual bool deliver(const std::string& input, const Message& m, QueuePosition at, bool dup,
                       std::function<void()> on_ack) = 0;
};

struct EndpointCounters {
  std::uint64_t delivered = 0;
  std::uint64_t acked = 0;
  std::uint64_t dead_lettered = 0;      // undecodable entries and poison messages, set aside
  std::uint64_t read_failures = 0;      // failed store reads (retried with back-off)
  std::uint64_t failed_deliveries = 0;  // consumer gone with the oldest message unacknowledged
  std::uint64_t ack_failures = 0;  // deletions of acknowledged entries the store did not commit
};

class Endpoint : public std::enable_shared_from_this<Endpoint> {
 public:
  // max_delivery_attempts: failed deliveries of one message before it is dead-lettered
  // (module inputs only); 0 = never.
  Endpoint(asio::io_context& io, store::MessageStore& store, routing::Endpoint endpoint,
           std::size_t max_inflight, std::uint32_t max_delivery_attempts = 0);

  // Where dead letters go. REQUIRES: set before the first message is appended or loaded.
  void set_dead_letter_sink(DeadLetterSink sink) { dead_letter_sink_ = std::move(sink); }

  const routing::Endpoint& endpoint() const { return endpoint_; }
  std::string id() const { return endpoint_.id(); }

  // A message is being committed to this endpoint's queue `priority` as `seq` (its final
  // position, store::MessageStore::Placement). If the consumer is keeping up (attached, no
  // backlog, `seq` next in line, room in the cache) it is queued for delivery now and true is
  // returned; otherwise nothing changes and appended() will do what is needed after the commit.
  bool appending(std::int32_t priority, std::uint64_t seq, std::int64_t expires_at_ms,
                 std::shared_ptr<const Message> message);
  // The append appending() took did not commit: unsent, it is dropped. Once sent it stays sent
  // (its publisher, told of the failure, sends it again: a duplicate, never a loss).
  void append_failed(std::int32_t priority, std::uint64_t seq);
  // A message was committed to this endpoint's queue `priority` with sequence `seq`.
  void appended(std::int32_t priority, std::uint64_t seq, std::int64_t expires_at_ms,
                std::shared_ptr<const Message> message);
  // The queue `priority` holds entries from an earlier run: read them from the store.
  void has_backlog(std::int32_t priority);

  void attach(std::weak_ptr<Consumer> consumer);
  // The consumer went away: everything unacknowledged will be delivered again.
  void detach(const Consumer* consumer);
  bool attached() const { return !consumer_.expired(); }

  const EndpointCounters& counters() const { return counters_; }
  std::size_t inflight() const { return inflight_; }

 private:
  struct Pending {
    std::uint64_t seq = 0;
    std::int64_t expires_at_ms = 0;
    std::shared_ptr<const Message> message;  // null: the stored bytes did not decode
    std::string undecodable;                 // those bytes, and why, for the dead letter
    std::string reason;
  };
  struct Sent {
    std::uint64_t seq = 0;
    bool acked = false;
  };
  struct Lane {
    store::QueueKey key;
    std::deque<Pending> cache;
    std::deque<Sent> sent;                // delivered, in seq order, until acknowledged in order
    std::uint64_t loaded_through = 0;     // highest seq ever put in the cache this generation
    std::uint64_t acked_through = 0;      // every entry <= this is acknowledged by the consumer
    std::uint64_t deleting_through = 0;   // and every entry <= this handed to the store to delete
    std::uint64_t delivered_through = 0;  // highest seq ever sent: later sends of it are DUPs
    std::uint64_t appended_through = 0;   // highest seq the hub was told was committed
    bool backlog = true;                  // entries past loaded_through may be on disk only
    bool loading = false;
    // The message whose deliveries failed last, and how many times in a row (poison detection).
    std::uint64_t failing_seq = 0;
    std::uint32_t failed_deliveries = 0;
  };

  Lane& lane(std::int32_t priority);
  // Whether `seq` can join the lane's cache: delivered in order from memory, not read back.
  bool cacheable(const Lane& l, std::uint64_t seq) const;
  void pump();
  void load(Lane& lane);
  void on_ack(std::int32_t priority, std::uint64_t seq, std::uint64_t generation);
  void settle(Lane& lane);
  void delete_acked();
  void report_failed_deletion(const store::QueueKey& key, std::uint64_t through,
                              const Error& error);
  void dead_letter(Lane& lane, Pending& p, const std::string& reason);
  void count_failed_delivery(Lane& lane);
  void retry_reads_later();

  asio::io_context& io_;
  store::MessageStore& store_;
  routing::Endpoint endpoint_;
  std::size_t max_inflight_;
  std::uint32_t max_delivery_attempts_;
  DeadLetterSink dead_letter_sink_;
  std::map<std::int32_t, Lane> lanes_;  // ordered: highest priority (lowest number) first
  std::weak_ptr<Consumer> consumer_;
  const Consumer* consumer_raw_ = nullptr;
  std::size_t inflight_ = 0;
  std::uint64_t generation_ = 0;  // bumped on detach so late acks and reads are ignored
  bool deletion_posted_ = false;  // delete_acked() runs at the end of this turn of the loop
  asio::steady_timer read_retry_;
  Backoff read_backoff_;
  EndpointCounters counters_;
};

}  // namespace cairn::hub
