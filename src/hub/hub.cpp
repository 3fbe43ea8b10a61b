#include "hub/hub.hpp"

#include <algorithm>
#include <utility>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "hub/iothub_topics.hpp"
#include "hub/session.hpp"
#include "mqtt/packet.hpp"
#include "net/certs.hpp"
#include "net/spawn.hpp"

namespace cairn::hub {
namespace {

constexpr const char* kSessionsTable = "sessions";
// At most what the cloud link adds to a message's upstream topic: "&cairn-dedupe-key=" and
// the key (its digits, letters, dots and '-' are left as they are by URL-encoding).
constexpr std::size_t kDedupeKeyPairBytes =
    1 + iothub::kDedupeKeyProperty.size() + 1 + iothub::kMaxDedupeKeyBytes;

using net::json_response;

}  // namespace

nlohmann::json queue_status(const store::QueueInfo& q) {
  nlohmann::json out{
      {"endpoint", q.queue.endpoint}, {"priority", q.queue.priority}, {"length", q.length}};
  if (auto e = routing::Endpoint::from_id(q.queue.endpoint);
      e && e->kind == routing::Endpoint::Kind::upstream && !e->input.empty()) {
    out["endpoint"] = "$upstream";
    out["identity"] = e->input;
  }
  return out;
}

namespace {

net::HttpResponse error_response(const Error& e) {
  int status = 500;
  switch (e.code) {
    case errc::invalid_argument:
      status = 400;
      break;
    case errc::not_found:
      status = 404;
      break;
    case errc::unauthorized:
      status = 401;
      break;
    case errc::forbidden:
      status = 403;
      break;
    case errc::limit_exceeded:
      status = 413;
      break;
    case errc::unavailable:
      status = 503;
      break;
    default:
      break;
  }
  return json_response(status, {{"error", e.message}});
}

// The edge role's authenticator: the module identities of this device.
class EdgeAuthenticator : public Authenticator {
 public:
  EdgeAuthenticator(const IdentityRegistry& registry, const HubConfig& config)
      : registry_(registry), config_(config) {}
  Result<Principal> authenticate(const AuthRequest& request, std::int64_t now_unix_s) override {
    return hub::authenticate(request, registry_, config_.iothub_hostname, config_.hostname,
                             now_unix_s, config_.auth.max_token_lifetime_secs);
  }

