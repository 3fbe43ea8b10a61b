#include "hub/session.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/clock.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "hub/hub.hpp"
#include "hub/iothub_topics.hpp"
#include "mqtt/topic.hpp"
#include "net/spawn.hpp"
#include "twin/twin.hpp"

namespace cairn::hub {
namespace {

// Bytes of packets waiting for the socket. Deliveries are bounded by the endpoint window, so
// only a client that stops reading reaches this; it is then disconnected.
constexpr std::size_t kMaxOutboundBytes = 8 * 1024 * 1024;
// Room for the topic and the rest of a PUBLISH beyond the message itself.
constexpr std::size_t kPacketOverhead = 64 * 1024;
constexpr std::size_t kReadChunk = 16 * 1024;
// After close(), queued packets (a refusing CONNACK) get this long to reach the client.
constexpr auto kLingerOnClose = std::chrono::seconds(2);

tcp::socket& lowest(Session::Stream& s) {
  if (auto* plain = std::get_if<tcp::socket>(&s)) return *plain;
  return std::get<ssl::stream<tcp::socket>>(s).next_layer();
}

// How long a connection may stay silent. Before CONNECT, `keepalive_secs` is the connect
// timeout. After it, it is the client's keep-alive: the server allows 1.5 times that
// [MQTT-3.1.2-24], in milliseconds (a 1 s keep-alive gives 1.5 s, not 2 s), capped at
// `cap_secs`; a keep-alive of 0 (none) gets the cap.
std::chrono::milliseconds idle_limit(bool connected, std::uint32_t keepalive_secs,
                                     std::uint32_t cap_secs) {
  if (!connected) return std::chrono::seconds(keepalive_secs);
  const std::chrono::milliseconds cap(static_cast<std::int64_t>(cap_secs) * 1000);
  if (keepalive_secs == 0) return cap;
  return std::min(cap, std::chrono::milliseconds(static_cast<std::int64_t>(keepalive_secs) * 1500));
}

mqtt::ConnectReturn refusal_code(errc code) {
  switch (code) {
    case errc::invalid_argument:
      return mqtt::ConnectReturn::bad_username_or_password;
    // The credentials could not be checked (the registry is busy or failing): not the
    // client's fault, it may retry.
    case errc::unavailable:
    case errc::timeout:
    case errc::internal:
      return mqtt::ConnectReturn::server_unavailable;
    default:
      return mqtt::ConnectReturn::not_authorized;
  }
}

}  // namespace

Session::Session(std::shared_ptr<Hub> hub, Stream stream, std::string peer, std::string address)
    : hub_(std::move(hub)),
      stream_(std::move(stream)),
      peer_(std::move(peer)),
      address_(std::move(address)),
      log_id_(peer_),
      keepalive_timer_(lowest(stream_).get_executor()),
      resume_timer_(lowest(stream_).get_executor()),
      token_timer_(lowest(stream_).get_executor()) {}

Session::~Session() { hub_->connection_closed(address_, authenticated_slot_); }

void Session::start() {
  // A throw anywhere in the session (its handlers run inside run()) closes it like a dropped
  // connection: will, detach (in-flight deliveries go back to the endpoint), unregister.
  auto self = shared_from_this();
  asio::co_spawn(
      lowest(stream_).get_executor(), [self]() { return self->run(); },
      net::on_coroutine_exit("mqtt session " + peer_, [self](const std::string& why) {
        ++self->hub_->counters().sessions_failed;
        self->close("internal error: " + why);
      }));
}

asio::awaitable<void> Session::run() {
  keepalive_secs_ = hub_->config().mqtt.connect_timeout_secs;
  arm_keepalive();
  if (auto* tls = std::get_if<ssl::stream<tcp::socket>>(&stream_)) {
    error_code ec;
    co_await tls->async_handshake(ssl::stream_base::server,
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      close("TLS handshake failed: " + ec.message());
      co_return;
    }
  }
  const auto& cfg = hub_->config().mqtt;
  const std::size_t max_packet = cfg.max_message_bytes + kPacketOverhead;
  std::size_t offset = 0;
  while (!closed_) {
    // An anonymous peer gets only what a CONNECT needs.
    auto decoded = mqtt::decode(std::string_view(in_).substr(offset),
                                connected_ ? max_packet : cfg.max_connect_bytes);
    if (!decoded) {
      // An MQTT 5 (or other) CONNECT does not decode as 3.1.1; it still deserves CONNACK 1.
      if (!connected_ &&
          mqtt::is_unsupported_protocol_level(std::string_view(in_).substr(offset))) {
        send(mqtt::Connack{false, mqtt::ConnectReturn::unacceptable_protocol_version});
        ++hub_->counters().connections_refused;
        close("unsupported MQTT protocol level (3.1.1 only)");
        break;
      }
      ++hub_->counters().protocol_errors;
      if (decoded.error().code == errc::limit_exceeded && !connected_) {
        ++hub_->counters().limits.max_connect_bytes;
        log::warn("hub", "[{}] refused before CONNECT: {} (mqtt.max_connect_bytes={})", log_id_,
                  decoded.error().message, cfg.max_connect_bytes);
      } else if (decoded.error().code == errc::limit_exceeded) {
        ++hub_->counters().messages_oversize;
      }
      close("malformed packet: " + decoded.error().message);
      break;
    }
    if (!*decoded) {
      in_.erase(0, offset);
      offset = 0;
      if (!co_await read_more()) break;
      continue;
    }
    offset += (*decoded)->consumed;
    if (!co_await handle(std::move((*decoded)->packet))) break;
  }
}

asio::awaitable<bool> Session::read_more() {
  std::size_t old = in_.size();
  in_.resize(old + kReadChunk);
  error_code ec;
  auto buf = asio::buffer(in_.data() + old, kReadChunk);
  std::size_t n = 0;
  if (auto* plain = std::get_if<tcp::socket>(&stream_)) {
    n = co_await plain->async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    n = co_await std::get<ssl::stream<tcp::socket>>(stream_).async_read_some(
        buf, asio::redirect_error(asio::use_awaitable, ec));
  }
  in_.resize(old + n);
  if (ec) {
    close(ec == asio::error::eof ? "connection closed by peer" : "read failed: " + ec.message());
    co_return false;
  }
  co_return !closed_;
}

asio::awaitable<bool> Session::handle(mqtt::Packet packet) {
  if (!connected_) {
    auto* c = std::get_if<mqtt::Connect>(&packet);
    if (!c) {
      ++hub_->counters().protocol_errors;
      close("first packet was not CONNECT [MQTT-3.1.0-1]");
      co_return false;
    }
    co_return co_await on_connect(*c);
  }
  last_activity_ = std::chrono::steady_clock::now();
  switch (mqtt::type_of(packet)) {
    case mqtt::PacketType::publish: {
      auto& p = std::get<mqtt::Publish>(packet);
      co_await wait_for_inflight_room();
      co_return !closed_ && on_publish(p);
    }
    case mqtt::PacketType::puback:
      on_puback(std::get<mqtt::Puback>(packet).packet_id);
      co_return true;
    case mqtt::PacketType::subscribe:
      co_await wait_for_inflight_room();
      if (!closed_) on_subscribe(std::get<mqtt::Subscribe>(packet));
      co_return !closed_;
    case mqtt::PacketType::unsubscribe:
      co_await wait_for_inflight_room();
      if (!closed_) on_unsubscribe(std::get<mqtt::Unsubscribe>(packet));
      co_return !closed_;
    case mqtt::PacketType::pingreq:
      send(mqtt::Pingresp{});
      co_return true;
    case mqtt::PacketType::disconnect:
      close("client disconnected", true);
      co_return false;
    case mqtt::PacketType::connect:
      ++hub_->counters().protocol_errors;
      close("second CONNECT [MQTT-3.1.0-2]");
      co_return false;
    default:
      ++hub_->counters().protocol_errors;
      close("unexpected " + std::string(mqtt::to_string(mqtt::type_of(packet))) + " from a client");
      co_return false;
  }
}

asio::awaitable<void> Session::wait_for_inflight_room() {
  // Flow control: wait for the store (or the cloud) to catch up before reading more from this
  // client. QoS 0 counts too: without acknowledgements, only this keeps a flooding publisher
  // from queueing appends faster than the store commits them. Twin requests and persistent
  // SUBSCRIBEs queue store writes or cloud requests just the same.
  const std::size_t limit = hub_->config().mqtt.max_inflight_in;
  if (inbound_.size() + qos0_pending_ + requests_pending_ >= limit && !closed_) {
    ++hub_->counters().limits.max_inflight_in;
  }
  while (inbound_.size() + qos0_pending_ + requests_pending_ >= limit && !closed_) {
    resume_timer_.expires_at(asio::steady_timer::time_point::max());
    error_code ec;
    co_await resume_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

void Session::request_done() {
  if (requests_pending_ > 0) --requests_pending_;
  resume_timer_.cancel();
}

asio::awaitable<bool> Session::on_connect(mqtt::Connect& c) {
  if (c.protocol_level != 4) {
    send(mqtt::Connack{false, mqtt::ConnectReturn::unacceptable_protocol_version});
    ++hub_->counters().connections_refused;
    close("MQTT protocol level " + std::to_string(c.protocol_level) + " is not 3.1.1");
    co_return false;
  }
  AuthRequest request{c.client_id, c.username.value_or(""), c.password};
  const auto& cfg = hub_->config();
  auto principal = co_await authenticate(request);
  if (closed_) co_return false;  // dropped while the credentials were checked
  if (!principal) {
    send(mqtt::Connack{false, refusal_code(principal.error().code)});
    ++hub_->counters().connections_refused;
    log::warn("hub", "[{}] client_id={} refused: {}", log_id_, c.client_id,
              principal.error().message);
    close("authentication failed");
    co_return false;
  }
  principal_ = std::move(*principal);
  log_id_ = principal_.client_id() + "@" + peer_;
  connected_ = true;
  hub_->connection_authenticated(address_);
  authenticated_slot_ = true;
  clean_session_ = c.clean_session;
  will_ = std::move(c.will);
  hub_->register_session(principal_.client_id(), shared_from_this());

  bool session_present = false;
  if (clean_session_) {
    hub_->erase_session(principal_.client_id());
  } else if (auto stored = co_await load_stored_session(); stored && !closed_) {
    auto j = nlohmann::json::parse(*stored, nullptr, false);
    if (j.is_array()) {
      session_present = true;
      for (const auto& s : j) {
        if (s.is_object() && s.contains("filter") && s["filter"].is_string()) {
          subscriptions_.push_back(
              mqtt::Subscription{s["filter"].get<std::string>(), s.value<std::uint8_t>("qos", 1)});
        }
      }
    }
  }
  // Closed while the stored session was read (taken over, dropped): no CONNACK.
  if (closed_) co_return false;
  send(mqtt::Connack{session_present, mqtt::ConnectReturn::accepted});

  // From here on keepalive_secs_ is the client's keep-alive; idle_limit() derives the
  // server-side timeout from it.
  keepalive_secs_ = c.keep_alive;
  last_activity_ = std::chrono::steady_clock::now();
  arm_keepalive();
  log::info("hub", "[{}] connected clean_session={} keepalive={}s timeout={}ms session_present={}",
            log_id_, clean_session_, keepalive_secs_,
            idle_limit(true, keepalive_secs_, cfg.mqtt.max_keepalive_secs).count(),
            session_present);
  if (principal_.token_expiry > 0) {
    token_timer_.expires_after(std::chrono::seconds(principal_.token_expiry - now_unix_s()));
    token_timer_.async_wait([weak = weak_from_this()](error_code ec) {
      if (auto self = weak.lock(); self && !ec) {
        self->close("SAS token expired: the client must reconnect with a new one");
      }
    });
  }
  hub_->client_connected(principal_);
  update_subscription_flags();
  co_return true;
}

asio::awaitable<Result<Principal>> Session::authenticate(const AuthRequest& request) {
  // An answer given at once is used at once. A later one resumes this coroutine inside the
  // reply, in the same io handler: nothing (a revocation of the identity just checked) runs
  // between the answer and the session's registration.
  struct Pending {
    std::optional<Result<Principal>> answer;
    std::function<void(Result<Principal>)> resume;
  };
  auto pending = std::make_shared<Pending>();
  hub_->authenticator().authenticate_async(request, now_unix_s(), [pending](Result<Principal> r) {
    if (auto resume = std::move(pending->resume)) {
      resume(std::move(r));
    } else {
      pending->answer = std::move(r);
    }
  });
  if (pending->answer) co_return std::move(*pending->answer);
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(Result<Principal>)>(
      // A raw pointer (`pending` outlives the wait): gcc 12 may destroy a lambda temporary of
      // a co_await expression twice, so it must not own anything.
      [p = pending.get()](auto handler) {
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        p->resume = [shared](Result<Principal> r) { std::move (*shared)(std::move(r)); };
      },
      asio::use_awaitable);
}

asio::awaitable<std::optional<std::string>> Session::load_stored_session() {
  auto result = std::make_shared<std::optional<std::optional<std::string>>>();
  auto ready = std::make_shared<asio::steady_timer>(lowest(stream_).get_executor(),
                                                    asio::steady_timer::time_point::max());
  hub_->load_session(principal_.client_id(), [result, ready](std::optional<std::string> s) {
    *result = std::move(s);
    ready->cancel();
  });
  while (!result->has_value()) {
    error_code ec;
    co_await ready->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return std::move(**result);
}

bool Session::on_publish(mqtt::Publish& p) {
  if (p.qos == 2) {
    ++hub_->counters().protocol_errors;
    close("QoS 2 PUBLISH is not supported (IoT Hub semantics)");
    return false;
  }
  if (p.payload.size() > hub_->config().mqtt.max_message_bytes) {
    ++hub_->counters().messages_oversize;
    close("message of " + std::to_string(p.payload.size()) + " bytes exceeds the limit of " +
          std::to_string(hub_->config().mqtt.max_message_bytes));
    return false;
  }
  auto topic = parse_inbound_topic(p.topic);
  if (!topic) {
    ++hub_->counters().protocol_errors;
    close("publish to unsupported topic '" + p.topic + "': " + topic.error().message);
    return false;
  }
  switch (topic->kind) {
    case InboundTopic::Kind::telemetry:
      return check_property_limits(*topic) && ingest_telemetry(p, *topic);
    case InboundTopic::Kind::twin_get:
    case InboundTopic::Kind::twin_patch_reported:
      if (p.qos == 1) acknowledge_in_turn(p.packet_id);
      handle_twin_request(p, *topic);
      return true;
    case InboundTopic::Kind::method_response:
      if (p.qos == 1) acknowledge_in_turn(p.packet_id);
      hub_->method_response(principal_, topic->rid, topic->status, p.payload);
      return true;
  }
  return true;
}

void Session::handle_twin_request(mqtt::Publish& p, const InboundTopic& topic) {
  auto* twins = hub_->twins();
  if (twins == nullptr) {
    publish(twin_response_topic(503, topic.rid),
            twin::error_body(503, "twins are not served here"));
    return;
  }
  std::weak_ptr<Session> weak = shared_from_this();
  // In flight until answered: a store write (PATCH) or a cloud request (GET).
  ++requests_pending_;
  auto reply = [weak, rid = topic.rid](int status, std::string body) {
    if (auto self = weak.lock()) {
      self->request_done();
      self->publish(twin_response_topic(status, rid), std::move(body));
    }
  };
  if (topic.kind == InboundTopic::Kind::twin_get) {
    twins->get_twin(principal_, std::move(reply));
  } else {
    twins->patch_reported(principal_, p.payload, std::move(reply));
  }
}

bool Session::check_property_limits(const InboundTopic& topic) {
  const auto& cfg = hub_->config().mqtt;
  std::size_t bytes = 0;
  for (const auto* bag : {&topic.system, &topic.app}) {
    for (const auto& [k, v] : bag->entries()) bytes += k.size() + v.size();
  }
  const std::size_t count = topic.system.size() + topic.app.size();
  const char* setting = nullptr;
  std::size_t limit = 0;
  if (count > cfg.max_properties) {
    ++hub_->counters().limits.max_properties;
    setting = "max_properties";
    limit = cfg.max_properties;
  } else if (bytes > cfg.max_property_bytes) {
    ++hub_->counters().limits.max_property_bytes;
    setting = "max_property_bytes";
    limit = cfg.max_property_bytes;
  } else {
    return true;
  }
  // Refused like any other bad publish: no PUBACK, and the connection closes.
  ++hub_->counters().protocol_errors;
  log::warn("hub", "[{}] publish with {} properties of {} bytes refused: mqtt.{}={}", log_id_,
            count, bytes, setting, limit);
  close("message properties over mqtt." + std::string(setting));
  return false;
}

bool Session::publish(const std::string& topic, std::string payload) {
  if (closed_) return false;
  send(mqtt::Publish{topic, std::move(payload), 0, false, false, 0});
  return !closed_;
}

bool Session::ingest_telemetry(mqtt::Publish& p, InboundTopic& topic) {
  if (topic.device_id != principal_.device_id || topic.module_id != principal_.module_id) {
    ++hub_->counters().protocol_errors;
    close("not authorized to publish as '" + topic.device_id + "/" + topic.module_id + "'");
    return false;
  }
  Message m = stamped_message(std::move(p.payload), topic);
  if (p.retain) m.app.set("mqtt-retain", "true");
  if (p.dup) m.app.set("mqtt-dup", "true");
  ++hub_->counters().messages_received;

  if (p.qos == 0) {
    ++qos0_pending_;
    std::weak_ptr<Session> weak_self = shared_from_this();
    hub_->ingest(
        std::move(m),
        [weak_self](Status) {
          if (auto self = weak_self.lock()) {
            --self->qos0_pending_;
            self->resume_timer_.cancel();
          }
        },
        can_keep_sending(0));
    return true;
  }
  std::uint64_t ticket = next_ticket_++;
  inbound_.push_back(InboundAck{ticket, p.packet_id});
  std::weak_ptr<Session> weak = shared_from_this();
  hub_->ingest(
      std::move(m),
      [weak, ticket](Status s) {
        auto self = weak.lock();
        if (!self) return;
        if (!s) {
          ++self->hub_->counters().messages_rejected;
          log::warn("hub", "[{}] message not accepted, closing so the client retries later: {}",
                    self->log_id_, s.error().to_string());
        }
        self->complete_inbound(ticket, s.ok());
      },
      can_keep_sending(1));
  return true;
}

bool Session::can_keep_sending(std::uint8_t qos) {
  return window_.may_wait(qos == 1, inbound_.size(), qos0_pending_ + requests_pending_,
                          hub_->config().mqtt.max_inflight_in, last_activity_);
}

void Session::acknowledge_in_turn(std::uint16_t packet_id) {
  // Settled already, but its PUBACK must not overtake those of earlier telemetry publishes
  // still waiting for their commit [MQTT-4.6.0-2].
  inbound_.push_back(InboundAck{next_ticket_++, packet_id, true, true});
  send_ready_pubacks();
}

void Session::complete_inbound(std::uint64_t ticket, bool ok) {
  for (auto& a : inbound_) {
    if (a.ticket == ticket) {
      a.done = true;
      a.ok = ok;
      break;
    }
  }
  send_ready_pubacks();
}

void Session::send_ready_pubacks() {
  while (!inbound_.empty() && inbound_.front().done) {
    if (!inbound_.front().ok) {
      // MQTT 3.1.1 has no negative PUBACK: withholding it and closing makes the client
      // resend later, and the message is never silently lost.
      inbound_.clear();
      close("message refused by the store");
      return;
    }
    send(mqtt::Puback{inbound_.front().packet_id});
    inbound_.pop_front();
    window_.acknowledged();
  }
  resume_timer_.cancel();
}

void Session::on_subscribe(const mqtt::Subscribe& s) {
  const std::size_t max_subscriptions = hub_->config().mqtt.max_subscriptions;
  const std::size_t max_filter_bytes = hub_->config().mqtt.max_topic_filter_bytes;
  mqtt::Suback ack{s.packet_id, {}};
  bool changed = false;
  std::size_t over_limit = 0;
  std::size_t too_long = 0, longest = 0;
  for (const auto& sub : s.subscriptions) {
    std::uint8_t granted = mqtt::kSubackFailure;
    if (sub.filter.size() > max_filter_bytes) {
      // Refused before anything looks at it (or logs it): it is never compared or stored.
      ++too_long;
      longest = std::max(longest, sub.filter.size());
    } else if (mqtt::validate_topic_filter(sub.filter)) {
      auto kind = classify_subscription(sub.filter);
      using K = SubscriptionKind::Kind;
      bool allowed = false;
      switch (kind.kind) {
        case K::module_messages:
          // The SDKs subscribe to "devices/{d}/modules/{m}/inputs/#", which edgeHub's greedy
          // pattern reads as module "{m}/inputs": the module is the first segment.
          allowed = kind.device_id == principal_.device_id && !principal_.module_id.empty() &&
                    std::string_view(kind.module_id).substr(0, kind.module_id.find('/')) ==
                        principal_.module_id;
          break;
        case K::twin_response:
        case K::desired_updates:
        case K::methods:
          allowed = true;
          break;
        case K::c2d:
          allowed = principal_.module_id.empty() && kind.device_id == principal_.device_id;
          break;
        case K::unsupported:
          break;
      }
      auto it = std::find_if(subscriptions_.begin(), subscriptions_.end(),
                             [&](const mqtt::Subscription& x) { return x.filter == sub.filter; });
      if (allowed && it == subscriptions_.end() && subscriptions_.size() >= max_subscriptions) {
        allowed = false;
        ++over_limit;
      } else if (!allowed) {
        log::warn("hub", "[{}] subscription to '{}' refused", log_id_, sub.filter);
      }
      if (allowed) {
        granted = std::min<std::uint8_t>(sub.qos, 1);
        if (it == subscriptions_.end()) {
          subscriptions_.push_back(mqtt::Subscription{sub.filter, granted});
          changed = true;
        } else if (it->qos != granted) {
          it->qos = granted;
          changed = true;
        }
      }
    }
    ack.return_codes.push_back(granted);
  }
  if (too_long > 0) {
    hub_->counters().limits.max_topic_filter_bytes += too_long;
    log::warn("hub",
              "[{}] {} subscription(s) refused: mqtt.max_topic_filter_bytes={} exceeded "
              "(longest {} bytes)",
              log_id_, too_long, max_filter_bytes, longest);
  }
  if (over_limit > 0) {
    hub_->counters().limits.max_subscriptions += over_limit;
    log::warn("hub", "[{}] {} subscription(s) refused: mqtt.max_subscriptions={} reached", log_id_,
              over_limit, max_subscriptions);
  }
  persist_then_ack(ack, changed);
  update_subscription_flags();
}

void Session::on_unsubscribe(const mqtt::Unsubscribe& u) {
  const std::size_t before = subscriptions_.size();
  for (const auto& f : u.filters) {
    std::erase_if(subscriptions_, [&](const mqtt::Subscription& s) { return s.filter == f; });
  }
  persist_then_ack(mqtt::Unsuback{u.packet_id}, subscriptions_.size() != before);
  update_subscription_flags();
}

void Session::persist_then_ack(mqtt::Packet ack, bool changed) {
  // An unchanged list (a repeated or refused SUBSCRIBE) costs no write, unless an earlier
  // acknowledgement still waits for its write: acknowledgements keep the order of requests.
  if (clean_session_ || (!changed && subscription_writes_ == 0)) {
    send(ack);
    return;
  }
  ++requests_pending_;
  ++subscription_writes_;
  std::weak_ptr<Session> weak = shared_from_this();
  persist_subscriptions([weak, ack = std::move(ack)](Status stored) {
    auto self = weak.lock();
    if (!self) return;
    --self->subscription_writes_;
    self->request_done();
    if (!stored) {
      // Not stored: acknowledging would promise a session the store does not hold.
      self->close("subscriptions not stored: " + stored.error().message);
      return;
    }
    self->send(ack);
  });
}

void Session::update_subscription_flags() {
  bool module_messages = false, methods = false, desired = false;
  for (const auto& s : subscriptions_) {
    auto kind = classify_subscription(s.filter).kind;
    module_messages = module_messages || kind == SubscriptionKind::Kind::module_messages;
    methods = methods || kind == SubscriptionKind::Kind::methods;
    desired = desired || kind == SubscriptionKind::Kind::desired_updates;
  }
  if (module_messages != module_messages_) {
    module_messages_ = module_messages;
    if (module_messages_) {
      hub_->attach_module(principal_.module_id, shared_from_this());
    } else {
      hub_->detach_module(principal_.module_id, this);
    }
  }
  const bool new_methods = methods && !methods_;
  const bool new_desired = desired && !desired_;
  methods_ = methods;
  desired_ = desired;
  if (new_methods) hub_->methods_subscribed(principal_);
  if (new_desired) {
    if (auto* twins = hub_->twins()) twins->desired_subscribed(principal_);
  }
}

void Session::persist_subscriptions(std::function<void(Status)> done) {
  // The whole list in one row: bounded by max_subscriptions, and written only when it changes.
  nlohmann::json j = nlohmann::json::array();
  for (const auto& s : subscriptions_) j.push_back({{"filter", s.filter}, {"qos", s.qos}});
  hub_->save_session(principal_.client_id(), dump_json(j), std::move(done));
}

bool Session::deliver(const std::string& input, const Message& m, QueuePosition /*at*/, bool dup,
                      std::function<void()> on_ack) {
  if (closed_) return false;
  mqtt::Publish packet{module_input_topic(principal_.device_id, principal_.module_id, input, m),
                       m.body,
                       1,
                       false,
                       dup,
                       0};
  packet.qos = delivery_qos(packet.topic);
  if (auto encodable = mqtt::check_encodable(packet); !encodable) {
    // A poison message (stored before ingest refused such topics): sent, it would be a
    // malformed PUBLISH redelivered on every reconnect. Take it out of the queue instead.
    hub_->dead_letter(
        principal_.module_id + "/" + input, m,
        "cannot be encoded for " + principal_.client_id() + ": " + encodable.error().message);
    asio::post(lowest(stream_).get_executor(), std::move(on_ack));
    return true;
  }
  if (packet.qos == 0) {
    // No PUBACK will come: the message counts as delivered once the socket took it, which
    // also keeps the endpoint's window the bound on what waits in our buffer.
    packet.dup = false;
    // Queued before send(): send() may start the write at once, and the acknowledgement must
    // ride with the write that carries its packet, not the next one.
    written_pending_.push_back(std::move(on_ack));
    send(packet);
    return !closed_;
  }
  std::uint16_t id = next_packet_id();
  if (id == 0) return false;  // 65535 deliveries in flight: cannot happen with sane windows
  packet.packet_id = id;
  outbound_.emplace(id, std::move(on_ack));
  send(packet);
  return !closed_;
}

std::uint8_t Session::delivery_qos(std::string_view topic) const {
  // min(publish QoS 1, granted QoS); overlapping subscriptions give the highest [MQTT-3.3.5-1].
  // A delivery no filter matches literally (the hub takes any inputs filter as a subscription
  // to all of the module's inputs) keeps QoS 1: only a QoS 0 grant gives up the PUBACK.
  bool matched = false;
  std::uint8_t qos = 0;
  for (const auto& s : subscriptions_) {
    if (!mqtt::topic_matches(s.filter, topic)) continue;
    matched = true;
    qos = std::max(qos, s.qos);
  }
  return matched ? std::min<std::uint8_t>(qos, 1) : 1;
}

void Session::on_puback(std::uint16_t packet_id) {
  auto it = outbound_.find(packet_id);
  if (it == outbound_.end()) return;  // duplicate or stale ack
  auto done = std::move(it->second);
  outbound_.erase(it);
  if (done) done();
}

std::uint16_t Session::next_packet_id() {
  for (int tries = 0; tries < 65535; ++tries) {
    last_packet_id_ = static_cast<std::uint16_t>(last_packet_id_ + 1);
    if (last_packet_id_ == 0) last_packet_id_ = 1;
    if (!outbound_.count(last_packet_id_)) return last_packet_id_;
  }
  return 0;
}

void Session::send(const mqtt::Packet& p) {
  if (closed_ && !std::holds_alternative<mqtt::Connack>(p)) return;
  if (auto s = mqtt::encode(p, out_pending_); !s) {
    // Only our own packets get here (deliveries are checked first): never write a packet
    // with a truncated length; end the connection instead.
    log::error("hub", "[{}] cannot encode {}: {}", log_id_, mqtt::to_string(mqtt::type_of(p)),
               s.error().message);
    close("internal error: unencodable " + std::string(mqtt::to_string(mqtt::type_of(p))));
    return;
  }
  // Deliveries are bounded by the endpoint windows (max_inflight_out messages of up to
  // max_message_bytes each), and each stays in outbound_ until acknowledged. A full window of
  // large messages is queued at once, so it must not count as "not reading": only bytes beyond
  // what the unacknowledged deliveries may legitimately occupy do.
  // QoS 0 deliveries wait in written_pending_/written_writing_ instead of outbound_.
  const std::size_t deliveries =
      outbound_.size() + written_pending_.size() + written_writing_.size();
  const std::size_t allowance =
      kMaxOutboundBytes + deliveries * (hub_->config().mqtt.max_message_bytes + kPacketOverhead);
  if (out_pending_.size() > allowance) {
    ++hub_->counters().slow_consumers_closed;
    out_pending_.clear();
    close("client does not read: outbound buffer over " + std::to_string(allowance) + " bytes");
    return;
  }
  schedule_write();
}

void Session::schedule_write() {
  // Everything queued in this turn (the PUBACKs of a group commit, a window of deliveries)
  // goes out in one write. Writing at the first packet would send it alone and the rest one
  // write later, splitting the client's window into two rounds.
  if (writing_ || write_scheduled_) return;
  write_scheduled_ = true;
  asio::post(lowest(stream_).get_executor(), [self = shared_from_this()] {
    self->write_scheduled_ = false;
    self->write_some();
  });
}

void Session::write_some() {
  if (writing_ || out_pending_.empty()) return;
  writing_ = true;
  std::swap(out_pending_, out_writing_);
  std::swap(written_pending_, written_writing_);
  auto handler = [self = shared_from_this()](error_code ec, std::size_t) {
    self->writing_ = false;
    self->out_writing_.clear();
    if (ec) {
      self->close("write failed: " + ec.message());
      self->out_pending_.clear();
    }
    // Moved out first: a callback delivers more, which may start the next write.
    auto written = std::move(self->written_writing_);
    self->written_writing_.clear();
    if (!self->closed_) {
      for (auto& done : written) {
        if (done) done();
      }
    }
    if (self->closed_ && self->out_pending_.empty()) {
      error_code ignored;
      lowest(self->stream_).shutdown(tcp::socket::shutdown_both, ignored);
      lowest(self->stream_).close(ignored);
      self->keepalive_timer_.cancel();
      return;
    }
    self->write_some();
  };
  if (auto* plain = std::get_if<tcp::socket>(&stream_)) {
    asio::async_write(*plain, asio::buffer(out_writing_), std::move(handler));
  } else {
    asio::async_write(std::get<ssl::stream<tcp::socket>>(stream_), asio::buffer(out_writing_),
                      std::move(handler));
  }
}

void Session::arm_keepalive() {
  keepalive_timer_.expires_after(
      idle_limit(connected_, keepalive_secs_, hub_->config().mqtt.max_keepalive_secs));
  arm_keepalive_wait();
}

void Session::arm_keepalive_wait() {
  keepalive_timer_.async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (!self || ec || self->closed_) return;
    if (!self->connected_) {
      ++self->hub_->counters().limits.connect_timeout_secs;
      log::warn("hub", "[{}] no CONNECT within mqtt.connect_timeout_secs={}", self->log_id_,
                self->keepalive_secs_);
      self->close("no CONNECT within " + std::to_string(self->keepalive_secs_) + "s");
      return;
    }
    // Any packet counts as activity; re-arm for the remainder instead of on every packet.
    const auto limit =
        idle_limit(true, self->keepalive_secs_, self->hub_->config().mqtt.max_keepalive_secs);
    auto idle = std::chrono::steady_clock::now() - self->last_activity_;
    if (idle >= limit) {
      self->close("keep-alive expired after " + std::to_string(limit.count()) + "ms");
      return;
    }
    self->keepalive_timer_.expires_at(self->last_activity_ + limit);
    self->arm_keepalive_wait();
  });
}

void Session::close(std::string_view reason, bool graceful) {
  if (closed_) return;
  closed_ = true;
  if (connected_) {
    log::info("hub", "[{}] closed: {}", log_id_, reason);
  } else {
    log::debug("hub", "[{}] closed before CONNECT: {}", log_id_, reason);
  }
  resume_timer_.cancel();
  token_timer_.cancel();
  if (connected_) {
    if (!graceful && will_) publish_will();
    if (module_messages_) hub_->detach_module(principal_.module_id, this);
    hub_->unregister_session(principal_.client_id(), this);
    hub_->client_disconnected(principal_);
  }
  outbound_.clear();
  written_pending_.clear();
  if (!writing_ && out_pending_.empty()) {
    error_code ignored;
    lowest(stream_).shutdown(tcp::socket::shutdown_both, ignored);
    lowest(stream_).close(ignored);
    keepalive_timer_.cancel();
    return;
  }
  // Let queued packets (a refusing CONNACK) go out, but not forever.
  write_some();
  keepalive_timer_.expires_after(kLingerOnClose);
  keepalive_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec) return;
    error_code ignored;
    lowest(self->stream_).close(ignored);
  });
}

