// cairn::net::MqttClient: an asynchronous MQTT 3.1.1 client over TCP or TLS, built on Boost.Asio
// C++20 coroutines. It connects (client id, username/password, clean session, will, keep-alive
// with PINGREQ), publishes at QoS 0 and 1 with a bounded in-flight window, subscribes and
// unsubscribes, and hands every incoming PUBLISH to a message handler (QoS 1 is acknowledged
// after the handler returns; QoS 2 deliveries get the receiver-side PUBREC/PUBCOMP exchange).
// It serves the benchmarks, cairnd's upstream link and the tests.
//
// Threading: a client has one home executor, given at create(). That executor must serialise
// its handlers: a strand, or the executor of an io_context run by one thread. Every coroutine
// method (connect, publish, async_publish, subscribe, unsubscribe, disconnect) must be awaited
// from a coroutine running on that executor, i.e. co_spawn(client->get_executor(), ...). Only
// close() may be called from any thread; the accessors (connected(), stats(), ...) and the
// setters also belong on the home executor. All handlers (message, ack, close) run on the home
// executor. Internally there is at most one write in flight; packets wait in one outbound
// buffer, bounded by the options below.
//
// gcc 12 pitfall: a lambda temporary inside a co_await expression (`co_await
// c->async_publish(t, p, 1, false, [x](Status) {...})`) has its captures destroyed twice. Bind
// the handler to a named variable first and std::move it in.
//
// Lifetimes: create() returns a shared_ptr. While connected, the client's own read, write and
// keep-alive loops hold a reference, so dropping the last user reference does NOT close the
// connection: call disconnect() or close(). The client is single-use: after the connection ends
// (disconnect, close, connection loss, refused CONNACK) every method fails with
// errc::unavailable; make a new client to reconnect. Handlers must not capture a shared_ptr to
// the client itself (that would be a cycle while connected); capture a weak_ptr or a raw pointer
// (the client outlives every call of its handlers). Handlers are released when the connection
// ends.
//
// Errors are values (cairn::Status / Result): unavailable (not connected, connection lost or
// refused with CONNACK 3), unauthorized (CONNACK 4 or 5), invalid_argument (bad arguments, CONNACK
// 1 or 2, protocol violation by the server), timeout (connect or keep-alive), limit_exceeded
// (inbound packet too big), cancelled (close() or disconnect() while an operation waited).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include "core/result.hpp"
#include "mqtt/packet.hpp"

namespace cairn::net {

struct MqttClientOptions {
  // Where to connect. `host` is a name or an address literal.
  std::string host = "127.0.0.1";
  std::uint16_t port = 1883;

  // TLS: off means plain TCP (loopback benchmarks, tests).
  bool tls = false;
  // PEM file with the CA certificates that verify the server; empty uses the system store.
  std::string ca_file;
  // PEM text of further CA certificates to trust (e.g. a trust bundle fetched at run time, so
  // it never has to be written to a file). Used together with ca_file or the system store.
  std::string ca_pem;
  // Name sent as SNI and checked against the server certificate; empty means `host`.
  std::string tls_server_name;
  // Skipping verification is only for tests against throwaway certificates.
  bool tls_verify_peer = true;

  // CONNECT fields.
  std::string client_id;
  std::optional<std::string> username;
  std::optional<std::string> password;
  bool clean_session = true;
  // Seconds; 0 disables PINGREQ. Shorter notices dead links sooner but costs idle traffic.
  std::uint16_t keep_alive_s = 60;
  std::optional<mqtt::Will> will;

