// Session: one MQTT connection from a module (docs/protocol.md §3): CONNECT and
// authentication, publish into the hub, subscriptions, delivery of module input messages,
// keep-alive, wills, takeover by a newer connection of the same client id.
//
// Reading is paused while max_inflight_in QoS 1 publishes await their store commit, so a fast
// publisher is slowed to the disk's pace instead of growing memory. PUBACKs go out in the
// order the PUBLISHes came in [MQTT-4.6.0-2]. At most one socket write is in flight; packets
// produced meanwhile are coalesced into the next write.
//
// Thread-safety: lives on the hub's io_context thread. Lifetime: owned by its pending
// operations (shared_from_this); close() may be called from anywhere on that thread.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "hub/endpoint.hpp"
#include "hub/identities.hpp"
#include "hub/iothub_topics.hpp"
#include "hub/publish_window.hpp"
#include "mqtt/packet.hpp"
#include "net/asio.hpp"

namespace cairn::hub {

class Hub;

class Session : public Consumer, public std::enable_shared_from_this<Session> {
 public:
  using Stream = std::variant<tcp::socket, ssl::stream<tcp::socket>>;

  // `address`: the peer's IP address, which holds an unauthenticated slot until CONNECT is
  // accepted (Hub::accept_connection).
  Session(std::shared_ptr<Hub> hub, Stream stream, std::string peer, std::string address);
  ~Session() override;

  void start();
  // Closes the connection. `graceful`: the client said DISCONNECT (no will).
  void close(std::string_view reason, bool graceful = false);

  bool deliver(const std::string& input, const Message& m, QueuePosition at, bool dup,
               std::function<void()> on_ack) override;

  const Principal& principal() const { return principal_; }
  bool wants_methods() const { return methods_ && !closed_; }
  bool wants_desired() const { return desired_ && !closed_; }
  // Sends a QoS 0 PUBLISH (twin responses, desired patches, method requests). False if closing.
  bool publish(const std::string& topic, std::string payload);

 private:
  asio::awaitable<void> run();
  asio::awaitable<bool> read_more();
  asio::awaitable<bool> handle(mqtt::Packet packet);
  asio::awaitable<bool> on_connect(mqtt::Connect& c);
  // The subscriptions stored for this client id (clean_session=0), read off the event loop.
  // The authenticator's answer for this CONNECT (which may come later: cairn-cloud).
  asio::awaitable<Result<Principal>> authenticate(const AuthRequest& request);
  asio::awaitable<std::optional<std::string>> load_stored_session();
  bool on_publish(mqtt::Publish& p);
  void on_subscribe(const mqtt::Subscribe& s);
  void on_unsubscribe(const mqtt::Unsubscribe& u);
  // Sends `ack` (SUBACK, UNSUBACK) once the subscriptions are stored: at once for a clean
  // session, after the commit for a persistent one [MQTT-3.8.4-1]. Counts as a request in
  // flight meanwhile.
  void persist_then_ack(mqtt::Packet ack, bool changed);
  // Waits while max_inflight_in publishes and requests of this client are unfinished.
  asio::awaitable<void> wait_for_inflight_room();
  // A request (twin GET/PATCH, SUBSCRIBE of a persistent session) is no longer in flight.
  void request_done();
  // The properties of a publish against max_properties and max_property_bytes; false after
  // closing the connection.
  bool check_property_limits(const InboundTopic& topic);
  void on_puback(std::uint16_t packet_id);
  bool ingest_telemetry(mqtt::Publish& p, InboundTopic& topic);
  // Whether the publish just counted may wait for others to share its commit (Hub::ingest's
  // `can_wait`): the client can go on sending while the commit waits and while it runs
  // (PublishWindow).
  bool can_keep_sending(std::uint8_t qos);
  void handle_twin_request(mqtt::Publish& p, const InboundTopic& topic);
  // Recomputes which hub services the subscriptions ask for; tells the hub what is new.
  void update_subscription_flags();
  void send(const mqtt::Packet& p);
  void write_some();
  // write_some() once this turn of the event loop is over.
  void schedule_write();
  void arm_keepalive();
  void arm_keepalive_wait();
  void complete_inbound(std::uint64_t ticket, bool ok);
  // Queues the PUBACK of a publish handled at once behind those still awaiting a commit.
  void acknowledge_in_turn(std::uint16_t packet_id);
  void send_ready_pubacks();
  // QoS of a delivery on `topic`: capped by the best matching subscription's granted QoS.
  std::uint8_t delivery_qos(std::string_view topic) const;
  void persist_subscriptions(std::function<void(Status)> done);
  Message stamped_message(std::string body, InboundTopic& topic) const;
  void publish_will();
  std::uint16_t next_packet_id();

  std::shared_ptr<Hub> hub_;
  Stream stream_;
  std::string peer_;
  std::string address_;
  bool authenticated_slot_ = false;  // the hub counts this socket as authenticated
  std::string log_id_;
  Principal principal_;
  bool connected_ = false;
  bool closed_ = false;
  bool clean_session_ = true;
  std::optional<mqtt::Will> will_;
  std::uint32_t keepalive_secs_ = 0;
  std::chrono::steady_clock::time_point last_activity_;

  std::string in_;
  std::string out_pending_;
  std::string out_writing_;
  bool writing_ = false;
  bool write_scheduled_ = false;

  asio::steady_timer keepalive_timer_;
  asio::steady_timer resume_timer_;  // wakes the reader when inbound acks drain
  asio::steady_timer token_timer_;   // closes the connection when its SAS token expires

  // Inbound QoS 1 publishes awaiting their PUBACK, in arrival order: (ticket, packet id, done,
  // ok). Twin and method publishes enter settled, so their PUBACKs keep their turn.
  struct InboundAck {
    std::uint64_t ticket;
    std::uint16_t packet_id;
    bool done = false;
    bool ok = false;
  };
  std::deque<InboundAck> inbound_;
  std::uint64_t next_ticket_ = 0;
  std::size_t qos0_pending_ = 0;  // QoS 0 publishes not yet committed (no ack to send)
  PublishWindow window_;          // what the hub sees of the client's window of QoS 1 publishes
  // Twin requests and persistent SUBSCRIBE/UNSUBSCRIBE awaiting the store or the cloud.
  std::size_t requests_pending_ = 0;
  std::size_t subscription_writes_ = 0;  // persistent SUBSCRIBE/UNSUBSCRIBE not yet committed

  // Outbound QoS 1 deliveries awaiting PUBACK.
  std::unordered_map<std::uint16_t, std::function<void()>> outbound_;
  // Outbound QoS 0 deliveries, settled when the write holding them completes.
  std::vector<std::function<void()>> written_pending_;
  std::vector<std::function<void()>> written_writing_;
  std::uint16_t last_packet_id_ = 0;

  std::vector<mqtt::Subscription> subscriptions_;
  bool module_messages_ = false;  // subscribed to its inputs: attached to its endpoints
  bool methods_ = false;          // subscribed to $iothub/methods/POST/#
  bool desired_ = false;          // subscribed to desired-property patches
};

}  // namespace cairn::hub