 private:
  const IdentityRegistry& registry_;
  const HubConfig& config_;
};

}  // namespace

Hub::Hub(asio::io_context& io, HubConfig config, store::MessageStore& store)
    : io_(io),
      config_(std::move(config)),
      methods_(io,
               [this](const std::string& client_id, const std::string& topic, std::string payload) {
                 auto it = sessions_.find(client_id);
                 if (it == sessions_.end()) return false;
                 auto session = it->second.lock();
                 if (!session || !session->wants_methods()) return false;
                 return session->publish(topic, std::move(payload));
               }),
      store_(store),
      identities_(store, config_.device_id),
      default_ttl_secs_(config_.default_ttl_secs),
      expiry_timer_(io),
      commits_(std::make_shared<CommitInbox>(io)) {}

Hub::~Hub() = default;

Result<std::shared_ptr<Hub>> Hub::make(asio::io_context& io, HubConfig config,
                                       store::MessageStore& store) {
  std::shared_ptr<Hub> hub(new Hub(io, std::move(config), store));
  CAIRN_TRY(hub->identities_.load());
  hub->edge_authenticator_ = std::make_unique<EdgeAuthenticator>(hub->identities_, hub->config_);
  hub->services_.authenticator = hub->edge_authenticator_.get();
  return hub;
}

void Hub::set_services(HubServices services) {
  if (services.authenticator == nullptr) services.authenticator = edge_authenticator_.get();
  services_ = services;
}

void Hub::invoke_method(const std::string& client_id, MethodRequest request, MethodCallback done) {
  if (stopping_) {
    done(make_error(errc::unavailable, "the hub is stopping"));
    return;
  }
  methods_.invoke(client_id, std::move(request), std::move(done));
}

bool Hub::notify_desired(const std::string& client_id, const nlohmann::json& patch) {
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return false;
  auto session = it->second.lock();
  if (!session || !session->wants_desired()) return false;
  long long version = 0;
  if (auto v = patch.find("$version"); v != patch.end() && v->is_number_integer()) {
    version = v->get<long long>();
  }
  return session->publish(twin_desired_patch_topic(version), dump_json(patch));
}

bool Hub::is_connected(const std::string& client_id) const {
  auto it = sessions_.find(client_id);
  return it != sessions_.end() && !it->second.expired();
}

void Hub::remove_identity(const std::string& module_id, std::function<void(Status)> done) {
  const bool known = identities_.find(module_id).has_value();
  identities_.remove(module_id, std::move(done));
  // The identity is gone from memory now, so a reconnection is refused from here on; its live
  // session goes at once rather than when its token expires.
  const std::string client_id = config_.device_id + "/" + module_id;
  if (known && disconnect_client(client_id, "identity deleted") > 0) {
    log::info("hub", "identity {} deleted: its connection was closed", client_id);
  }
}

std::size_t Hub::disconnect_client(const std::string& client_id, const std::string& reason) {
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return 0;
  auto session = it->second.lock();
  if (!session) return 0;
  session->close(reason, true);
  return 1;
}

namespace {
bool of_device(const std::string& client_id, const std::string& device_id) {
  return client_id.starts_with(device_id) &&
         (client_id.size() == device_id.size() || client_id[device_id.size()] == '/');
}
}  // namespace

std::size_t Hub::disconnect_device(const std::string& device_id, const std::string& reason) {
  // Copy first: closing a session unregisters it from the map.
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [id, weak] : sessions_) {
    if (!of_device(id, device_id)) continue;
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->close(reason, true);
  return live.size();
}

std::size_t Hub::device_connections(const std::string& device_id,
                                    const std::string& except_client_id) const {
  std::size_t n = 0;
  for (const auto& [id, weak] : sessions_) {
    if (id != except_client_id && of_device(id, device_id) && !weak.expired()) ++n;
  }
  return n;
}

void Hub::attach_upstream(const std::shared_ptr<Consumer>& consumer) {
  upstream_consumer_ = consumer;
  endpoint(routing::Endpoint{routing::Endpoint::Kind::upstream, "", ""});
  for (auto& [id, ep] : endpoints_) {
    if (ep->endpoint().kind == routing::Endpoint::Kind::upstream) ep->attach(consumer);
  }
}

void Hub::detach_upstream(const Consumer* consumer) {
  if (upstream_consumer_.lock().get() == consumer) upstream_consumer_.reset();
  for (auto& [id, ep] : endpoints_) {
    if (ep->endpoint().kind == routing::Endpoint::Kind::upstream) ep->detach(consumer);
  }
}

void Hub::redeliver_upstream(const Consumer* consumer, const std::string& endpoint_id) {
  auto current = upstream_consumer_.lock();
  auto it = endpoints_.find(endpoint_id);
  if (!current || current.get() != consumer || it == endpoints_.end()) return;
  it->second->detach(consumer);
  it->second->attach(current);
}

std::vector<routing::RouteMatch> Hub::route(const Message& m) const {
  auto matches = router_.route(m);
  if (services_.upstream_per_identity) {
    for (auto& match : matches) {
      if (match.endpoint.kind == routing::Endpoint::Kind::upstream) {
        match.endpoint.input = upstream_sender(m, config_.device_id);
      }
    }
  }
  return matches;
}

void Hub::client_connected(const Principal& who) {
  if (services_.observer) services_.observer->connected(who);
}

void Hub::client_disconnected(const Principal& who) {
  methods_.target_gone(who.client_id());
  if (services_.observer) services_.observer->disconnected(who);
}

void Hub::methods_subscribed(const Principal& who) {
  methods_.target_ready(who.client_id());
  if (services_.observer) services_.observer->methods_subscribed(who);
}

void Hub::method_response(const Principal& from, const std::string& rid, int status,
                          std::string_view body) {
  methods_.respond(from.client_id(), rid, status, body);
}

Status Hub::start() {
  if (config_.mqtt.tls_port != 0 || config_.mqtt.plain_port == 0) {
    net::CertificateOptions options;
    options.dns_names = {config_.hostname, "localhost"};
    if (config_.hostname == "localhost") options.dns_names.pop_back();
    options.ip_addresses = {"127.0.0.1"};
    auto certs = net::ensure_edge_certificates(config_.home, options);
    if (!certs) return std::move(certs).error();
    tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    error_code ec;
    tls_->use_certificate_chain_file(certs->server_cert_path, ec);
    if (!ec) tls_->use_private_key_file(certs->server_key_path, ssl::context::pem, ec);
    if (ec) {
      return make_error(errc::io_error, "cannot load the server certificate from " +
                                            certs->server_cert_path + ": " + ec.message());
    }
  }
  if (config_.mqtt.tls_port != 0) CAIRN_TRY(listen(config_.mqtt.tls_port, true, tls_port_));
  if (config_.mqtt.plain_port != 0) CAIRN_TRY(listen(config_.mqtt.plain_port, false, plain_port_));

  load_dead_letters();
  // Queues left by an earlier run: their endpoints must read them back from disk.
  std::weak_ptr<Hub> weak = weak_from_this();
  store_.queues([weak, &io = io_](Result<std::vector<store::QueueInfo>> r) {
    asio::post(io, [weak, r = std::move(r)] {
      auto self = weak.lock();
      if (!self) return;
      if (!r) {
        log::error("hub", "cannot list stored queues: {}", r.error().to_string());
        return;
      }
      for (const auto& q : *r) {
        if (q.length == 0) continue;
        auto e = routing::Endpoint::from_id(q.queue.endpoint);
        if (!e) {
          log::warn("hub", "stored queue '{}' names no endpoint; left untouched", q.queue.endpoint);
          continue;
        }
        log::info("hub", "endpoint={} priority={} resumes with {} stored messages",
                  q.queue.endpoint, q.queue.priority, q.length);
        self->endpoint(*e)->has_backlog(q.queue.priority);
      }
    });
  });
  schedule_expiry();
  return {};
}

Status Hub::listen(std::uint16_t port, bool tls, std::uint16_t& bound) {
  error_code ec;
  auto address = asio::ip::make_address(config_.mqtt.listen, ec);
  if (ec) {
    return make_error(errc::invalid_argument,
                      "mqtt.listen '" + config_.mqtt.listen + "' is not an IP address");
  }
  auto acceptor = std::make_unique<tcp::acceptor>(io_);
  tcp::endpoint ep(address, port);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(errc::io_error, "cannot listen on " + config_.mqtt.listen + ":" +
                                          std::to_string(port) + ": " + ec.message());
  }
  bound = acceptor->local_endpoint().port();
  log::info("hub", "listening for MQTT{} on {}:{}", tls ? " over TLS" : "", config_.mqtt.listen,
            bound);
  tcp::acceptor* raw = acceptor.get();
  acceptors_.push_back(std::move(acceptor));
  spawn_accept_loop(raw, tls);
  return {};
}

