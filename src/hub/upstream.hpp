// Upstream: cairnd's link to the cloud (docs/protocol.md §8.2, §8.3, §9.1). One MQTT/TLS
// connection per identity, as IoT Edge keeps over MQTT: a module's telemetry, twin traffic and
// direct methods travel on the connection of that module's identity. Tokens are SAS tokens
// for "{host}/devices/{d}/modules/{m}" signed with the edge device's key (the cloud accepts
// them on behalf of the edge device's modules), renewed by reconnecting at 80% of their life.
//
// - $upstream: the upstream link is the consumer of the $upstream queues: one per sending
//   identity ("$upstream//{d or d/m}", HubServices::upstream_per_identity), each with its own
//   position and in-flight window (mqtt.max_inflight_out), so a link that is refused, backing
//   off or slow to acknowledge holds back only its own identity's messages. A message goes out
//   on its sender's connection at QoS 1 and is acknowledged to its queue (deleted from disk)
//   only on the cloud's PUBACK. While a connection is down its messages wait; when it drops
//   with messages unacknowledged, that identity's queue alone delivers them again (DUP) once
//   it is back. The shared "$upstream" queue of a store from before per-identity queues is
//   drained too, with its single window, until it is empty (docs/protocol.md §8.2).
//   Every message carries a dedupe key (iothub::kDedupeKeyProperty) made from where it is
//   stored: the store's id, which kind of queue, its queue position and its enqueue time. A
//   re-send, also after a restart of cairnd, carries the same key, so the cloud can store it
//   once even when the module set no message id; the module's own message id goes up
//   unchanged.
// - Twins: GET and reported patches go to the cloud; desired patches come back to the twin
//   cache. After every (re)connection the cache resyncs and queued reported patches are sent
//   in order.
// - Methods: a call from the cloud is invoked on the local module and the answer relayed.
// - Reconnection: exponential back-off from min_backoff_ms to max_backoff_secs, with jitter.
//
// Thread-safety: the hub's io_context thread only.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "hub/endpoint.hpp"
#include "hub/hub.hpp"
#include "hub/services.hpp"
#include "hub/twin_cache.hpp"
#include "net/asio.hpp"
#include "net/mqtt_client.hpp"
#include "store/message_store.hpp"

