#include "hub/upstream.hpp"

#include <random>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "hub/iothub_topics.hpp"
#include "net/spawn.hpp"

namespace cairn::hub {
namespace {

constexpr const char* kApiVersion = "2021-04-12";
// The store's key-value table of the upstream link, and the row holding the store's id.
constexpr const char* kUpstreamTable = "upstream";
constexpr const char* kStoreIdKey = "storeId";
// 64 random bits: two stores (two installs) pick the same id with a chance of about n²/2^65.
constexpr std::size_t kStoreIdBytes = 8;
// "YYYYMMDDhhmmssmmm", the digits of an enqueuedTime as the hub stamps it.
constexpr std::size_t kEnqueuedDigits = 17;
constexpr auto kRenewalDrain = std::chrono::seconds(HubConfig::kRenewalDrainSecs);
constexpr auto kReportedRetry = std::chrono::seconds(5);

std::string iso_now() { return format_iso8601(now_unix_ms()); }

}  // namespace

struct Upstream::Link {
  Link(asio::io_context& io, std::string id)
      : client_id(std::move(id)), wake(io), outbox_signal(io), reported_retry(io) {}

  enum class State { idle, connecting, online, backoff };
  static const char* name(State s) {
    switch (s) {
      case State::idle:
        return "idle";
      case State::connecting:
        return "connecting";
      case State::online:
        return "online";
      case State::backoff:
        return "backoff";
    }
    return "?";
  }

  std::string client_id;
  State state = State::idle;
  std::string since = iso_now();
  std::string last_error;
  int attempt = 0;
  std::uint64_t connects = 0;
  std::shared_ptr<net::MqttClient> client;  // while online
  bool closed = true;                       // the current connection ended
  asio::steady_timer wake;                  // back-off, renewal deadline, close notification
  asio::steady_timer outbox_signal;         // the pump sleeps on it while the outbox is empty
  asio::steady_timer reported_retry;
  std::deque<Outgoing> outbox;  // messages waiting for the connection or a publish slot
  // The delivery round of this identity's queue: bumped when the queue is asked to deliver
  // again, so what the earlier round handed over is neither sent nor acknowledged.
  std::uint64_t generation = 0;
  // The connection whose publishes `unacked`, `lost_messages` and `shared_sent` count:
  // `connects` while it is up, 0 once it is down. PUBACKs and failures of an earlier
  // connection, which can arrive after it went down (a token renewal drains with a deadline,
  // a close fails what is left), count for nothing: that connection's messages were already
  // delivered again, or acknowledged, when it went down.
  std::uint64_t connection = 0;
  std::size_t unacked = 0;      // published on `connection`, PUBACK outstanding
  bool lost_messages = false;   // a publish on `connection` failed
  bool shared_sent = false;     // a message of the shared queue was published on `connection`
  std::uint64_t published = 0;  // PUBLISH packets of messages, re-sends included
  std::uint64_t acked = 0;      // messages the cloud acknowledged
  std::map<std::string, std::function<void(int, std::string)>> requests;  // twin, by $rid
  std::uint64_t next_rid = 0;
  bool sending_reported = false;
  bool retired = false;  // the identity is gone: close and never reconnect
  bool methods = false;  // subscribed to method requests on the current connection