void Hub::spawn_accept_loop(tcp::acceptor* acceptor, bool tls) {
  std::weak_ptr<Hub> weak = weak_from_this();
  asio::co_spawn(
      io_, accept_loop(acceptor, tls),
      net::on_coroutine_exit("mqtt accept loop", [weak, acceptor, tls](const std::string&) {
        // Keep accepting: one failed connection set-up must not close the port.
        auto self = weak.lock();
        if (self && !self->stopping_ && acceptor->is_open()) {
          self->spawn_accept_loop(acceptor, tls);
        }
      }));
}

asio::awaitable<void> Hub::accept_loop(tcp::acceptor* acceptor, bool tls) {
  auto self = shared_from_this();
  for (;;) {
    error_code aec;
    tcp::socket socket =
        co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, aec));
    if (stopping_ || aec == asio::error::operation_aborted) co_return;
    if (aec) {
      log::warn("hub", "accept failed: {}", aec.message());
      continue;
    }
    error_code ignored;
    auto remote = socket.remote_endpoint(ignored);
    std::string address = remote.address().to_string();
    if (!accept_connection(address)) continue;
    socket.set_option(tcp::no_delay(true), ignored);
    std::string peer = address + ":" + std::to_string(remote.port());
    Session::Stream stream = tls ? Session::Stream(std::in_place_index<1>, std::move(socket), *tls_)
                                 : Session::Stream(std::in_place_index<0>, std::move(socket));
    std::make_shared<Session>(self, std::move(stream), std::move(peer), std::move(address))
        ->start();
  }
}

void Hub::stop() {
  stopping_ = true;
  expiry_timer_.cancel();
  for (auto& a : acceptors_) {
    error_code ignored;
    a->close(ignored);
  }
  // Copy first: closing a session unregisters it from the map.
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [id, weak] : sessions_) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->close("cairnd is shutting down", true);
  methods_.cancel_all();
}

Status Hub::apply(const EdgeHubConfig& config) {
  auto router = routing::Router::create(config.routes);
  if (!router) return std::move(router).error();
  router_ = std::move(*router);
  default_ttl_secs_ = config.ttl_secs;
  for (const auto& r : router_.routes()) {
    endpoint(r.endpoint());  // create now so a module that connects first gets attached
    log::info("hub", "route {}: {} (priority={} ttl={}s)", r.name(), r.text(),
              r.priority() == routing::kDefaultPriority ? std::string("default")
                                                        : std::to_string(r.priority()),
              r.ttl_secs());
  }
  log::info("hub", "{} routes active; store-and-forward ttl={}s", router_.routes().size(),
            default_ttl_secs_);
  return {};
}

