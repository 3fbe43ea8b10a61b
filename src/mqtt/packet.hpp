// MQTT 3.1.1 control packets as plain values, and the codec that turns them into bytes and
// back. Pure functions: no I/O, no allocation beyond the returned values, safe to fuzz.
//
// decode() accepts any packet type in either direction; which types a peer may send is the
// session's business. It enforces the spec's well-formedness rules ([MQTT-x.x.x-y] ids in the
// tests) and a caller-chosen maximum packet size.
//
// Thread-safety: pure functions on values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/result.hpp"

namespace cairn::mqtt {

enum class PacketType : std::uint8_t {
  connect = 1,
  connack,
  publish,
  puback,
  pubrec,
  pubrel,
  pubcomp,
  subscribe,
  suback,
  unsubscribe,
  unsuback,
  pingreq,
  pingresp,
  disconnect,
};

// CONNACK return codes (MQTT 3.1.1 table 3.1).
enum class ConnectReturn : std::uint8_t {
  accepted = 0,
  unacceptable_protocol_version = 1,
  identifier_rejected = 2,
  server_unavailable = 3,
  bad_username_or_password = 4,
  not_authorized = 5,
};

inline constexpr std::uint8_t kSubackFailure = 0x80;

struct Will {
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  bool operator==(const Will&) const = default;
};

struct Connect {
  std::string protocol_name = "MQTT";
  std::uint8_t protocol_level = 4;
  std::string client_id;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::optional<Will> will;
  bool clean_session = true;
  std::uint16_t keep_alive = 0;  // seconds
  bool operator==(const Connect&) const = default;
};

struct Connack {
  bool session_present = false;
  ConnectReturn code = ConnectReturn::accepted;
  bool operator==(const Connack&) const = default;
};

struct Publish {
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;  // only for qos > 0
  bool operator==(const Publish&) const = default;
};

struct Puback {
  std::uint16_t packet_id = 0;
  bool operator==(const Puback&) const = default;
};
struct Pubrec {
  std::uint16_t packet_id = 0;
  bool operator==(const Pubrec&) const = default;
};
struct Pubrel {
  std::uint16_t packet_id = 0;
  bool operator==(const Pubrel&) const = default;
};
struct Pubcomp {
  std::uint16_t packet_id = 0;
  bool operator==(const Pubcomp&) const = default;
};

struct Subscription {
  std::string filter;
  std::uint8_t qos = 0;
  bool operator==(const Subscription&) const = default;
};

struct Subscribe {
  std::uint16_t packet_id = 0;
  std::vector<Subscription> subscriptions;  // at least one
  bool operator==(const Subscribe&) const = default;
};

struct Suback {
  std::uint16_t packet_id = 0;
  std::vector<std::uint8_t> return_codes;  // 0, 1, 2 or kSubackFailure
  bool operator==(const Suback&) const = default;
};

struct Unsubscribe {
  std::uint16_t packet_id = 0;
  std::vector<std::string> filters;  // at least one
  bool operator==(const Unsubscribe&) const = default;
};

struct Unsuback {
  std::uint16_t packet_id = 0;
  bool operator==(const Unsuback&) const = default;
};
struct Pingreq {
  bool operator==(const Pingreq&) const = default;
};
struct Pingresp {
  bool operator==(const Pingresp&) const = default;
};
struct Disconnect {
  bool operator==(const Disconnect&) const = default;
};

using Packet = std::variant<Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
                            Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect>;

PacketType type_of(const Packet& p) noexcept;
std::string_view to_string(PacketType t) noexcept;

// The largest remaining length MQTT 3.1.1 can express (268,435,455 bytes).
inline constexpr std::size_t kMaxRemainingLength = 268'435'455;

struct Decoded {
  Packet packet;
  std::size_t consumed = 0;  // bytes of `buffer` this packet used
};

// Decodes the first packet in `buffer`.
//  - ok(nullopt): the buffer holds only part of a packet; read more and call again.
//  - ok(Decoded): one whole packet; drop `consumed` bytes from the buffer.
//  - error(invalid_argument): malformed packet (message says which rule).
//  - error(limit_exceeded): the packet's total size exceeds `max_packet_size`; detected from the
//    fixed header alone, before the body arrives.
Result<std::optional<Decoded>> decode(std::string_view buffer, std::size_t max_packet_size);

// The largest string MQTT can carry in a length-prefixed field (topic, client id, ...).
inline constexpr std::size_t kMaxStringBytes = 65'535;

// Whether `p` has a wire form: every length-prefixed string (topic, filter, client id, user
// name, password, will) at most kMaxStringBytes and the whole at most kMaxRemainingLength.
// Error limit_exceeded naming the field otherwise.
Status check_encodable(const Packet& p);

// Appends the wire form of `p` to `out`; a packet check_encodable() refuses is an error and
// leaves `out` unchanged (never a truncated length). REQUIRES: packet ids non-zero where
// required.
Status encode(const Packet& p, std::string& out);
// The wire form of `p`, for packets known to be encodable (decoded ones, tests). Throws
// std::length_error for a packet check_encodable() refuses.
std::string encode(const Packet& p);

// For a buffer on which decode() failed: true if it starts with a CONNECT whose protocol name is
// "MQTT" or "MQIsdp" but whose level this codec does not speak (4 and 3 respectively). The server
// must then answer CONNACK unacceptable_protocol_version before closing [MQTT-3.1.2-2]; for any
// other decode error it closes without a CONNACK [MQTT-4.8.0-1].
bool is_unsupported_protocol_level(std::string_view buffer) noexcept;

}  // namespace cairn::mqtt
