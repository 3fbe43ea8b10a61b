// Hub: the message plane of cairnd — MQTT listeners, sessions, authentication, routing into
// durable endpoint queues and delivery out of them (docs/architecture.md "Threads", "Delivery").
//
// A QoS 1 PUBLISH is acknowledged only after the message is committed to every queue its
// routes chose (group commit in the store). Module input endpoints deliver to the module's
// session; the $upstream queue waits for the upstream link.
//
// Thread-safety: the hub and its sessions run on one io_context driven by one thread; every
// public method must be called on that thread (post to it otherwise). The store runs its own
// thread and posts results back.
// Lifetime: create with make(), start(), and stop() before destroying the io_context.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/message.hpp"
#include "hub/config.hpp"
#include "hub/edgehub_config.hpp"
#include "hub/endpoint.hpp"
#include "hub/identities.hpp"
#include "hub/methods.hpp"
#include "hub/services.hpp"
#include "net/asio.hpp"
#include "net/http.hpp"
#include "routing/route.hpp"
#include "store/message_store.hpp"

namespace cairn::hub {

class Session;

struct HubCounters {
  std::uint64_t connections_total = 0;
  std::uint64_t connections_refused = 0;  // bad credentials, bad CONNECT, too many connections
  std::uint64_t protocol_errors = 0;      // malformed packets and forbidden operations
  std::uint64_t messages_received = 0;
  std::uint64_t messages_unrouted = 0;
  std::uint64_t messages_rejected = 0;  // store full or failing: not acknowledged
  std::uint64_t messages_oversize = 0;
  std::uint64_t slow_consumers_closed = 0;
  std::uint64_t sessions_failed = 0;  // sessions ended by an internal error (and closed)
  // Refused at ingest: a delivery topic would exceed MQTT's 65,535 bytes after re-encoding.
  std::uint64_t messages_undeliverable = 0;
  std::uint64_t messages_dead_lettered = 0;  // taken out of a queue they would block
  // A client reached one of the named limits (config.hpp), by setting.
  struct Limits {
    std::uint64_t max_connections = 0;  // sockets refused at accept
    std::uint64_t max_unauthenticated_connections = 0;
    std::uint64_t max_unauthenticated_per_address = 0;
    std::uint64_t max_connect_bytes = 0;       // a packet before CONNECT was accepted
    std::uint64_t connect_timeout_secs = 0;    // no CONNECT in time
    std::uint64_t max_subscriptions = 0;       // filters refused with 0x80
    std::uint64_t max_topic_filter_bytes = 0;  // filters refused with 0x80
    std::uint64_t max_properties = 0;          // publishes refused
    std::uint64_t max_property_bytes = 0;      // publishes refused
    std::uint64_t max_inflight_in = 0;         // times reading from a client was paused
  } limits;
  // Oldest dead letters dropped to keep the table at store.max_dead_letters.
  std::uint64_t dead_letters_dropped = 0;
};

// What the hub's role supplies (services.hpp). Not owned: each must outlive the hub. Without
// an authenticator the hub authenticates this edge device's module identities; without a twin
// provider twin requests are answered 503.
struct HubServices {
  Authenticator* authenticator = nullptr;
  TwinProvider* twins = nullptr;
  ConnectionObserver* observer = nullptr;
  // One $upstream queue per sending identity ("$upstream//{d or d/m}", the edge role), so a
  // cloud link that is down holds back only its own identity's messages. Without it (the
  // cloud role, whose consumer stores everything alike) $upstream is one shared queue.
  bool upstream_per_identity = false;
};

// A stored queue as GET /status lists it: {"endpoint", "priority", "length"}; a per-identity
// $upstream queue is listed as endpoint "$upstream" with the sender's "identity".
nlohmann::json queue_status(const store::QueueInfo& q);

class Hub : public std::enable_shared_from_this<Hub> {
 public:
  static Result<std::shared_ptr<Hub>> make(asio::io_context& io, HubConfig config,
                                           store::MessageStore& store);
  ~Hub();

  // Opens the listeners and restores endpoint backlogs. Errors: a port in use, missing
  // certificates.
  Status start();
  // Closes listeners and sessions; `done` runs once every session is gone.
  void stop();

  // Replaces routes and store-and-forward settings atomically. Invalid input changes nothing.
  Status apply(const EdgeHubConfig& config);

  // Before start().
  void set_services(HubServices services);