std::shared_ptr<Endpoint> Hub::endpoint(const routing::Endpoint& e) {
  auto id = e.id();
  auto it = endpoints_.find(id);
  if (it != endpoints_.end()) return it->second;
  auto ep = std::make_shared<Endpoint>(io_, store_, e, config_.mqtt.max_inflight_out,
                                       config_.mqtt.max_delivery_attempts);
  ep->set_dead_letter_sink(
      [weak = weak_from_this()](const std::string& key, const std::string& endpoint_id,
                                const std::string& reason, const std::string& bytes) {
        if (auto self = weak.lock()) self->keep_dead_letter(key, endpoint_id, reason, bytes);
      });
  endpoints_.emplace(id, ep);
  if (e.kind == routing::Endpoint::Kind::module_input) {
    auto range = module_consumers_.equal_range(e.module);
    for (auto c = range.first; c != range.second; ++c) ep->attach(c->second);
  } else if (!upstream_consumer_.expired()) {
    ep->attach(upstream_consumer_);
  }
  return ep;
}

void Hub::ingest(Message m, std::function<void(Status)> done, bool can_wait) {
  auto matches = route(m);
  if (matches.empty()) {
    ++counters_.messages_unrouted;
    done({});
    return;
  }
  // Refuse now what could never leave: a topic re-encoded for delivery (URL-encoding, the
  // sender ids added) can grow past what a PUBLISH can carry.
  for (const auto& match : matches) {
    const auto& e = match.endpoint;
    const std::size_t topic_bytes =
        e.kind == routing::Endpoint::Kind::module_input
            ? module_input_topic(config_.device_id, e.module, e.input, m).size()
            : upstream_events_topic(m, config_.device_id).size() + kDedupeKeyPairBytes;
    if (topic_bytes > mqtt::kMaxStringBytes) {
      ++counters_.messages_undeliverable;
      done(make_error(errc::limit_exceeded, "the delivery topic for endpoint " + e.id() +
                                                " would be " + std::to_string(topic_bytes) +
                                                " bytes, over the MQTT limit of " +
                                                std::to_string(mqtt::kMaxStringBytes) +
                                                ": send fewer or shorter properties"));
      return;
    }
  }
  const std::int64_t now = now_unix_ms();
  auto in = std::make_shared<Ingested>();
  std::vector<store::Target> targets;
  targets.reserve(matches.size());
  in->expires_at_ms.reserve(matches.size());
  for (const auto& match : matches) {
    std::int64_t ttl =
        match.ttl_secs != 0 ? static_cast<std::int64_t>(match.ttl_secs) : default_ttl_secs_;
    std::int64_t expires = ttl < 0 ? 0 : now + ttl * 1000;
    targets.push_back(store::Target{store::QueueKey{match.endpoint.id(), match.priority}, expires});
    in->expires_at_ms.push_back(expires);
  }
  in->sent_early.assign(matches.size(), 0);
  in->matches = std::move(matches);
  in->message = std::make_shared<const Message>(std::move(m));
  std::string bytes = encode_message(*in->message);
  auto on_commit = [weak = weak_from_this(), inbox = commits_, in,
                    done = std::move(done)](Result<std::vector<std::uint64_t>> r) mutable {
    inbox->post([weak, in = std::move(in), done = std::move(done), r = std::move(r)] {
      auto self = weak.lock();
      if (!self) return;
      self->committed(*in, r);
      done(r ? Status{} : Status(r.error()));
    });
  };
  // Handed to the store together once this turn of the event loop is over: every publish read
  // in it (from every client) goes into one group commit, and the writer wakes once, instead
  // of waking at the first publish and committing it alone.
  if (appends_.empty()) {
    asio::post(io_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->store_appends();
    });
  }
  appends_.push_back(store::MessageStore::AppendRequest{std::move(bytes), std::move(targets),
                                                        std::move(on_commit), can_wait});
  ingested_.push_back(std::move(in));
}

void Hub::store_appends() {
  auto placements = store_.append_all(std::exchange(appends_, {}));
  auto ingested = std::exchange(ingested_, {});
  // A module input gets an entry while its commit is under way rather than after it. Nothing
  // of at-least-once is given up: the publisher's PUBACK still waits for the commit, so should
  // the commit never happen (a crash, a failed write) the publisher sends the message again,
  // and the module at worst sees it twice — as it may after any lost PUBACK. The sequence
  // number is final (never given twice, MessageStore::Placement), so the module's PUBACK
  // deletes this entry and no other, in the same commit or a later one. $upstream waits for the
  // commit: the cloud deduplicates by queue position, which a crash before the commit would
  // give to another message after the restart.
  for (std::size_t i = 0; i < placements.size(); ++i) {
    if (!placements[i].expected) continue;
    Ingested& in = *ingested[i];
    for (std::size_t j = 0; j < in.matches.size(); ++j) {
      const auto& match = in.matches[j];
      if (match.endpoint.kind != routing::Endpoint::Kind::module_input) continue;
      const std::uint64_t seq = placements[i].seqs[j];
      if (endpoint(match.endpoint)
              ->appending(match.priority, seq, in.expires_at_ms[j], in.message)) {
        in.sent_early[j] = seq;
      }
    }
  }
}