  void set_state(State s) {
    if (s != state) since = iso_now();
    state = s;
  }
};

Upstream::Upstream(asio::io_context& io, const HubConfig& config, Hub& hub, TwinCache& twins,
                   std::string store_id)
    : io_(io),
      config_(config),
      hub_(hub),
      twins_(twins),
      store_id_(std::move(store_id)),
      offline_since_(std::chrono::steady_clock::now()) {}

Result<std::string> Upstream::load_store_id(store::MessageStore& store) {
  auto stored = store.get(kUpstreamTable, kStoreIdKey);
  if (!stored) return std::move(stored).error();
  if (*stored && (*stored)->size() == 2 * kStoreIdBytes) return std::move(**stored);
  std::string id = crypto::hex_encode(crypto::random_bytes(kStoreIdBytes));
  // Committed before any key is made from it: a key sent with an id that a crash then lost
  // would not match the key of its re-send.
  Status put;
  store.put(kUpstreamTable, kStoreIdKey, id, [&put](Status s) { put = std::move(s); });
  if (auto flushed = store.flush(); !flushed) return std::move(flushed).error();
  if (!put) return std::move(put).error();
  log::info("upstream", "new store id {} for the dedupe keys of messages to the cloud", id);
  return id;
}

std::string Upstream::dedupe_key(std::string_view store_id, QueueKind queue, QueuePosition at,
                                 const Message& m) {
  // "-i": keys of per-identity queues never equal those of the shared queue (which every key
  // sent before per-identity queues came from), whose store id is followed by '.'.
  std::string key = fmt::format("{}{}.{}.{}", store_id, queue == QueueKind::shared ? "" : "-i",
                                at.priority, at.seq);
  if (auto enqueued = m.system.get(sysprop::kEnqueuedTime)) {
    key.push_back('.');
    std::size_t digits = 0;
    for (char c : *enqueued) {
      if (c < '0' || c > '9') continue;
      if (++digits > kEnqueuedDigits) break;
      key.push_back(c);
    }
  }
  return key;
}

Upstream::~Upstream() = default;

void Upstream::start() {
  log::info("upstream", "cloud {}:{} (token audience {}, tokens valid {}s)",
            config_.upstream.hostname, config_.upstream.port, config_.upstream.audience_host(),
            config_.upstream.token_ttl_secs);
  hub_.attach_upstream(shared_from_this());
  for (const auto& id : twins_.clients_with_pending()) link(id);
}

void Upstream::stop() {
  stopping_ = true;
  hub_.detach_upstream(this);
  for (auto& [id, l] : links_) {
    l->wake.cancel();
    l->outbox_signal.cancel();
    l->reported_retry.cancel();
    if (l->client) l->client->close();
  }
}

Upstream::Link& Upstream::link(const std::string& client_id) {
  auto it = links_.find(client_id);
  if (it != links_.end() && !it->second->retired) return *it->second;
  auto l = std::make_shared<Link>(io_, client_id);
  links_.insert_or_assign(client_id, l);
  if (!stopping_) spawn_run(l);
  return *l;
}

void Upstream::spawn_run(const std::shared_ptr<Link>& l) {
  std::weak_ptr<Upstream> weak = weak_from_this();
  asio::co_spawn(
      io_, run(l),
      net::on_coroutine_exit("upstream link " + l->client_id, [weak, l](const std::string& why) {
        auto self = weak.lock();
        if (!self) return;
        l->last_error = "internal error: " + why;
        l->closed = true;
        if (auto client = std::exchange(l->client, nullptr)) {
          client->close();
          self->on_link_down(*l, l->last_error);
        }
        if (self->stopping_ || l->retired) {
          l->set_state(Link::State::idle);
          return;
        }
        ++l->attempt;
        l->set_state(Link::State::backoff);
        l->wake.expires_after(self->backoff(l->attempt));
        l->wake.async_wait([weak, l](error_code) {
          if (auto me = weak.lock(); me && !me->stopping_) me->spawn_run(l);
        });
      }));
}

std::chrono::milliseconds Upstream::backoff(int attempt) {
  static thread_local std::minstd_rand rng(std::random_device{}());
  const std::int64_t cap = static_cast<std::int64_t>(config_.upstream.max_backoff_secs) * 1000;
  std::int64_t base = config_.upstream.min_backoff_ms;
  for (int i = 1; i < attempt && base < cap; ++i) base *= 2;
  base = std::min(base, cap);
  // Jitter: a fleet that lost the same cloud must not come back in lockstep. Half the wait is
  // fixed, the other half random, so the total never exceeds the cap.
  std::uniform_int_distribution<std::int64_t> jitter(0, base - base / 2);
  return std::chrono::milliseconds(base / 2 + jitter(rng));
}

asio::awaitable<void> Upstream::run(std::shared_ptr<Link> l) {
  auto self = shared_from_this();
  const auto& u = config_.upstream;
  while (!stopping_ && !l->retired) {
    l->set_state(Link::State::connecting);
    const auto ttl = std::chrono::seconds(u.token_ttl_secs);
    std::string resource = u.audience_host() + "/devices/" + config_.device_id;
    if (auto slash = l->client_id.find('/'); slash != std::string::npos) {
      resource += "/modules/" + l->client_id.substr(slash + 1);
    }
    auto token = crypto::make_sas_token(resource, u.device_key, now_unix_s() + ttl.count());
    Result<std::shared_ptr<net::MqttClient>> client =
        token ? net::MqttClient::create(io_.get_executor(),
                                        [&] {
                                          net::MqttClientOptions o;
                                          o.host = u.hostname;
                                          o.port = u.port;
                                          o.tls = true;
                                          o.ca_file = u.ca_file;
                                          o.client_id = l->client_id;
                                          o.username = u.audience_host() + "/" + l->client_id +
                                                       "/?api-version=" + kApiVersion;
                                          o.password = *token;
                                          o.clean_session = true;
                                          o.keep_alive_s = 60;
                                          o.max_packet_size = 1024 * 1024;
                                          return o;
                                        }())
              : Result<std::shared_ptr<net::MqttClient>>(token.error());
    bool up = false;
    if (client) {
      std::weak_ptr<Link> weak_link = l;
      std::weak_ptr<Upstream> weak_self = self;
      (*client)->set_message_handler([weak_self, weak_link](mqtt::Publish p) {
        auto s = weak_self.lock();
        auto link = weak_link.lock();
        if (s && link) s->on_cloud_message(*link, std::move(p));
      });
      (*client)->set_close_handler([weak_link](const Error& why) {
        if (auto link = weak_link.lock()) {
          link->closed = true;
          if (why.code != errc::cancelled) link->last_error = why.message;
          link->wake.cancel();
          link->outbox_signal.cancel();
        }
      });
      auto connack = co_await (*client)->connect();
      if (connack) {
        std::vector<mqtt::Subscription> subs;
        for (auto filter : kCloudTopicFilters) subs.push_back({std::string(filter), 0});
        // Method requests only for an identity whose module listens for them (as edgeHub):
        // the cloud answers a call to any other 404 DeviceNotOnline.
        const bool methods = method_listeners_.contains(l->client_id);
        if (methods) subs.push_back({std::string(kCloudMethodsFilter), 0});
        auto granted = co_await (*client)->subscribe(std::move(subs));
        if (granted) {
          up = true;
          l->methods = methods;
        } else {
          l->last_error = "subscribe failed: " + granted.error().message;
          (*client)->close();
        }
      } else {
        l->last_error = connack.error().message;
      }
    } else {
      l->last_error = client.error().message;
    }
    if (stopping_ || l->retired) {
      if (up) (*client)->close();  // connected meanwhile, and nobody else would close it
      break;
    }
    if (!up) {
      ++l->attempt;
      auto delay = backoff(l->attempt);
      log::warn("upstream", "[{}] cannot connect to {}:{}: {}; retry in {} ms", l->client_id,
                u.hostname, u.port, l->last_error, delay.count());
      l->set_state(Link::State::backoff);
      l->wake.expires_after(delay);
      error_code ec;
      co_await l->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }

    l->client = *client;
    l->closed = false;
    l->attempt = 0;
    ++l->connects;
    l->last_error.clear();
    l->set_state(Link::State::online);
    on_link_up(*l);
    // A module that subscribed to methods while this connection was being set up.
    update_methods_subscription(l->client_id);
    l->unacked = 0;
    l->lost_messages = false;
    l->shared_sent = false;
    l->connection = l->connects;
    asio::co_spawn(io_, pump(l, *client),
                   net::on_coroutine_exit("upstream pump " + l->client_id,
                                          [pumped = *client](const std::string&) {
                                            // The link loop sees the close and reconnects;
                                            // unacknowledged messages are delivered again.
                                            pumped->close();
                                          }));

    // Online until the connection drops or the token is due for renewal.
    const auto renew_at = std::chrono::steady_clock::now() + ttl * 8 / 10;
    while (!l->closed && !stopping_ && !l->retired && std::chrono::steady_clock::now() < renew_at) {
      l->wake.expires_at(renew_at);
      error_code ec;
      co_await l->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    const bool renewing = !l->closed && !stopping_ && !l->retired;
    if (l->retired && !l->closed) {
      (void)co_await (*client)->disconnect(kRenewalDrain);
    } else if (renewing) {
      log::info("upstream", "[{}] renewing the SAS token (reconnect)", l->client_id);
      (void)co_await (*client)->disconnect(kRenewalDrain);
    }
    l->client.reset();
    l->methods = false;
    on_link_down(*l, renewing ? "token renewal" : l->retired ? "identity removed" : l->last_error);
    if (stopping_ || l->retired) break;
    if (!renewing) {
      ++reconnects_;
      ++l->attempt;
      l->set_state(Link::State::backoff);
      l->wake.expires_after(backoff(l->attempt));
      error_code ec;
      co_await l->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  l->set_state(Link::State::idle);
}

asio::awaitable<void> Upstream::pump(std::shared_ptr<Link> l,
                                     std::shared_ptr<net::MqttClient> client) {
  auto self = shared_from_this();
  while (!stopping_ && !l->closed && client->connected()) {
    if (l->outbox.empty()) {
      l->outbox_signal.expires_at(asio::steady_timer::time_point::max());
      error_code ec;
      co_await l->outbox_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    Outgoing item = std::move(l->outbox.front());
    l->outbox.pop_front();
    if (!current_round(*l, item)) continue;  // its queue delivers it again
    if (item.expires_at_ms != 0 && item.expires_at_ms <= now_unix_ms()) {
      // Its TTL ran out while it waited here for the link: the store drops it (and counts it
      // as expired, once) if it has not already; it must not reach the cloud.
      ++expired_unsent_;
      item.on_ack();
      continue;
    }
    if (auto encodable = mqtt::check_encodable(mqtt::Publish{item.topic, {}, 1, false, false, 1});
        !encodable) {
      // A poison message (stored before ingest refused such topics): it can never be sent,
      // and must not stop the link for everything behind it.
      Message poison;
      poison.body = std::move(item.payload);
      hub_.dead_letter("$upstream", poison,
                       "cannot be encoded for " + l->client_id + ": " + encodable.error().message);
      item.on_ack();
      continue;
    }
    const std::uint64_t connection = l->connection;
    ++l->unacked;
    ++l->published;
    if (item.shared) l->shared_sent = true;
    std::weak_ptr<Upstream> weak_self = self;
    std::weak_ptr<Link> weak_link = l;
    const bool shared = item.shared;
    const std::uint64_t generation = item.generation;
    net::MqttClient::AckHandler on_puback = [weak_self, weak_link, on_ack = std::move(item.on_ack),
                                             shared, generation, connection](Status s) {
      auto me = weak_self.lock();
      auto link = weak_link.lock();
      if (!me || !link || connection != link->connection) return;
      if (link->unacked > 0) --link->unacked;
      if (!s) {
        link->lost_messages = true;
        return;
      }
      ++me->messages_sent_;
      ++link->acked;
      if (generation == (shared ? me->shared_generation_ : link->generation)) on_ack();
    };
    auto queued = co_await client->async_publish(std::move(item.topic), std::move(item.payload), 1,
                                                 false, std::move(on_puback));
    if (!queued) {
      // Not sent, and its handler is never called: it counts as lost on this connection, whose
      // end delivers it again. If the connection already ended without counting it, its queue
      // must deliver it again now, or it would hold a place in the window for good.
      if (connection == l->connection) {
        if (l->unacked > 0) --l->unacked;
        l->lost_messages = true;
      } else if (shared && generation == shared_generation_) {
        redeliver_shared();
      } else if (!shared && generation == l->generation) {
        redeliver(*l);
      }
      break;
    }
  }
}

bool Upstream::deliver(const std::string& input, const Message& m, QueuePosition at, bool /*dup*/,
                       std::function<void()> on_ack) {
  if (stopping_) return false;
  // A per-identity queue holds its sender's messages only; the shared one anybody's.
  const bool shared = input.empty();
  const std::string client_id = shared ? upstream_sender(m, config_.device_id) : input;
  if (forgotten_.contains(client_id)) {
    log::warn("upstream", "[{}] identity removed: a message waiting for the cloud dropped",
              client_id);
    asio::post(io_, std::move(on_ack));
    return true;
  }
  // The cloud stamps the sender and enqueue time from its own connection.
  std::string topic = upstream_events_topic(
      m, config_.device_id,
      dedupe_key(store_id_, shared ? QueueKind::shared : QueueKind::per_identity, at, m));
  Link& l = link(client_id);
  l.outbox.push_back(Outgoing{std::move(topic), m.body, std::move(on_ack),
                              shared ? shared_generation_ : l.generation, at.expires_at_ms,
                              shared});
  l.outbox_signal.cancel();
  return true;
}

bool Upstream::current_round(const Link& l, const Outgoing& item) const {
  return item.generation == (item.shared ? shared_generation_ : l.generation);
}

void Upstream::redeliver(Link& l) {
  // Everything of this identity not acknowledged comes again from its queue, in order: drop
  // what is waiting here so nothing is sent twice. The other identities' queues and links
  // are not touched.
  ++l.generation;
  std::erase_if(l.outbox, [](const Outgoing& item) { return !item.shared; });
  hub_.redeliver_upstream(
      this, routing::Endpoint{routing::Endpoint::Kind::upstream, "", l.client_id}.id());
}

void Upstream::redeliver_shared() {
  // The shared queue (of a store from before per-identity queues) has one window for every
  // identity: all its unacknowledged messages come again, on whichever link is theirs. Those
  // still waiting here are dropped; those in flight on a healthy link may reach the cloud twice,
  // which the dedupe key lets it recognise.
  ++shared_generation_;
  for (auto& [id, link] : links_) {
    std::erase_if(link->outbox, [](const Outgoing& item) { return item.shared; });
  }
  hub_.redeliver_upstream(this, "$upstream");
}

void Upstream::on_link_up(Link& l) {
  log::info("upstream", "[{}] connected to {}:{}", l.client_id, config_.upstream.hostname,
            config_.upstream.port);
  update_offline_clock();
  std::weak_ptr<Upstream> weak = weak_from_this();
  const std::string id = l.client_id;
  // The twin first: the module gets what it missed, then the reported patches made offline
  // go up in order.
  twins_.resync(id, [weak, id] {
    auto self = weak.lock();
    if (!self) return;
    if (auto it = self->links_.find(id); it != self->links_.end()) self->send_reported(*it->second);
  });
}

void Upstream::on_link_down(Link& l, const std::string& why) {
  log::info("upstream", "[{}] disconnected: {}", l.client_id, why.empty() ? "closed" : why);
  auto requests = std::move(l.requests);
  l.requests.clear();
  l.sending_reported = false;
  l.reported_retry.cancel();
  for (auto& [rid, done] : requests) done(503, "");
  update_offline_clock();
  const bool in_doubt = l.unacked > 0 || l.lost_messages;
  const bool shared = in_doubt && l.shared_sent;
  // What the ended connection still reports from here on counts for nothing.
  l.connection = 0;
  l.unacked = 0;
  l.lost_messages = false;
  l.shared_sent = false;
  if (in_doubt) {
    redeliver(l);
    if (shared) redeliver_shared();
  }
}

void Upstream::update_offline_clock() {
  const bool online_now = any_online();
  const auto now = std::chrono::steady_clock::now();
  if (online_now && !was_online_) {
    offline_total_ += now - offline_since_;
  } else if (!online_now && was_online_) {
    offline_since_ = now;
  }
  was_online_ = online_now;
}

bool Upstream::online(const std::string& client_id) const {
  auto it = links_.find(client_id);
  return it != links_.end() && it->second->state == Link::State::online;
}

bool Upstream::any_online() const {
  for (const auto& [id, l] : links_) {
    if (l->state == Link::State::online) return true;
  }
  return false;
}

double Upstream::offline_seconds() const {
  if (was_online_) return 0;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - offline_since_).count();
}

double Upstream::offline_total_seconds() const {
  auto total = offline_total_;
  if (!was_online_) total += std::chrono::steady_clock::now() - offline_since_;
  return std::chrono::duration<double>(total).count();
}

void Upstream::request(Link& l, const std::string& topic_prefix, std::string body,
                       std::function<void(int status, std::string body)> done) {
  if (!l.client || l.closed || !current(l)) {
    done(503, "");
    return;
  }
  const std::string rid = std::to_string(++l.next_rid);
  l.requests.emplace(rid, std::move(done));
  auto timer = std::make_shared<asio::steady_timer>(io_);
  timer->expires_after(std::chrono::seconds(config_.upstream.operation_timeout_secs));
  std::weak_ptr<Link> weak_link = links_.at(l.client_id);
  timer->async_wait([weak_link, rid, timer](error_code ec) {
    auto link = weak_link.lock();
    if (ec || !link) return;
    auto it = link->requests.find(rid);
    if (it == link->requests.end()) return;
    auto cb = std::move(it->second);
    link->requests.erase(it);
    cb(504, "");
  });
  auto client = l.client;
  asio::co_spawn(
      io_,
      [client, topic = topic_prefix + "?$rid=" + rid,
       body = std::move(body)]() mutable -> asio::awaitable<void> {
        (void)co_await client->async_publish(std::move(topic), std::move(body), 0);
      },
      net::on_coroutine_exit("upstream request " + l.client_id,
                             [client](const std::string&) { client->close(); }));
}

void Upstream::fetch_twin(const std::string& client_id,
                          std::function<void(Result<nlohmann::json>)> done) {
  auto it = links_.find(client_id);
  if (it == links_.end() || it->second->state != Link::State::online) {
    done(make_error(errc::unavailable, "no cloud connection for " + client_id));
    return;
  }
  request(*it->second, "$iothub/twin/GET/", "",
          [done = std::move(done), client_id](int status, std::string body) {
            if (status != 200) {
              done(make_error(errc::unavailable, "cloud answered " + std::to_string(status) +
                                                     " to the twin GET of " + client_id));
              return;
            }
            auto j = twin::parse_json(body);
            if (!j) {
              done(std::move(j).error());
              return;
            }
            done(std::move(*j));
          });
}

void Upstream::reported_pending(const std::string& client_id) {
  if (forgotten_.contains(client_id)) return;
  Link& l = link(client_id);
  send_reported(l);
}

void Upstream::send_reported(Link& l) {
  if (l.sending_reported || l.state != Link::State::online) return;
  auto patch = twins_.pending_reported(l.client_id);
  if (!patch) return;
  l.sending_reported = true;
  std::weak_ptr<Upstream> weak = weak_from_this();
  const std::string id = l.client_id;
  request(l, "$iothub/twin/PATCH/properties/reported/", twin::dump_json(*patch),
          [weak, id](int status, std::string body) {
            auto self = weak.lock();
            if (!self) return;
            auto it = self->links_.find(id);
            if (it == self->links_.end()) return;
            Link& link = *it->second;
            link.sending_reported = false;
            if (status == 200 || status == 204) {
              self->twins_.reported_sent(id);
              self->send_reported(link);
            } else if (status >= 400 && status < 500 && status != 429) {
              // The cloud will never take this patch; keeping it would block the ones after.
              log::error("upstream", "[{}] cloud refused a reported patch ({}): {}; dropped", id,
                         status, body);
              self->twins_.reported_sent(id);
              self->send_reported(link);
            } else if (link.state == Link::State::online) {
              link.reported_retry.expires_after(kReportedRetry);
              link.reported_retry.async_wait([weak, id](error_code ec) {
                auto s = weak.lock();
                if (ec || !s) return;
                if (auto l2 = s->links_.find(id); l2 != s->links_.end())
                  s->send_reported(*l2->second);
              });
            }
          });
}

void Upstream::on_cloud_message(Link& l, mqtt::Publish p) {
  if (!current(l)) return;  // a removed identity's connection, closing
  auto what = parse_cloud_topic(p.topic);
  if (!what) {
    log::debug("upstream", "[{}] ignoring cloud publish on '{}'", l.client_id, p.topic);
    return;
  }
  if (what->kind == CloudTopic::Kind::twin_response) {
    auto it = l.requests.find(what->rid);
    if (it == l.requests.end()) return;  // answered after its timeout
    auto done = std::move(it->second);
    l.requests.erase(it);
    done(what->status, std::move(p.payload));
    return;
  }
  if (what->kind == CloudTopic::Kind::desired_patch) {
    auto patch = twin::parse_json(p.payload);
    if (!patch || !patch->is_object()) {
      log::warn("upstream", "[{}] desired patch from the cloud is not a JSON object; resyncing",
                l.client_id);
      twins_.resync(l.client_id);
      return;
    }
    twins_.cloud_desired(l.client_id, *patch);
    return;
  }
  // A method request.
  const std::string rid = what->rid;
  MethodRequest req;
  req.method_name = what->method_name;
  if (!p.payload.empty()) {
    auto j = nlohmann::json::parse(p.payload, nullptr, false);
    req.payload = j.is_discarded() ? nlohmann::json(p.payload) : j;
  }
  // The cloud enforces the caller's timeout; locally wait as long as any caller may.
  req.response_timeout = kMaxResponseTimeout;
  std::weak_ptr<Link> weak_link = links_.at(l.client_id);
  std::weak_ptr<Upstream> weak_self = weak_from_this();
  hub_.invoke_method(
      l.client_id, std::move(req), [weak_self, weak_link, rid](Result<MethodResponse> r) {
        auto self = weak_self.lock();
        auto link = weak_link.lock();
        if (!self || !link || !link->client) return;
        int status = r ? r->status : method_error_status(r.error().code);
        std::string body = r ? (r->payload.is_null() ? std::string() : twin::dump_json(r->payload))
                             : dump_json(nlohmann::json{{"message", r.error().message}});
        auto client = link->client;
        asio::co_spawn(
            self->io_,
            [client, topic = "$iothub/methods/res/" + std::to_string(status) + "/?$rid=" + rid,
             body = std::move(body)]() mutable -> asio::awaitable<void> {
              (void)co_await client->async_publish(std::move(topic), std::move(body), 0);
            },
            net::on_coroutine_exit("upstream method response " + link->client_id,
                                   [client](const std::string&) { client->close(); }));
      });
}

void Upstream::connected(const Principal& who) {
  forgotten_.erase(who.client_id());
  link(who.client_id());
}

void Upstream::forget(const std::string& client_id) {
  forgotten_.insert(client_id);
  auto it = links_.find(client_id);
  if (it == links_.end()) return;
  auto l = it->second;
  links_.erase(it);
  l->retired = true;
  // Settled, not just dropped: the $upstream endpoint counts them in its window until then.
  if (!l->outbox.empty()) {
    log::warn("upstream", "[{}] identity removed: {} message(s) waiting for the cloud dropped",
              client_id, l->outbox.size());
  }
  for (auto& item : l->outbox) {
    if (item.on_ack) asio::post(io_, std::move(item.on_ack));
  }
  l->outbox.clear();
  l->wake.cancel();
  l->outbox_signal.cancel();
  l->reported_retry.cancel();
  log::info("upstream", "[{}] identity removed: its cloud connection closes", client_id);
}

bool Upstream::current(const Link& l) const {
  auto it = links_.find(l.client_id);
  return it != links_.end() && it->second.get() == &l;
}

void Upstream::disconnected(const Principal& who) {
  method_listeners_.erase(who.client_id());
  update_methods_subscription(who.client_id());
}

void Upstream::methods_subscribed(const Principal& who) {
  method_listeners_.insert(who.client_id());
  update_methods_subscription(who.client_id());
}

void Upstream::update_methods_subscription(const std::string& client_id) {
  auto it = links_.find(client_id);
  if (it == links_.end()) return;  // a link that connects later subscribes as it connects
  auto l = it->second;
  const bool wanted = method_listeners_.contains(client_id);
  if (l->state != Link::State::online || !l->client || l->methods == wanted) return;
  l->methods = wanted;
  asio::co_spawn(io_, change_methods_subscription(l, l->client, wanted),
                 net::on_coroutine_exit("upstream methods subscription " + client_id,
                                        [](const std::string&) {}));
}

asio::awaitable<void> Upstream::change_methods_subscription(std::weak_ptr<Link> weak,
                                                            std::shared_ptr<net::MqttClient> client,
                                                            bool wanted) {
  Status s;
  if (wanted) {
    auto granted = co_await client->subscribe(std::string(kCloudMethodsFilter), 0);
    if (!granted) s = std::move(granted).error();
  } else {
    std::vector<std::string> filters{std::string(kCloudMethodsFilter)};
    s = co_await client->unsubscribe(std::move(filters));
  }
  if (s) co_return;
  // The connection is failing; the next one subscribes from method_listeners_.
  if (auto link = weak.lock(); link && link->client == client) link->methods = !wanted;
  log::warn("upstream", "[{}] method requests {}: {}", client->options().client_id,
            wanted ? "not subscribed" : "not unsubscribed", s.error().message);
}

nlohmann::json Upstream::status() const {
  nlohmann::json links = nlohmann::json::object();
  for (const auto& [id, l] : links_) {
    links[id] = {{"state", Link::name(l->state)},
                 {"since", l->since},
                 {"lastError", l->last_error},
                 {"connects", l->connects},
                 {"queued", l->outbox.size()},
                 {"unacked", l->unacked},
                 {"published", l->published},
                 {"acked", l->acked},
                 {"pendingReported", l->sending_reported}};
  }
  return {{"enabled", true},
          {"host", config_.upstream.hostname},
          {"port", config_.upstream.port},
          {"online", any_online()},
          {"offlineSeconds", offline_seconds()},
          {"offlineTotalSeconds", offline_total_seconds()},
          {"messagesSent", messages_sent_},
          {"messagesExpiredUnsent", expired_unsent_},
          {"reconnects", reconnects_},
          {"links", links}};
}

}  // namespace cairn::hub