  // Bounds. Each trades memory for throughput (or for tolerance of slow peers).
  // QoS 1 publishes awaiting PUBACK; async_publish waits for a free slot beyond this.
  std::size_t max_inflight = 64;
  // Encoded bytes queued but not yet written; QoS 0 publishers wait for room beyond this.
  std::size_t max_outbound_bytes = 4 * 1024 * 1024;
  // Largest inbound packet accepted; a bigger one ends the connection with limit_exceeded.
  std::size_t max_packet_size = 1024 * 1024;
  // TCP connect + TLS handshake + CONNACK must finish within this.
  std::chrono::milliseconds connect_timeout{10'000};
};

struct MqttClientStats {
  std::uint64_t publishes_sent = 0;      // PUBLISH packets queued (any QoS)
  std::uint64_t pubacks_received = 0;    // QoS 1 publishes completed by the server
  std::uint64_t publishes_received = 0;  // PUBLISH packets delivered to the message handler
  std::uint64_t bytes_written = 0;
  std::uint64_t bytes_read = 0;
};

class MqttClient : public std::enable_shared_from_this<MqttClient> {
 public:
  using Executor = boost::asio::any_io_executor;
  // Incoming PUBLISH. For QoS 1 the PUBACK is queued when the handler returns. Runs on the
  // home executor; the read loop pauses until it returns (backpressure on the server).
  using MessageHandler = std::function<void(mqtt::Publish)>;
  // Completion of one publish: ok, or why it will never complete. Called at most once.
  using AckHandler = std::function<void(Status)>;
  // The connection ended after a successful connect(); `why` has errc::cancelled for a local
  // disconnect()/close(). Called at most once.
  using CloseHandler = std::function<void(const Error& why)>;

  // Builds a client; loads the TLS settings now, so a bad CA file fails here.
  // REQUIRES: `executor` serialises its handlers (a strand or a one-thread io_context).
  [[nodiscard]] static Result<std::shared_ptr<MqttClient>> create(Executor executor,
                                                                  MqttClientOptions options);

  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;
  ~MqttClient();

  const Executor& get_executor() const noexcept { return executor_; }
  const MqttClientOptions& options() const noexcept { return options_; }

  // On the home executor; normally before connect(), so that no delivery is missed.
  void set_message_handler(MessageHandler handler);
  void set_close_handler(CloseHandler handler);

  // Opens TCP (and TLS), sends CONNECT and waits for CONNACK. On success returns the CONNACK
  // (session_present). A refusal returns an error whose message names the return code; the code
  // itself is then available from refused_code().
  // REQUIRES: first call on this client.
  boost::asio::awaitable<Result<mqtt::Connack>> connect();

  // Publishes and waits: for QoS 0 until the packet is written to the socket, for QoS 1 until
  // PUBACK. REQUIRES: qos is 0 or 1; `topic` is a valid topic name.
  boost::asio::awaitable<Status> publish(std::string topic, std::string payload, std::uint8_t qos,
                                         bool retain = false);

  // Pipelined publish: waits only for room (a free in-flight slot for QoS 1, outbound buffer
  // space for QoS 0), queues the packet and returns. `on_ack` (optional) is then called exactly
  // once: at PUBACK for QoS 1, when written to the socket for QoS 0, or with an error if the
  // connection ends first. If this returns an error, the packet was not queued and `on_ack` is
  // never called.
  boost::asio::awaitable<Status> async_publish(std::string topic, std::string payload,
                                               std::uint8_t qos, bool retain = false,
                                               AckHandler on_ack = {});

  // Waits until a publish at `qos` would be queued at once (a free in-flight slot, buffer room).
  // For producers that build the payload at the last moment, e.g. with a send timestamp: on
  // return, an async_publish() made before any other co_await does not wait.
  boost::asio::awaitable<Status> wait_until_ready(std::uint8_t qos);

  // Sends SUBSCRIBE and waits for SUBACK. Returns one code per filter: the granted QoS or
  // mqtt::kSubackFailure.
  boost::asio::awaitable<Result<std::vector<std::uint8_t>>> subscribe(
      std::vector<mqtt::Subscription> subscriptions);
  // One filter; a refused subscription (0x80) is an errc::forbidden error.
  boost::asio::awaitable<Result<std::uint8_t>> subscribe(std::string filter, std::uint8_t qos);

  // Sends UNSUBSCRIBE and waits for UNSUBACK.
  boost::asio::awaitable<Status> unsubscribe(std::vector<std::string> filters);

  // Refuses new publishes, waits up to `drain` for outstanding QoS 1 publishes to be
  // acknowledged, then sends DISCONNECT (after everything already queued), waits until it is
  // written and closes the socket. QoS 1 publishes still unacknowledged then fail with
  // errc::cancelled (the server may or may not have them: MQTT does not say).
  boost::asio::awaitable<Status> disconnect(
      std::chrono::milliseconds drain = std::chrono::milliseconds::zero());