void Hub::committed(Ingested& in, const Result<std::vector<std::uint64_t>>& r) {
  for (std::size_t j = 0; j < in.matches.size(); ++j) {
    const auto& match = in.matches[j];
    if (r) {
      endpoint(match.endpoint)->appended(match.priority, (*r)[j], in.expires_at_ms[j], in.message);
    } else if (in.sent_early[j] != 0) {
      endpoint(match.endpoint)->append_failed(match.priority, in.sent_early[j]);
    }
  }
}

void Hub::CommitInbox::post(std::function<void()> handler) {
  bool first = false;
  {
    std::lock_guard lock(mu_);
    first = ready_.empty();
    ready_.push_back(std::move(handler));
  }
  // One hand-off to the hub thread per group commit, not one per message.
  if (first) {
    asio::post(io_, [self = shared_from_this()] {
      std::vector<std::function<void()>> ready;
      {
        std::lock_guard lock(self->mu_);
        ready.swap(self->ready_);
      }
      for (auto& committed : ready) committed();
    });
  }
}

void Hub::dead_letter(const std::string& endpoint_id, const Message& m, const std::string& reason) {
  const std::uint64_t n = ++counters_.messages_dead_lettered;
  const std::string key =
      endpoint_id + "/" + std::to_string(now_unix_ms()) + "-" + std::to_string(n);
  log::error("hub", "endpoint={} message dead-lettered as {}/{}: {}", endpoint_id, kDeadLetterTable,
             key, reason);
  keep_dead_letter(key, endpoint_id, reason, encode_message(m));
}

void Hub::keep_dead_letter(const std::string& key, const std::string& endpoint_id,
                           const std::string& reason, const std::string& bytes) {
  const std::int64_t now = now_unix_ms();
  nlohmann::json record{{"endpoint", endpoint_id},
                        {"reason", reason},
                        {"atMs", now},
                        {"message", crypto::base64_encode(bytes)}};
  store_.put(kDeadLetterTable, key, dump_json(record), [key](Status s) {
    if (!s) log::error("hub", "dead letter {} not stored: {}", key, s.error().to_string());
  });
  dead_letters_.emplace(now, key);
  const std::uint32_t cap = config_.store.max_dead_letters;
  while (cap != 0 && dead_letters_.size() > cap) {
    const auto oldest = dead_letters_.begin();
    log::warn("hub", "dead letter {} dropped: more than store.max_dead_letters ({}) are kept",
              oldest->second, cap);
    store_.erase(kDeadLetterTable, oldest->second, [key = oldest->second](Status s) {
      if (!s) log::error("hub", "dead letter {} not dropped: {}", key, s.error().to_string());
    });
    dead_letters_.erase(oldest);
    ++counters_.dead_letters_dropped;
  }
}

void Hub::load_dead_letters() {
  // At start only (a synchronous read of at most store.max_dead_letters small records, unless
  // the cap was lowered): the next dead letter trims the table to the cap.
  auto rows = store_.list(kDeadLetterTable);
  if (!rows) {
    log::error("hub", "cannot list dead letters: {}", rows.error().to_string());
    return;
  }
  for (const auto& [key, value] : *rows) {
    auto record = nlohmann::json::parse(value, nullptr, false);
    const std::int64_t at_ms = record.is_object() ? record.value("atMs", std::int64_t{0}) : 0;
    dead_letters_.emplace(at_ms, key);
  }
}

void Hub::list_dead_letters(net::HttpRespond respond) {
  // After pending writes commit (a dead letter just put is listed), on the store thread: the
  // event loop never waits for the disk.
  store_.when_committed([&store = store_, &io = io_, weak = weak_from_this(),
                         respond = std::move(respond)](Status) mutable {
    auto rows = store.list(kDeadLetterTable);
    asio::post(io, [weak, respond = std::move(respond), rows = std::move(rows)] {
      if (!weak.lock()) return;
      if (!rows) {
        respond(error_response(rows.error()));
        return;
      }
      nlohmann::json list = nlohmann::json::array();
      for (const auto& [key, value] : *rows) {
        if (list.size() >= kMaxDeadLettersListed) break;
        auto record = nlohmann::json::parse(value, nullptr, false);
        nlohmann::json item{{"key", key}};
        if (record.is_object()) {
          item["endpoint"] = record.value("endpoint", "");
          item["reason"] = record.value("reason", "");
          item["atMs"] = record.value("atMs", std::int64_t{0});
          auto bytes = crypto::base64_decode(record.value("message", ""));
          item["messageBytes"] = bytes ? bytes->size() : 0;
          if (bytes) {
            if (auto m = decode_message(*bytes); m) {
              auto id = m->system.get(sysprop::kMessageId);
              if (id) item["messageId"] = std::string(*id);
            }
          }
        }
        list.push_back(std::move(item));
      }
      respond(json_response(200, {{"total", rows->size()}, {"deadLetters", std::move(list)}}));
    });
  });
}

