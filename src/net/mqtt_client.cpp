#include "net/mqtt_client.hpp"

#include <exception>
#include <string_view>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/ssl.h>

#include "core/log.hpp"
#include "mqtt/topic.hpp"

// Last: it holds for the code below.
#include "net/coroutine_warnings.hpp"

namespace cairn::net {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kLog = "mqttc";
constexpr std::size_t kReadChunk = 16 * 1024;
// Packet ids are 16 bits; leave room for SUBSCRIBE/UNSUBSCRIBE ids beside a full window.
constexpr std::size_t kMaxInflightLimit = 60'000;
constexpr std::size_t kMaxPendingRequests = 1'000;

auto redirect(boost::system::error_code& ec) {
  return asio::redirect_error(asio::use_awaitable, ec);
}

// Detached loops never throw on I/O errors (they use redirect_error); anything else is a bug
// and must not vanish silently, so it propagates out of io_context::run().
struct Rethrow {
  void operator()(const std::exception_ptr& e) const {
    if (e) std::rethrow_exception(e);
  }
};

Error refused_error(mqtt::ConnectReturn code) {
  const auto n = static_cast<int>(code);
  switch (code) {
    case mqtt::ConnectReturn::unacceptable_protocol_version:
      return make_error(errc::invalid_argument,
                        "connection refused: CONNACK 1 (unacceptable protocol version)");
    case mqtt::ConnectReturn::identifier_rejected:
      return make_error(errc::invalid_argument,
                        "connection refused: CONNACK 2 (identifier rejected)");
    case mqtt::ConnectReturn::server_unavailable:
      return make_error(errc::unavailable, "connection refused: CONNACK 3 (server unavailable)");
    case mqtt::ConnectReturn::bad_username_or_password:
      return make_error(errc::unauthorized,
                        "connection refused: CONNACK 4 (bad user name or password)");
    case mqtt::ConnectReturn::not_authorized:
      return make_error(errc::unauthorized, "connection refused: CONNACK 5 (not authorized)");
    case mqtt::ConnectReturn::accepted:
      break;
  }
  return make_error(errc::invalid_argument,
                    "connection refused: unknown CONNACK code " + std::to_string(n));
}

Error protocol_error(std::string what) {
  return make_error(errc::invalid_argument, "protocol violation by server: " + std::move(what));
}

}  // namespace

// One coroutine waiting for one event. complete() may run before the wait starts; wait()
// checks `done` before sleeping, and both run on the home executor, so no wake-up is lost.
struct MqttClient::Waiter {
  explicit Waiter(const Executor& executor) : timer(executor, Clock::time_point::max()) {}

  void complete(Status s) {
    if (done) return;
    done = true;
    status = std::move(s);
    timer.cancel();
  }

  asio::steady_timer timer;
  bool done = false;
  Status status;
  // For SUBSCRIBE / UNSUBSCRIBE.
  mqtt::PacketType expect = mqtt::PacketType::suback;
  std::size_t expected_codes = 0;
  std::vector<std::uint8_t> codes;
};

Result<std::shared_ptr<MqttClient>> MqttClient::create(Executor executor,
                                                       MqttClientOptions options) {
  if (options.max_inflight == 0 || options.max_inflight > kMaxInflightLimit) {
    return make_error(errc::invalid_argument,
                      "max_inflight must be in 1.." + std::to_string(kMaxInflightLimit));
  }
  if (options.max_outbound_bytes == 0 || options.max_packet_size == 0) {
    return make_error(errc::invalid_argument, "max_outbound_bytes and max_packet_size must be > 0");
  }
  std::shared_ptr<MqttClient> client(new MqttClient(std::move(executor), std::move(options)));
  if (!client->options_.tls) return client;

  // ssl::context's constructor throws if OpenSSL cannot make a context; keep that inside.
  try {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                         asio::ssl::context::no_tlsv1_1,
                     ec);
    if (!ec) {
      ctx->set_verify_mode(
          client->options_.tls_verify_peer ? asio::ssl::verify_peer : asio::ssl::verify_none, ec);
    }
    if (ec) return make_error(errc::internal, "TLS context setup: " + ec.message());
    if (client->options_.ca_file.empty()) {
      ctx->set_default_verify_paths(ec);
      if (ec) return make_error(errc::io_error, "TLS: cannot load system CAs: " + ec.message());
    } else {
      ctx->load_verify_file(client->options_.ca_file, ec);
      if (ec) {
        return make_error(
            errc::invalid_argument,
            "TLS: cannot load CA file '" + client->options_.ca_file + "': " + ec.message());
      }
    }
    if (!client->options_.ca_pem.empty()) {
      ctx->add_certificate_authority(asio::buffer(client->options_.ca_pem), ec);
      if (ec) return make_error(errc::invalid_argument, "TLS: bad CA PEM text: " + ec.message());
    }
    client->tls_context_ = std::move(ctx);
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("TLS context: ") + e.what());
  }
  return client;
}

