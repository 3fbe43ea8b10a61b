// Hub: the message plane of cairnd — MQTT listeners, sessions, authentication, routing into
// durable endpoint queues and delivery out of them (DESIGN.md "How data flows").
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
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/message.hpp"
#include "hub/config.hpp"
#include "hub/edgehub_config.hpp"
#include "hub/endpoint.hpp"
#include "hub/identities.hpp"
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
};

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

  IdentityRegistry& identities() { return identities_; }
  const HubConfig& config() const { return config_; }
  // Ports actually bound (useful with port 0 in tests).
  std::uint16_t tls_port() const { return tls_port_; }
  std::uint16_t plain_port() const { return plain_port_; }

  // The management API (identities, status) served on mgmt.sock.
  void handle_management(const net::HttpRequest& request, net::HttpRespond respond);
  nlohmann::json status() const;

  // --- used by sessions ---
  // Routes `m` and commits it; `done` runs on the hub thread once it is durable (or failed).
  void ingest(Message m, std::function<void(Status)> done);
  // Registers a session for its client id, closing any previous one (takeover).
  void register_session(const std::string& client_id, const std::shared_ptr<Session>& session);
  void unregister_session(const std::string& client_id, const Session* session);
  void attach_module(const std::string& module_id, const std::shared_ptr<Consumer>& consumer);
  void detach_module(const std::string& module_id, const Consumer* consumer);
  bool accept_connection();  // false when max_connections is reached
  void connection_closed();
  HubCounters& counters() { return counters_; }
  std::optional<std::string> load_session(const std::string& client_id) const;
  void save_session(const std::string& client_id, std::string subscriptions_json);
  void erase_session(const std::string& client_id);

 private:
  Hub(asio::io_context& io, HubConfig config, store::MessageStore& store);
  Status listen(std::uint16_t port, bool tls, std::uint16_t& bound);
  std::shared_ptr<Endpoint> endpoint(const routing::Endpoint& e);
  void schedule_expiry();

  asio::io_context& io_;
  HubConfig config_;
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
  std::uint64_t store_expired_total_ = 0;
  bool stopping_ = false;
  HubCounters counters_;
};

}  // namespace cairn::hub