void Hub::register_session(const std::string& client_id, const std::shared_ptr<Session>& session) {
  // Closing the previous session unregisters it, which erases its map entry: look the slot up
  // again afterwards instead of holding a reference into the map across close().
  if (auto it = sessions_.find(client_id); it != sessions_.end()) {
    if (auto previous = it->second.lock(); previous && previous != session) {
      previous->close("taken over by a new connection with the same client id", true);
    }
  }
  sessions_[client_id] = session;
  ++counters_.connections_total;
}

void Hub::unregister_session(const std::string& client_id, const Session* session) {
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return;
  auto current = it->second.lock();
  if (!current || current.get() == session) sessions_.erase(it);
}

void Hub::attach_module(const std::string& module_id, const std::shared_ptr<Consumer>& consumer) {
  module_consumers_.emplace(module_id, consumer);
  for (auto& [id, ep] : endpoints_) {
    if (ep->endpoint().kind == routing::Endpoint::Kind::module_input &&
        ep->endpoint().module == module_id) {
      ep->attach(consumer);
    }
  }
}

void Hub::detach_module(const std::string& module_id, const Consumer* consumer) {
  auto range = module_consumers_.equal_range(module_id);
  for (auto it = range.first; it != range.second;) {
    auto c = it->second.lock();
    if (!c || c.get() == consumer) {
      it = module_consumers_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [id, ep] : endpoints_) ep->detach(consumer);
}

bool Hub::accept_connection(const std::string& address) {
  const auto& m = config_.mqtt;
  auto refuse = [&](std::uint64_t& counter, const char* setting, std::size_t limit) {
    ++counters_.connections_refused;
    ++counter;
    constexpr auto kRefusalLogInterval = std::chrono::seconds(10);
    auto& entry = refusal_log_[setting];
    const auto now = std::chrono::steady_clock::now();
    if (entry.last != std::chrono::steady_clock::time_point{} &&
        now - entry.last < kRefusalLogInterval) {
      ++entry.unlogged;
      return false;
    }
    log::warn(
        "hub",
        "connection from {} refused: mqtt.{}={} reached ({} more refused since the last line)",
        address, setting, limit, entry.unlogged);
    entry = RefusalLog{now, 0};
    return false;
  };
  if (connections_ >= m.max_connections) {
    return refuse(counters_.limits.max_connections, "max_connections", m.max_connections);
  }
  if (unauthenticated_ >= m.max_unauthenticated_connections) {
    return refuse(counters_.limits.max_unauthenticated_connections,
                  "max_unauthenticated_connections", m.max_unauthenticated_connections);
  }
  auto& from_address = unauthenticated_by_address_[address];
  if (from_address >= m.max_unauthenticated_per_address) {
    return refuse(counters_.limits.max_unauthenticated_per_address,
                  "max_unauthenticated_per_address", m.max_unauthenticated_per_address);
  }
  ++from_address;
  ++unauthenticated_;
  ++connections_;
  return true;
}

void Hub::connection_authenticated(const std::string& address) {
  release_unauthenticated_slot(address);
}

void Hub::release_unauthenticated_slot(const std::string& address) {
  if (unauthenticated_ > 0) --unauthenticated_;
  auto it = unauthenticated_by_address_.find(address);
  if (it != unauthenticated_by_address_.end() && --it->second == 0) {
    unauthenticated_by_address_.erase(it);
  }
}

void Hub::connection_closed(const std::string& address, bool authenticated) {
  if (!authenticated) release_unauthenticated_slot(address);
  if (connections_ > 0) --connections_;
}

void Hub::load_session(const std::string& client_id,
                       std::function<void(std::optional<std::string>)> done) {
  // get() sees committed data only, and the previous connection's SUBSCRIBE (or a clean
  // session's erase) may still wait for its group commit: a quick reconnect would then find
  // no session. Read once the pending writes have landed, on the store thread.
  std::weak_ptr<Hub> weak = weak_from_this();
  store_.when_committed([weak, &io = io_, &store = store_, client_id,
                         done = std::move(done)](Status flushed) mutable {
    if (!flushed) {
      log::warn("hub", "store flush before reading session {} failed: {}", client_id,
                flushed.error().to_string());
    }
    std::optional<std::string> session;
    if (auto r = store.get(kSessionsTable, client_id); r) {
      session = std::move(*r);
    } else {
      log::error("hub", "cannot read session {}: {}", client_id, r.error().to_string());
    }
    asio::post(io, [weak, done = std::move(done), session = std::move(session)]() mutable {
      if (weak.lock()) done(std::move(session));
    });
  });
}

void Hub::save_session(const std::string& client_id, std::string subscriptions_json,
                       std::function<void(Status)> done) {
  std::weak_ptr<Hub> weak = weak_from_this();
  store_.put(kSessionsTable, client_id, std::move(subscriptions_json),
             [weak, &io = io_, client_id, done = std::move(done)](Status s) mutable {
               if (!s) {
                 log::error("hub", "cannot save session {}: {}", client_id, s.error().to_string());
               }
               if (!done) return;
               asio::post(io, [weak, done = std::move(done), s = std::move(s)] {
                 if (weak.lock()) done(s);
               });
             });
}

void Hub::erase_session(const std::string& client_id) {
  store_.erase(kSessionsTable, client_id, [](Status) {});
}

void Hub::schedule_expiry(bool more_waiting) {
  if (more_waiting) {
    expiry_timer_.expires_after(std::chrono::milliseconds(10));
  } else {
    expiry_timer_.expires_after(std::chrono::seconds(config_.store.expire_interval_secs));
  }
  expiry_timer_.async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopping_) return;
    self->store_.expire([weak, &io = self->io_](Result<std::uint64_t> r) {
      asio::post(io, [weak, r = std::move(r)] {
        auto s = weak.lock();
        if (!s) return;
        if (r && *r > 0) log::info("hub", "dropped {} expired messages", *r);
        if (!r) log::error("hub", "expiring messages failed: {}", r.error().to_string());
        // A full batch means more may be waiting: go on soon, yielding to other work between.
        s->schedule_expiry(r && *r >= store::kMaxExpirePerCall);
      });
    });
  });
}