MqttClient::MqttClient(Executor executor, MqttClientOptions options)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      write_signal_(executor_, Clock::time_point::max()),
      room_signal_(executor_, Clock::time_point::max()),
      connect_timer_(executor_),
      keep_alive_timer_(executor_),
      drain_timer_(executor_) {}

MqttClient::~MqttClient() {
  // Only reached when no loop runs any more, so the socket is normally closed already.
  boost::system::error_code ignored;
  if (socket_) socket_->close(ignored);
  if (tls_stream_) tls_stream_->next_layer().close(ignored);
}

void MqttClient::set_message_handler(MessageHandler handler) { on_message_ = std::move(handler); }
void MqttClient::set_close_handler(CloseHandler handler) { on_close_ = std::move(handler); }

tcp::socket& MqttClient::tcp_socket() { return tls_stream_ ? tls_stream_->next_layer() : *socket_; }

awaitable<std::size_t> MqttClient::read_some(boost::system::error_code& ec) {
  const std::size_t old = in_buf_.size();
  in_buf_.resize(old + kReadChunk);
  const auto buf = asio::buffer(in_buf_.data() + old, kReadChunk);
  std::size_t n = 0;
  if (tls_stream_) {
    n = co_await tls_stream_->async_read_some(buf, redirect(ec));
  } else {
    n = co_await socket_->async_read_some(buf, redirect(ec));
  }
  in_buf_.resize(old + n);
  stats_.bytes_read += n;
  co_return n;
}

awaitable<void> MqttClient::write_all(const std::string& bytes, boost::system::error_code& ec) {
  if (tls_stream_) {
    co_await asio::async_write(*tls_stream_, asio::buffer(bytes), redirect(ec));
  } else {
    co_await asio::async_write(*socket_, asio::buffer(bytes), redirect(ec));
  }
}

Error MqttClient::not_connected_error() const {
  if (close_reason_) {
    return make_error(errc::unavailable, "not connected: " + close_reason_->message);
  }
  return make_error(errc::unavailable, "not connected");
}

// ---------------------------------------------------------------------------------------------
// Connect

awaitable<Result<mqtt::Connack>> MqttClient::connect() {
  auto self = shared_from_this();
  if (state_ != State::kIdle) {
    co_return state_ == State::kClosed
        ? not_connected_error()
        : make_error(errc::invalid_argument, "connect() may be called once per client");
  }
  state_ = State::kConnecting;

  // The watchdog closes the socket; the pending operation then fails and do_connect() reports
  // a timeout. A plain handler holding a weak_ptr, so an abandoned client is not kept alive.
  connect_timer_.expires_after(options_.connect_timeout);
  connect_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto client = weak.lock();
    if (ec || !client || client->state_ != State::kConnecting) return;
    client->connect_timed_out_ = true;
    boost::system::error_code ignored;
    if (client->resolver_) client->resolver_->cancel();
    if (client->socket_ || client->tls_stream_) client->tcp_socket().close(ignored);
  });

  auto result = co_await do_connect();
  connect_timer_.cancel();
  if (!result) {
    fail(result.error());  // no-op if close() already ended it; then that reason stands
    co_return *close_reason_;
  }
  if (state_ != State::kConnecting) co_return not_connected_error();  // close() raced us

  state_ = State::kConnected;
  last_write_ = Clock::now();
  log::debug(kLog, "connected client_id={} host={} port={} tls={}", options_.client_id,
             options_.host, options_.port, options_.tls);
  asio::co_spawn(executor_, read_loop(self), Rethrow{});
  asio::co_spawn(executor_, write_loop(self), Rethrow{});
  if (options_.keep_alive_s > 0) asio::co_spawn(executor_, keep_alive_loop(self), Rethrow{});
  co_return result;
}