  // Closes the connection without DISCONNECT (the server publishes the will). Pending
  // operations complete with errc::cancelled. Thread-safe; idempotent.
  void close();

  bool connected() const noexcept { return state_ == State::kConnected; }
  // The CONNACK return code of a refused connect(), if that is how it ended.
  std::optional<mqtt::ConnectReturn> refused_code() const noexcept { return refused_code_; }
  // Why the connection ended; nullopt while connected or never connected.
  const std::optional<Error>& close_reason() const noexcept { return close_reason_; }
  std::size_t inflight() const noexcept { return inflight_.size(); }
  const MqttClientStats& stats() const noexcept { return stats_; }

 private:
  // kDisconnecting: DISCONNECT is queued; reads and writes go on, new requests are refused.
  enum class State { kIdle, kConnecting, kConnected, kDisconnecting, kClosed };
  struct Waiter;  // one coroutine waiting for one event (an ack, a write)

  MqttClient(Executor executor, MqttClientOptions options);

  boost::asio::ip::tcp::socket& tcp_socket();
  boost::asio::awaitable<std::size_t> read_some(boost::system::error_code& ec);
  boost::asio::awaitable<void> write_all(const std::string& bytes, boost::system::error_code& ec);
  boost::asio::awaitable<Result<mqtt::Connack>> do_connect();
  boost::asio::awaitable<Status> wait(std::shared_ptr<Waiter> waiter);

  boost::asio::awaitable<void> read_loop(std::shared_ptr<MqttClient> self);
  boost::asio::awaitable<void> write_loop(std::shared_ptr<MqttClient> self);
  boost::asio::awaitable<void> keep_alive_loop(std::shared_ptr<MqttClient> self);

  bool running() const noexcept {
    return state_ == State::kConnected || state_ == State::kDisconnecting;
  }
  Error not_connected_error() const;
  Status handle_packet(mqtt::Packet packet);
  void enqueue(const mqtt::Packet& packet);
  std::uint16_t next_packet_id();
  void complete_writes();
  // Ends the connection once: closes the socket, fails everything pending with `why`, wakes
  // all waiters. User callbacks are posted, never run inside the caller's stack.
  void fail(Error why);

  Executor executor_;
  MqttClientOptions options_;
  std::unique_ptr<boost::asio::ssl::context> tls_context_;
  std::optional<boost::asio::ip::tcp::socket> socket_;  // plain TCP
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_stream_;
  std::optional<boost::asio::ip::tcp::resolver> resolver_;
  State state_ = State::kIdle;
  bool connect_timed_out_ = false;
  bool disconnect_queued_ = false;  // then the server closing the socket is the expected end
  std::optional<mqtt::ConnectReturn> refused_code_;
  std::optional<Error> close_reason_;

  MessageHandler on_message_;
  CloseHandler on_close_;

  // Inbound.
  std::string in_buf_;
  std::unordered_set<std::uint16_t> qos2_received_;  // awaiting PUBREL

  // Outbound: packets are encoded straight into out_buf_; the writer swaps it with writing_.
  std::string out_buf_;
  std::string writing_;
  std::uint64_t bytes_queued_ = 0;  // running totals, to know when a given packet is written
  std::uint64_t bytes_flushed_ = 0;
  std::deque<std::pair<std::uint64_t, AckHandler>> write_waiters_;  // ordered by offset
  boost::asio::steady_timer write_signal_;  // the writer sleeps on it while out_buf_ is empty
  bool writer_idle_ = false;
  boost::asio::steady_timer room_signal_;  // publishers waiting for room sleep on it
  boost::asio::steady_timer connect_timer_;
  boost::asio::steady_timer keep_alive_timer_;
  boost::asio::steady_timer drain_timer_;  // disconnect() waits on it for the last PUBACKs
  std::chrono::steady_clock::time_point last_write_{};
  std::optional<std::chrono::steady_clock::time_point> ping_sent_;

  std::uint16_t last_packet_id_ = 0;
  std::unordered_map<std::uint16_t, AckHandler> inflight_;               // QoS 1, by packet id
  std::unordered_map<std::uint16_t, std::shared_ptr<Waiter>> requests_;  // SUBSCRIBE, UNSUBSCRIBE

  MqttClientStats stats_;
};

}  // namespace cairn::net