nlohmann::json Hub::status() const {
  auto st = store_.stats();
  nlohmann::json endpoints = nlohmann::json::object();
  std::uint64_t dead_lettered = counters_.messages_dead_lettered;
  for (const auto& [id, ep] : endpoints_) {
    const auto& c = ep->counters();
    dead_lettered += c.dead_lettered;
    endpoints[id] = {{"attached", ep->attached()},
                     {"inflight", ep->inflight()},
                     {"delivered", c.delivered},
                     {"acked", c.acked},
                     {"deadLettered", c.dead_lettered},
                     {"readFailures", c.read_failures},
                     {"failedDeliveries", c.failed_deliveries},
                     {"ackFailures", c.ack_failures}};
  }
  nlohmann::json out{
      {"deviceId", config_.device_id},
      {"mqtt", {{"tlsPort", tls_port_}, {"plainPort", plain_port_}, {"connections", connections_}}},
      {"counters",
       {{"connectionsTotal", counters_.connections_total},
        {"connectionsRefused", counters_.connections_refused},
        {"protocolErrors", counters_.protocol_errors},
        {"messagesReceived", counters_.messages_received},
        {"messagesUnrouted", counters_.messages_unrouted},
        {"messagesRejected", counters_.messages_rejected},
        {"messagesOversize", counters_.messages_oversize},
        {"slowConsumersClosed", counters_.slow_consumers_closed},
        {"sessionsFailed", counters_.sessions_failed},
        {"messagesUndeliverable", counters_.messages_undeliverable},
        {"messagesDeadLettered", dead_lettered},
        // In the dead-letter table now, and the oldest dropped to keep it under the cap.
        {"deadLetters", dead_letters_.size()},
        {"deadLettersDropped", counters_.dead_letters_dropped},
        // The store drops expired entries (periodically and when reading) and counts each once.
        {"messagesExpired", st.expired_total}}},
      // Times a client reached each named limit, by setting.
      {"limitsReached",
       {{"mqtt.max_connections", counters_.limits.max_connections},
        {"mqtt.max_unauthenticated_connections", counters_.limits.max_unauthenticated_connections},
        {"mqtt.max_unauthenticated_per_address", counters_.limits.max_unauthenticated_per_address},
        {"mqtt.max_connect_bytes", counters_.limits.max_connect_bytes},
        {"mqtt.connect_timeout_secs", counters_.limits.connect_timeout_secs},
        {"mqtt.max_subscriptions", counters_.limits.max_subscriptions},
        {"mqtt.max_topic_filter_bytes", counters_.limits.max_topic_filter_bytes},
        {"mqtt.max_properties", counters_.limits.max_properties},
        {"mqtt.max_property_bytes", counters_.limits.max_property_bytes},
        {"mqtt.max_inflight_in", counters_.limits.max_inflight_in}}},
      {"unauthenticatedConnections", unauthenticated_},
      {"store",
       {{"healthy", st.healthy},
        {"refusing", st.refusing},
        {"refusalReason", st.refusal_reason},
        {"transientFailuresTotal", st.transient_failures_total},
        {"refusedWritesTotal", st.refused_writes_total},
        {"storedBytes", st.stored_bytes},
        {"storedMessages", st.stored_messages},
        {"appendedTotal", st.appended_total},
        {"ackedTotal", st.acked_total},
        {"commitsTotal", st.commits_total},
        {"rejectedFullTotal", st.rejected_full_total}}},
      {"endpoints", endpoints},
      {"routes", router_.routes().size()},
      {"methods", {{"inFlight", methods_.in_flight()}, {"waiting", methods_.waiting()}}},
  };
  if (status_extension_) out.update(status_extension_());
  return out;
}