// The routed message for a telemetry publish (or a will) from this client: the bag from the
// topic plus the sender identity and enqueue time, which the client cannot choose.
Message Session::stamped_message(std::string body, InboundTopic& topic) const {
  Message m;
  m.body = std::move(body);
  m.system = std::move(topic.system);
  m.app = std::move(topic.app);
  m.system.set(std::string(sysprop::kConnectionDeviceId), principal_.device_id);
  if (!principal_.module_id.empty()) {
    m.system.set(std::string(sysprop::kConnectionModuleId), principal_.module_id);
  }
  m.system.set(std::string(sysprop::kEnqueuedTime), format_iso8601(now_unix_ms()));
  return m;
}

void Session::publish_will() {
  auto topic = parse_inbound_topic(will_->topic);
  if (!topic || topic->kind != InboundTopic::Kind::telemetry ||
      topic->device_id != principal_.device_id || topic->module_id != principal_.module_id) {
    log::warn("hub", "[{}] will topic '{}' is not this client's telemetry topic; not sent", log_id_,
              will_->topic);
    return;
  }
  Message m = stamped_message(std::move(will_->payload), *topic);
  m.system.set(std::string(sysprop::kMessageType), "Will");
  ++hub_->counters().messages_received;
  hub_->ingest(std::move(m), [](Status) {});
  will_.reset();
}

}  // namespace cairn::hub