awaitable<Result<mqtt::Connack>> MqttClient::do_connect() {
  // Maps a failed step to the error the caller sees.
  auto step_error = [this](std::string_view step, const boost::system::error_code& ec) -> Error {
    if (connect_timed_out_) {
      return make_error(errc::timeout, std::string(step) + ": connect timed out after " +
                                           std::to_string(options_.connect_timeout.count()) +
                                           " ms");
    }
    if (state_ == State::kClosed) return make_error(errc::cancelled, "closed during connect");
    return make_error(errc::unavailable, std::string(step) + " " + options_.host + ":" +
                                             std::to_string(options_.port) + ": " + ec.message());
  };

  boost::system::error_code ec;
  resolver_.emplace(executor_);
  auto endpoints =
      co_await resolver_->async_resolve(options_.host, std::to_string(options_.port), redirect(ec));
  resolver_.reset();
  if (ec || state_ != State::kConnecting) co_return step_error("resolve", ec);

  const std::string server_name =
      options_.tls_server_name.empty() ? options_.host : options_.tls_server_name;
  if (options_.tls) {
    tls_stream_.emplace(executor_, *tls_context_);
    // SNI. The macro expands to SSL_ctrl with a void* cast of the name.
    if (SSL_set_tlsext_host_name(tls_stream_->native_handle(), server_name.c_str()) != 1) {
      co_return make_error(errc::internal, "TLS: cannot set SNI name '" + server_name + "'");
    }
    if (options_.tls_verify_peer) {
      tls_stream_->set_verify_callback(asio::ssl::host_name_verification(server_name), ec);
      if (ec) co_return make_error(errc::internal, "TLS: verify callback: " + ec.message());
    }
  } else {
    socket_.emplace(executor_);
  }

  co_await asio::async_connect(tcp_socket(), endpoints, redirect(ec));
  if (ec || state_ != State::kConnecting) co_return step_error("connect", ec);
  tcp_socket().set_option(tcp::no_delay(true), ec);  // small packets; latency matters
  ec.clear();

  if (tls_stream_) {
    co_await tls_stream_->async_handshake(asio::ssl::stream_base::client, redirect(ec));
    if (ec || state_ != State::kConnecting) co_return step_error("TLS handshake with", ec);
  }

  mqtt::Connect connect;
  connect.client_id = options_.client_id;
  connect.username = options_.username;
  connect.password = options_.password;
  connect.will = options_.will;
  connect.clean_session = options_.clean_session;
  connect.keep_alive = options_.keep_alive_s;
  std::string bytes;
  if (auto s = mqtt::encode(connect, bytes); !s) {
    co_return make_error(errc::invalid_argument,
                         "CONNECT for " + options_.host + ": " + s.error().message);
  }
  co_await write_all(bytes, ec);
  if (ec || state_ != State::kConnecting) co_return step_error("send CONNECT to", ec);
  stats_.bytes_written += bytes.size();

  for (;;) {
    auto decoded = mqtt::decode(in_buf_, options_.max_packet_size);
    if (!decoded) co_return protocol_error("bad CONNACK: " + decoded.error().message);
    if (*decoded) {
      auto& d = **decoded;
      auto* connack = std::get_if<mqtt::Connack>(&d.packet);
      if (!connack) {
        co_return protocol_error(std::string("expected CONNACK, got ") +
                                 std::string(mqtt::to_string(mqtt::type_of(d.packet))));
      }
      in_buf_.erase(0, d.consumed);  // anything after CONNACK belongs to the read loop
      if (connack->code != mqtt::ConnectReturn::accepted) {
        refused_code_ = connack->code;
        co_return refused_error(connack->code);
      }
      co_return *connack;
    }
    co_await read_some(ec);
    if (ec || state_ != State::kConnecting) {
      if (ec == asio::error::eof && !connect_timed_out_ && state_ == State::kConnecting) {
        co_return make_error(errc::unavailable, "server closed the connection before CONNACK");
      }
      co_return step_error("wait for CONNACK from", ec);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Publish / subscribe

awaitable<Status> MqttClient::wait(std::shared_ptr<Waiter> waiter) {
  while (!waiter->done) {
    boost::system::error_code ec;  // operation_aborted is the wake-up itself
    co_await waiter->timer.async_wait(redirect(ec));
  }
  co_return std::move(waiter->status);
}

awaitable<Status> MqttClient::wait_until_ready(std::uint8_t qos) {
  auto self = shared_from_this();
  for (;;) {
    if (state_ != State::kConnected) co_return not_connected_error();
    const bool buffer_room = bytes_queued_ - bytes_flushed_ < options_.max_outbound_bytes;
    const bool window_room = qos == 0 || inflight_.size() < options_.max_inflight;
    if (buffer_room && window_room) co_return Status{};
    // room_signal_ never expires; every PUBACK, write completion and fail() cancels it, and
    // each waiter re-checks. Few publishers per client, so waking them all is cheap.
    boost::system::error_code ec;
    co_await room_signal_.async_wait(redirect(ec));
  }
}

awaitable<Status> MqttClient::async_publish(std::string topic, std::string payload,
                                            std::uint8_t qos, bool retain, AckHandler on_ack) {
  auto self = shared_from_this();
  if (qos > 1) co_return make_error(errc::invalid_argument, "publish: QoS must be 0 or 1");
  if (topic.size() > 0xFFFF)
    co_return make_error(errc::invalid_argument, "publish: topic too long");
  if (auto valid = mqtt::validate_topic_name(topic); !valid) co_return valid;
  if (auto room = co_await wait_until_ready(qos); !room) co_return room;

  mqtt::Publish packet;
  packet.topic = std::move(topic);
  packet.payload = std::move(payload);
  packet.qos = qos;
  packet.retain = retain;
  if (qos == 1) {
    packet.packet_id = next_packet_id();
    inflight_.emplace(packet.packet_id, std::move(on_ack));
  }
  enqueue(packet);
  if (qos == 0 && on_ack) write_waiters_.emplace_back(bytes_queued_, std::move(on_ack));
  ++stats_.publishes_sent;
  co_return Status{};
}

awaitable<Status> MqttClient::publish(std::string topic, std::string payload, std::uint8_t qos,
                                      bool retain) {
  auto self = shared_from_this();
  auto waiter = std::make_shared<Waiter>(executor_);
  // A named handler: gcc 12 miscompiles lambda temporaries inside co_await expressions.
  AckHandler on_ack = [waiter](Status s) { waiter->complete(std::move(s)); };
  auto queued =
      co_await async_publish(std::move(topic), std::move(payload), qos, retain, std::move(on_ack));
  if (!queued) co_return queued;
  co_return co_await wait(waiter);
}

awaitable<Result<std::vector<std::uint8_t>>> MqttClient::subscribe(
    std::vector<mqtt::Subscription> subscriptions) {
  auto self = shared_from_this();
  if (state_ != State::kConnected) co_return not_connected_error();
  if (subscriptions.empty()) {
    co_return make_error(errc::invalid_argument, "subscribe: no topic filters");
  }
  for (const auto& s : subscriptions) {
    if (s.qos > 2) co_return make_error(errc::invalid_argument, "subscribe: QoS must be 0..2");
    if (s.filter.size() > 0xFFFF) {
      co_return make_error(errc::invalid_argument, "subscribe: filter too long");
    }
    if (auto valid = mqtt::validate_topic_filter(s.filter); !valid) co_return valid.error();
  }
  if (requests_.size() >= kMaxPendingRequests) {
    co_return make_error(errc::limit_exceeded, "too many SUBSCRIBE/UNSUBSCRIBE in flight");
  }
  auto waiter = std::make_shared<Waiter>(executor_);
  waiter->expect = mqtt::PacketType::suback;
  waiter->expected_codes = subscriptions.size();
  mqtt::Subscribe packet;
  packet.packet_id = next_packet_id();
  packet.subscriptions = std::move(subscriptions);
  requests_.emplace(packet.packet_id, waiter);
  enqueue(packet);
  if (auto s = co_await wait(waiter); !s) co_return std::move(s).error();
  co_return std::move(waiter->codes);
}

awaitable<Result<std::uint8_t>> MqttClient::subscribe(std::string filter, std::uint8_t qos) {
  std::vector<mqtt::Subscription> subs;
  subs.push_back(mqtt::Subscription{std::move(filter), qos});
  const std::string name = subs.front().filter;
  auto codes = co_await subscribe(std::move(subs));
  if (!codes) co_return std::move(codes).error();
  const std::uint8_t granted = codes->front();
  if (granted == mqtt::kSubackFailure) {
    co_return make_error(errc::forbidden, "subscription to '" + name + "' refused by server");
  }
  co_return granted;
}

awaitable<Status> MqttClient::unsubscribe(std::vector<std::string> filters) {
  auto self = shared_from_this();
  if (state_ != State::kConnected) co_return not_connected_error();
  if (filters.empty()) co_return make_error(errc::invalid_argument, "unsubscribe: no filters");
  for (const auto& f : filters) {
    if (f.size() > 0xFFFF) co_return make_error(errc::invalid_argument, "unsubscribe: too long");
    if (auto valid = mqtt::validate_topic_filter(f); !valid) co_return valid;
  }
  if (requests_.size() >= kMaxPendingRequests) {
    co_return make_error(errc::limit_exceeded, "too many SUBSCRIBE/UNSUBSCRIBE in flight");
  }
  auto waiter = std::make_shared<Waiter>(executor_);
  waiter->expect = mqtt::PacketType::unsuback;
  mqtt::Unsubscribe packet;
  packet.packet_id = next_packet_id();
  packet.filters = std::move(filters);
  requests_.emplace(packet.packet_id, waiter);
  enqueue(packet);
  co_return co_await wait(waiter);
}

awaitable<Status> MqttClient::disconnect(std::chrono::milliseconds drain) {
  auto self = shared_from_this();
  if (state_ != State::kConnected) co_return not_connected_error();
  state_ = State::kDisconnecting;
  room_signal_.cancel();  // publishers waiting for room now see the refusal
  if (drain.count() > 0 && !inflight_.empty()) {
    // The last PUBACK or fail() cancels the timer early.
    drain_timer_.expires_after(drain);
    boost::system::error_code ec;
    co_await drain_timer_.async_wait(redirect(ec));
    if (!running()) co_return not_connected_error();
  }
  enqueue(mqtt::Disconnect{});
  disconnect_queued_ = true;
  auto waiter = std::make_shared<Waiter>(executor_);
  write_waiters_.emplace_back(bytes_queued_,
                              [waiter](Status s) { waiter->complete(std::move(s)); });
  auto written = co_await wait(waiter);
  fail(make_error(errc::cancelled, "disconnected by client"));
  co_return written;
}

void MqttClient::close() {
  asio::post(executor_, [weak = weak_from_this()] {
    if (auto client = weak.lock()) client->fail(make_error(errc::cancelled, "closed by client"));
  });
}

// ---------------------------------------------------------------------------------------------
// Loops

void MqttClient::enqueue(const mqtt::Packet& packet) {
  if (!running()) return;
  const std::size_t before = out_buf_.size();
  // Every packet is checked before it gets here (topic and filter lengths); an unencodable
  // one would be a bug, and ends the connection rather than corrupting the stream.
  if (auto s = mqtt::encode(packet, out_buf_); !s) {
    fail(std::move(s).error());
    return;
  }
  bytes_queued_ += out_buf_.size() - before;
  if (writer_idle_) write_signal_.cancel();
}

std::uint16_t MqttClient::next_packet_id() {
  // Terminates: ids in use are bounded by kMaxInflightLimit + kMaxPendingRequests < 65535.
  for (;;) {
    if (++last_packet_id_ == 0) last_packet_id_ = 1;
    if (!inflight_.contains(last_packet_id_) && !requests_.contains(last_packet_id_)) {
      return last_packet_id_;
    }
  }
}

void MqttClient::complete_writes() {
  while (!write_waiters_.empty() && write_waiters_.front().first <= bytes_flushed_) {
    auto handler = std::move(write_waiters_.front().second);
    write_waiters_.pop_front();
    handler(Status{});
  }
}

awaitable<void> MqttClient::write_loop([[maybe_unused]] std::shared_ptr<MqttClient> self) {
  boost::system::error_code ec;
  while (running()) {
    if (out_buf_.empty()) {
      writer_idle_ = true;
      co_await write_signal_.async_wait(redirect(ec));  // woken by enqueue() or fail()
      writer_idle_ = false;
      continue;
    }
    // Everything queued so far goes out in one write; packets queued meanwhile wait for the
    // next one. Exactly one write is in flight.
    writing_.clear();
    std::swap(writing_, out_buf_);
    co_await write_all(writing_, ec);
    if (ec) {
      fail(make_error(errc::unavailable, "connection lost (write): " + ec.message()));
      co_return;
    }
    stats_.bytes_written += writing_.size();
    bytes_flushed_ += writing_.size();
    last_write_ = Clock::now();
    complete_writes();
    room_signal_.cancel();
  }
}

awaitable<void> MqttClient::read_loop([[maybe_unused]] std::shared_ptr<MqttClient> self) {
  boost::system::error_code ec;
  while (running()) {
    std::size_t offset = 0;
    for (;;) {
      auto decoded =
          mqtt::decode(std::string_view(in_buf_).substr(offset), options_.max_packet_size);
      if (!decoded) {
        fail(Error{decoded.error().code, "bad packet from server: " + decoded.error().message});
        co_return;
      }
      if (!*decoded) break;
      offset += (*decoded)->consumed;
      if (auto handled = handle_packet(std::move((*decoded)->packet)); !handled) {
        fail(std::move(handled).error());
        co_return;
      }
      if (!running()) co_return;
    }
    in_buf_.erase(0, offset);

    // Our acks pile up in the outbound buffer if the server stops reading; stop reading too.
    while (running() && bytes_queued_ - bytes_flushed_ >= options_.max_outbound_bytes) {
      co_await room_signal_.async_wait(redirect(ec));
    }
    if (!running()) co_return;

    co_await read_some(ec);
    if (ec && disconnect_queued_) {
      // The server closes after our DISCONNECT, possibly before disconnect() resumes.
      fail(make_error(errc::cancelled, "disconnected by client"));
      co_return;
    }
    if (ec) {
      fail(make_error(errc::unavailable, ec == asio::error::eof
                                             ? std::string("connection closed by server")
                                             : "connection lost (read): " + ec.message()));
      co_return;
    }
  }
}

awaitable<void> MqttClient::keep_alive_loop([[maybe_unused]] std::shared_ptr<MqttClient> self) {
  const auto period = std::chrono::seconds(options_.keep_alive_s);
  boost::system::error_code ec;
  while (running()) {
    const auto now = Clock::now();
    if (ping_sent_ && now - *ping_sent_ >= period) {
      fail(make_error(errc::timeout, "no PINGRESP within the keep-alive period (" +
                                         std::to_string(options_.keep_alive_s) + " s)"));
      co_return;
    }
    // MQTT-3.1.2-23: some control packet must leave within each keep-alive period.
    if (!ping_sent_ && now - last_write_ >= period) {
      enqueue(mqtt::Pingreq{});
      ping_sent_ = now;
    }
    keep_alive_timer_.expires_at(ping_sent_ ? *ping_sent_ + period : last_write_ + period);
    co_await keep_alive_timer_.async_wait(redirect(ec));
  }
}

Status MqttClient::handle_packet(mqtt::Packet packet) {
  if (auto* publish = std::get_if<mqtt::Publish>(&packet)) {
    const std::uint8_t qos = publish->qos;
    const std::uint16_t id = publish->packet_id;
    if (qos == 2 && !qos2_received_.insert(id).second) {
      enqueue(mqtt::Pubrec{id});  // a resend before our PUBREC arrived: deliver only once
      return Status{};
    }
    ++stats_.publishes_received;
    if (on_message_) on_message_(std::move(*publish));
    if (qos == 1) enqueue(mqtt::Puback{id});
    if (qos == 2) enqueue(mqtt::Pubrec{id});
    return Status{};
  }
  if (auto* puback = std::get_if<mqtt::Puback>(&packet)) {
    auto it = inflight_.find(puback->packet_id);
    if (it == inflight_.end()) {
      log::debug(kLog, "PUBACK for unknown packet_id={}", puback->packet_id);
      return Status{};
    }
    auto handler = std::move(it->second);
    inflight_.erase(it);
    ++stats_.pubacks_received;
    room_signal_.cancel();
    if (state_ == State::kDisconnecting && inflight_.empty()) drain_timer_.cancel();
    if (handler) handler(Status{});
    return Status{};
  }
  if (auto* pubrel = std::get_if<mqtt::Pubrel>(&packet)) {
    qos2_received_.erase(pubrel->packet_id);
    enqueue(mqtt::Pubcomp{pubrel->packet_id});
    return Status{};
  }
  if (auto* suback = std::get_if<mqtt::Suback>(&packet)) {
    auto it = requests_.find(suback->packet_id);
    if (it == requests_.end() || it->second->expect != mqtt::PacketType::suback) {
      return protocol_error("SUBACK for unknown packet id " + std::to_string(suback->packet_id));
    }
    auto waiter = it->second;
    requests_.erase(it);
    if (suback->return_codes.size() != waiter->expected_codes) {
      return protocol_error("SUBACK has " + std::to_string(suback->return_codes.size()) +
                            " return codes for " + std::to_string(waiter->expected_codes) +
                            " filters");
    }
    waiter->codes = std::move(suback->return_codes);
    waiter->complete(Status{});
    return Status{};
  }
  if (auto* unsuback = std::get_if<mqtt::Unsuback>(&packet)) {
    auto it = requests_.find(unsuback->packet_id);
    if (it == requests_.end() || it->second->expect != mqtt::PacketType::unsuback) {
      return protocol_error("UNSUBACK for unknown packet id " +
                            std::to_string(unsuback->packet_id));
    }
    auto waiter = it->second;
    requests_.erase(it);
    waiter->complete(Status{});
    return Status{};
  }
  if (std::holds_alternative<mqtt::Pingresp>(packet)) {
    ping_sent_.reset();
    return Status{};
  }
  // CONNACK twice, PUBREC/PUBCOMP for QoS 2 we never send, or client-only packets.
  return protocol_error("unexpected " + std::string(mqtt::to_string(mqtt::type_of(packet))));
}

void MqttClient::fail(Error why) {
  if (state_ == State::kClosed) return;
  const bool was_connected = running();
  state_ = State::kClosed;
  if (was_connected) {
    if (why.code == errc::cancelled) {
      log::debug(kLog, "closed client_id={} reason=\"{}\"", options_.client_id, why.message);
    } else {
      log::info(kLog, "connection ended client_id={} reason=\"{}\"", options_.client_id,
                why.message);
    }
  }
  close_reason_ = why;

  boost::system::error_code ignored;
  if (resolver_) resolver_->cancel();
  if (socket_ || tls_stream_) {
    tcp_socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp_socket().close(ignored);
  }
  write_signal_.cancel();
  room_signal_.cancel();
  connect_timer_.cancel();
  keep_alive_timer_.cancel();
  drain_timer_.cancel();

  for (auto& [id, waiter] : requests_) waiter->complete(why);
  requests_.clear();

  std::vector<AckHandler> handlers;
  handlers.reserve(inflight_.size() + write_waiters_.size());
  for (auto& [id, handler] : inflight_) {
    if (handler) handlers.push_back(std::move(handler));
  }
  inflight_.clear();
  for (auto& [offset, handler] : write_waiters_) handlers.push_back(std::move(handler));
  write_waiters_.clear();
  out_buf_.clear();

  // Posted: fail() may run inside a caller's stack, and user code must not re-enter it there.
  // Releasing the handlers here (not inline) also breaks any cycle they hold through us.
  asio::post(executor_, [self = shared_from_this(), handlers = std::move(handlers), why,
                         was_connected]() mutable {
    for (auto& handler : handlers) handler(why);
    auto on_close = std::move(self->on_close_);
    self->on_close_ = nullptr;
    self->on_message_ = nullptr;
    if (was_connected && on_close) on_close(why);
  });
}

}  // namespace cairn::net