  // Direct method call to a connected client ("d" or "d/m"): see methods.hpp for the errors.
  void invoke_method(const std::string& client_id, MethodRequest request, MethodCallback done);
  // Sends a desired-properties patch (with its "$version") to the client if it is connected
  // and subscribed to desired updates. Returns whether it was sent.
  bool notify_desired(const std::string& client_id, const nlohmann::json& patch);
  bool is_connected(const std::string& client_id) const;
  // Revocation: closes at once the live session of `client_id` ("d" or "d/m"), or of a device
  // and every module of it, whose credentials were deleted, disabled or replaced. No will is
  // published. Returns how many sessions were closed.
  std::size_t disconnect_client(const std::string& client_id, const std::string& reason);
  std::size_t disconnect_device(const std::string& device_id, const std::string& reason);
  // Live sessions of `device_id` and its modules, not counting `except_client_id` (a
  // reconnection that will take that session's place).
  std::size_t device_connections(const std::string& device_id,
                                 const std::string& except_client_id) const;
  // The consumer of the $upstream endpoint (the upstream link, or cairn-cloud's telemetry sink):
  // of the shared queue and of every per-identity queue, present and future.
  void attach_upstream(const std::shared_ptr<Consumer>& consumer);
  void detach_upstream(const Consumer* consumer);
  // Everything the upstream queue `endpoint_id` ("$upstream" or "$upstream//{identity}") has
  // delivered to `consumer` and not seen acknowledged is delivered again, in order; the other
  // upstream queues carry on undisturbed. Acknowledgements of the earlier deliveries are
  // ignored from now on.
  void redeliver_upstream(const Consumer* consumer, const std::string& endpoint_id);

  IdentityRegistry& identities() { return identities_; }
  // Deletes a module identity of this device and closes its live session at once. `done` as
  // IdentityRegistry::remove (errc::not_found for an unknown module).
  void remove_identity(const std::string& module_id, std::function<void(Status)> done);
  const HubConfig& config() const { return config_; }
  asio::io_context& io() { return io_; }
  // Ports actually bound (useful with port 0 in tests).
  std::uint16_t tls_port() const { return tls_port_; }
  std::uint16_t plain_port() const { return plain_port_; }
  // The server TLS context (edge certificate); null until start() or without TLS.
  ssl::context* tls_context() { return tls_.get(); }

  // The management API (identities, status) served on mgmt.sock.
  void handle_management(const net::HttpRequest& request, net::HttpRespond respond);
  nlohmann::json status() const;
  // More sections for status() from the role (upstream link, twins).
  void set_status_extension(std::function<nlohmann::json()> extension) {
    status_extension_ = std::move(extension);
  }

  // --- used by sessions ---
  Authenticator& authenticator() { return *services_.authenticator; }
  TwinProvider* twins() { return services_.twins; }
  void client_connected(const Principal& who);
  void client_disconnected(const Principal& who);
  void methods_subscribed(const Principal& who);
  void method_response(const Principal& from, const std::string& rid, int status,
                       std::string_view body);
  // Routes `m` and commits it; `done` runs on the hub thread once it is durable (or failed).
  // A message some endpoint could never be sent (its delivery topic would exceed the MQTT
  // limit) is refused with limit_exceeded and nothing is stored. `can_wait`: nobody is held up
  // until `done` runs, so the commit may wait a moment for others to share it
  // (store::MessageStore::AppendRequest::can_wait).
  void ingest(Message m, std::function<void(Status)> done, bool can_wait = false);
  // A stored message its endpoint can never deliver (a poison message): kept in the store's
  // dead-letter table (kDeadLetterTable, key "{endpoint}/{unix ms}-{n}") with the reason,
  // counted, and logged. The caller then settles the entry so the queue behind it moves on.
  // The table holds at most store.max_dead_letters: beyond it the oldest one is deleted,
  // logged and counted (dead_letters_dropped).
  void dead_letter(const std::string& endpoint_id, const Message& m, const std::string& reason);
  // GET /deadletters lists at most this many (the oldest first per endpoint), with the total.
  static constexpr std::size_t kMaxDeadLettersListed = 1000;
  // Answers {"total", "deadLetters": [{"key", "endpoint", "reason", "atMs", "messageBytes",
  // "messageId"}]} (GET /deadletters; cairn-cloud's GET /cairn/deadletters).
  void list_dead_letters(net::HttpRespond respond);
  // Registers a session for its client id, closing any previous one (takeover).
  void register_session(const std::string& client_id, const std::shared_ptr<Session>& session);
  void unregister_session(const std::string& client_id, const Session* session);
  void attach_module(const std::string& module_id, const std::shared_ptr<Consumer>& consumer);
  void detach_module(const std::string& module_id, const Consumer* consumer);
  // A new socket from `address` (an IP address): false, counted and logged when
  // max_connections or a bound on unauthenticated sockets is reached. Until
  // connection_authenticated() the socket holds an unauthenticated slot.
  bool accept_connection(const std::string& address);
  void connection_authenticated(const std::string& address);
  // `authenticated`: whether connection_authenticated() was called for it.
  void connection_closed(const std::string& address, bool authenticated);
  HubCounters& counters() { return counters_; }
  // The stored subscriptions of `client_id` (nullopt: none), read once the writes submitted
  // before (the previous connection's SUBSCRIBE) are committed. `done` runs on the hub
  // thread; the event loop never waits for the disk.
  void load_session(const std::string& client_id,
                    std::function<void(std::optional<std::string>)> done);
  // `done` (optional) runs on the hub thread once the write is committed (or failed).
  void save_session(const std::string& client_id, std::string subscriptions_json,
                    std::function<void(Status)> done = {});
  void erase_session(const std::string& client_id);