namespace cairn::hub {

class Upstream : public Consumer,
                 public TwinUpstream,
                 public ConnectionObserver,
                 public std::enable_shared_from_this<Upstream> {
 public:
  // `store_id`: the store's id (load_store_id), the first part of every dedupe key.
  Upstream(asio::io_context& io, const HubConfig& config, Hub& hub, TwinCache& twins,
           std::string store_id);
  ~Upstream() override;

  // The id of `store` for dedupe keys: kStoreIdBytes random bytes in hex, made when a store
  // first serves a cloud link and kept in it (kv table kUpstreamTable), so it stays the same
  // across restarts and is new when the store is (a reinstall): keys of a reinstalled device
  // cannot be taken for those it sent before. Blocks until a new id is committed.
  // Errors: the store's, when it cannot be read or written.
  static Result<std::string> load_store_id(store::MessageStore& store);
  // Which $upstream queue a message is stored in: its sender's own, or the shared one (stores
  // from before per-identity queues).
  enum class QueueKind { per_identity, shared };
  // The dedupe key of the message `m` stored at `at` in an $upstream queue of the store
  // `store_id`: "{store_id}-i.{priority}.{seq}.{enqueue time digits}" in a per-identity queue,
  // "{store_id}.{priority}.{seq}.{enqueue time digits}" in the shared one (the keys sent
  // before per-identity queues existed: a message left there by an upgrade keeps its key, and
  // no key of a per-identity queue, whose sequence numbers start again at 1, can be one of
  // them). The cloud de-duplicates per (device, module), and a sender's messages are in one
  // per-identity queue, so positions there are unique per identity. The enqueue time guards
  // against a sequence number handed out again after a power cut with store.fsync off
  // (docs/queue_format.md): the same position is then a different message, stored later.
  // At most iothub::kMaxDedupeKeyBytes long.
  static std::string dedupe_key(std::string_view store_id, QueueKind queue, QueuePosition at,
                                const Message& m);

  // Attaches to the $upstream endpoint and opens the links that have work waiting.
  void start();
  void stop();

  // Consumer (the $upstream queues). `input`: the identity of a per-identity queue, "" for
  // the shared one.
  bool deliver(const std::string& input, const Message& m, QueuePosition at, bool dup,
               std::function<void()> on_ack) override;
  // TwinUpstream.
  bool online(const std::string& client_id) const override;
  void fetch_twin(const std::string& client_id,
                  std::function<void(Result<nlohmann::json>)> done) override;
  void reported_pending(const std::string& client_id) override;
  // ConnectionObserver: a local module connected; its cloud identity connects too.
  void connected(const Principal& who) override;
  void disconnected(const Principal& who) override;
  // The module serves direct methods: its cloud link subscribes to method requests (and
  // unsubscribes when the module disconnects).
  void methods_subscribed(const Principal& who) override;
  // The identity was removed: its cloud connection closes (gracefully) and is not reopened
  // until the identity connects again; its messages still waiting for the cloud are settled
  // and dropped (logged), so they neither hold the $upstream window nor reopen the link.
  void forget(const std::string& client_id);

  // Link state for `cairn check`, `cairn status` and metrics.
  nlohmann::json status() const;
  bool any_online() const;
  // Seconds without any cloud connection up, now (0 while online) and in total.
  double offline_seconds() const;
  double offline_total_seconds() const;
  std::uint64_t messages_sent() const { return messages_sent_; }

 private:
  struct Link;
  struct Outgoing {
    std::string topic;
    std::string payload;
    std::function<void()> on_ack;
    // The delivery round of its queue it came in: a message of an earlier round is delivered
    // again by its queue and is not sent from here.
    std::uint64_t generation = 0;
    std::int64_t expires_at_ms = 0;  // unix ms; 0 = never
    bool shared = false;             // from the shared $upstream queue
  };

  Link& link(const std::string& client_id);
  // False for a link forget() retired (it may still be closing).
  bool current(const Link& l) const;
  asio::awaitable<void> run(std::shared_ptr<Link> link);
  // Starts run(link) with a completion handler: a link loop that throws is logged, its
  // connection closed, and the loop started again after a back-off.
  void spawn_run(const std::shared_ptr<Link>& link);
  asio::awaitable<void> pump(std::shared_ptr<Link> link, std::shared_ptr<net::MqttClient> client);
  void on_cloud_message(Link& link, mqtt::Publish p);
  void on_link_up(Link& link);
  void on_link_down(Link& link, const std::string& why);
  void send_reported(Link& link);
  void request(Link& link, const std::string& topic_prefix, std::string body,
               std::function<void(int status, std::string body)> done);
  // The link dropped with messages unacknowledged: its identity's queue (and the shared queue,
  // if the link carried any of its messages) delivers them again.
  void redeliver(Link& link);
  void redeliver_shared();
  // Whether `item` is of its queue's current delivery round.
  bool current_round(const Link& link, const Outgoing& item) const;
  void update_offline_clock();
  // Brings the link's method-request subscription in line with method_listeners_.
  void update_methods_subscription(const std::string& client_id);
  static asio::awaitable<void> change_methods_subscription(std::weak_ptr<Link> link,
                                                           std::shared_ptr<net::MqttClient> client,
                                                           bool wanted);
  // The wait before connection attempt `attempt` (1-based): the minimum doubled per attempt,
  // at most max_backoff_secs, with jitter in [half, all] of that.
  std::chrono::milliseconds backoff(int attempt);

  asio::io_context& io_;
  const HubConfig& config_;
  Hub& hub_;
  TwinCache& twins_;
  const std::string store_id_;
  std::map<std::string, std::shared_ptr<Link>> links_;
  // Local clients subscribed to method requests, by client id.
  std::set<std::string> method_listeners_;
  // Identities forget() removed: what still comes for them from the $upstream queue is
  // settled and dropped, never a reason to open their link again (which would register the
  // removed module in the cloud anew). A new connection of the identity ends this.
  std::set<std::string, std::less<>> forgotten_;
  // Bumped when the shared $upstream queue is asked to deliver again (per-identity queues have
  // theirs in Link::generation).
  std::uint64_t shared_generation_ = 0;
  bool stopping_ = false;
  bool was_online_ = false;
  std::chrono::steady_clock::time_point offline_since_;
  std::chrono::steady_clock::duration offline_total_{};
  std::uint64_t messages_sent_ = 0;
  // Messages whose TTL ran out while they waited for a link: settled without being sent.
  std::uint64_t expired_unsent_ = 0;
  std::uint64_t reconnects_ = 0;
};

}  // namespace cairn::hub