void Hub::handle_management(const net::HttpRequest& request, net::HttpRespond respond) {
  const std::string path = net::http_path(request.target);
  const std::string prefix = "/identities";
  if (path == "/status" && request.method == "GET") {
    // Queue lengths come from the store thread; everything else is read here.
    auto snapshot = std::make_shared<nlohmann::json>(status());
    store_.queues([snapshot, respond, &io = io_](Result<std::vector<store::QueueInfo>> r) {
      asio::post(io, [snapshot, respond, r = std::move(r)] {
        nlohmann::json queues = nlohmann::json::array();
        if (r) {
          for (const auto& q : *r) queues.push_back(queue_status(q));
        }
        (*snapshot)["queues"] = queues;
        respond(json_response(200, *snapshot));
      });
    });
    return;
  }
  if (path == "/deadletters" && request.method == "GET") {
    list_dead_letters(std::move(respond));
    return;
  }
  if (path == prefix && request.method == "GET") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& id : identities_.list()) {
      list.push_back({{"moduleId", id.module_id}, {"generationId", id.generation_id}});
    }
    respond(json_response(200, list));
    return;
  }
  if (path == prefix && request.method == "POST") {
    auto body = nlohmann::json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("moduleId") ||
        !body["moduleId"].is_string()) {
      respond(json_response(400, {{"error", "body must be {\"moduleId\": \"<name>\"}"}}));
      return;
    }
    auto module = body["moduleId"].get<std::string>();
    identities_.create(module, [this, respond, weak = weak_from_this()](Result<Identity> r) {
      asio::post(io_, [this, weak, respond, r = std::move(r)] {
        if (!weak.lock()) return;
        if (!r) {
          respond(error_response(r.error()));
          return;
        }
        respond(json_response(200, {{"moduleId", r->module_id},
                                    {"deviceId", config_.device_id},
                                    {"generationId", r->generation_id},
                                    {"connectionString", connection_string(*r, config_.device_id,
                                                                           config_.iothub_hostname,
                                                                           config_.hostname)}}));
      });
    });
    return;
  }
  if (path.rfind(prefix + "/", 0) == 0) {
    std::string rest = path.substr(prefix.size() + 1);
    bool token = rest.size() > 6 && rest.substr(rest.size() - 6) == "/token";
    std::string module = token ? rest.substr(0, rest.size() - 6) : rest;
    auto id = identities_.find(module);
    if (!id) {
      respond(json_response(404, {{"error", "no identity named '" + module + "'"}}));
      return;
    }
    if (token && request.method == "GET") {
      std::string ttl_text = net::http_query_param(request.target, "ttl");
      std::int64_t ttl = 3600;
      if (!ttl_text.empty()) {
        try {
          ttl = std::stoll(ttl_text);
        } catch (...) {
          ttl = -1;
        }
        if (ttl <= 0) {
          respond(json_response(400, {{"error", "ttl must be a positive number of seconds"}}));
          return;
        }
        if (const auto max = config_.auth.max_token_lifetime_secs; max > 0 && ttl > max) {
          respond(json_response(
              400, {{"error", "ttl may be at most " + std::to_string(max) +
                                  " seconds (auth.max_token_lifetime_secs): a longer-lived "
                                  "token would be refused"}}));
          return;
        }
      }
      auto resource =
          config_.iothub_hostname + "/devices/" + config_.device_id + "/modules/" + module;
      auto t = crypto::make_sas_token(resource, id->primary_key, now_unix_s() + ttl);
      if (!t) {
        respond(error_response(t.error()));
        return;
      }
      respond(json_response(200, {{"token", *t}, {"expiresInSecs", ttl}}));
      return;
    }
    if (!token && request.method == "DELETE") {
      remove_identity(module, [this, respond, weak = weak_from_this()](Status s) {
        asio::post(io_, [weak, respond, s = std::move(s)] {
          if (!weak.lock()) return;
          respond(s ? net::HttpResponse{204, "", "application/json"} : error_response(s.error()));
        });
      });
      return;
    }
  }
  respond(json_response(
      404, {{"error", request.method + " " + path + " is not part of the management API"}}));
}

}  // namespace cairn::hub