 private:
  Hub(asio::io_context& io, HubConfig config, store::MessageStore& store);
  Status listen(std::uint16_t port, bool tls, std::uint16_t& bound);
  // Accepts MQTT connections on `acceptor` until stop(); started again if it ever throws.
  void spawn_accept_loop(tcp::acceptor* acceptor, bool tls);
  asio::awaitable<void> accept_loop(tcp::acceptor* acceptor, bool tls);
  std::shared_ptr<Endpoint> endpoint(const routing::Endpoint& e);
  // The routes' endpoints for `m`, with $upstream made the sender's own queue when the hub
  // keeps one per identity.
  std::vector<routing::RouteMatch> route(const Message& m) const;
  void schedule_expiry(bool more_waiting = false);
  void release_unauthenticated_slot(const std::string& address);
  // Stores a dead letter and drops the oldest ones beyond store.max_dead_letters.
  void keep_dead_letter(const std::string& key, const std::string& endpoint_id,
                        const std::string& reason, const std::string& bytes);
  void load_dead_letters();

  asio::io_context& io_;
  HubConfig config_;
  std::unique_ptr<Authenticator> edge_authenticator_;
  HubServices services_;
  MethodCalls methods_;
  std::weak_ptr<Consumer> upstream_consumer_;
  std::function<nlohmann::json()> status_extension_;
  store::MessageStore& store_;
  IdentityRegistry identities_;
  routing::Router router_;
  std::int64_t default_ttl_secs_;
  std::unique_ptr<ssl::context> tls_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  std::uint16_t tls_port_ = 0, plain_port_ = 0;
  std::unordered_map<std::string, std::weak_ptr<Session>> sessions_;
  std::map<std::string, std::shared_ptr<Endpoint>> endpoints_;  // by endpoint id
  std::multimap<std::string, std::weak_ptr<Consumer>> module_consumers_;
  asio::steady_timer expiry_timer_;
  std::size_t connections_ = 0;
  std::size_t unauthenticated_ = 0;
  std::unordered_map<std::string, std::size_t> unauthenticated_by_address_;
  // Refused connections are logged at most once per setting every kRefusalLogInterval, with
  // how many were refused unlogged meanwhile: a peer reconnecting in a loop must not flood
  // the log. Key: the setting's name.
  struct RefusalLog {
    std::chrono::steady_clock::time_point last{};
    std::uint64_t unlogged = 0;
  };
  std::map<std::string, RefusalLog, std::less<>> refusal_log_;
  std::uint64_t store_expired_total_ = 0;
  bool stopping_ = false;
  HubCounters counters_;
  // The dead letters in the store, oldest first: (atMs, key).
  std::set<std::pair<std::int64_t, std::string>> dead_letters_;

  // A routed message from its hand-over to the store until its commit.
  struct Ingested {
    std::shared_ptr<const Message> message;
    std::vector<routing::RouteMatch> matches;
    std::vector<std::int64_t> expires_at_ms;  // per match
    // Per match: the sequence number of an entry handed to its consumer before the commit;
    // 0 for the others.
    std::vector<std::uint64_t> sent_early;
  };
  // Hands this turn's appends to the store, then offers the module inputs among their
  // endpoints each entry at once (Endpoint::appending).
  void store_appends();
  void committed(Ingested& in, const Result<std::vector<std::uint64_t>>& r);

  // Appends from this turn of the event loop, handed to the store together; ingested_[i] is
  // appends_[i]'s message.
  std::vector<store::MessageStore::AppendRequest> appends_;
  std::vector<std::shared_ptr<Ingested>> ingested_;
  // Append results come back from the store's thread: queued here and run on the hub thread
  // in one posted handler per group commit. Shared with the store callbacks, which may
  // outlive the hub.
  class CommitInbox : public std::enable_shared_from_this<CommitInbox> {
   public:
    explicit CommitInbox(asio::io_context& io) : io_(io) {}
    void post(std::function<void()> handler);

   private:
    asio::io_context& io_;
    std::mutex mu_;
    std::vector<std::function<void()>> ready_;  // guarded by mu_
  };
  std::shared_ptr<CommitInbox> commits_;
};

}  // namespace cairn::hub
