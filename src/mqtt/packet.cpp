#include "mqtt/packet.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "mqtt/topic.hpp"

namespace cairn::mqtt {
namespace {

constexpr std::string_view kProtocolMqtt = "MQTT";
constexpr std::uint8_t kLevelMqtt311 = 4;
constexpr std::string_view kProtocolMqisdp = "MQIsdp";
constexpr std::uint8_t kLevelMqtt31 = 3;

constexpr std::size_t kMaxVarintBytes = 4;

// CONNECT flag bits (MQTT 3.1.1 section 3.1.2.3).
constexpr std::uint8_t kConnectReserved = 0x01;
constexpr std::uint8_t kConnectCleanSession = 0x02;
constexpr std::uint8_t kConnectWill = 0x04;
constexpr std::uint8_t kConnectWillQosShift = 3;
constexpr std::uint8_t kConnectWillRetain = 0x20;
constexpr std::uint8_t kConnectPassword = 0x40;
constexpr std::uint8_t kConnectUsername = 0x80;

Error malformed(std::string message) {
  return make_error(errc::invalid_argument, std::move(message));
}

// Reads the fields of one packet body. Every read checks bounds; nothing is copied until a
// field is known to be whole.
class Reader {
 public:
  explicit Reader(std::string_view in) noexcept : in_(in) {}

  bool empty() const noexcept { return in_.empty(); }
  std::size_t size() const noexcept { return in_.size(); }

  bool u8(std::uint8_t& v) noexcept {
    if (in_.empty()) return false;
    v = static_cast<std::uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool u16(std::uint16_t& v) noexcept {
    if (in_.size() < 2) return false;
    v = static_cast<std::uint16_t>((static_cast<unsigned char>(in_[0]) << 8) |
                                   static_cast<unsigned char>(in_[1]));
    in_.remove_prefix(2);
    return true;
  }
  // A field with a two-byte length prefix (UTF-8 string or binary data).
  bool prefixed(std::string_view& v) noexcept {
    std::uint16_t n = 0;
    if (!u16(n) || in_.size() < n) return false;
    v = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  std::string_view rest() noexcept {
    std::string_view r = in_;
    in_ = {};
    return r;
  }

 private:
  std::string_view in_;
};

Status read_utf8(Reader& r, std::string_view& v, const char* what) {
  if (!r.prefixed(v)) return malformed(std::string(what) + " is truncated");
  if (!is_valid_utf8_string(v)) {
    if (v.find('\0') != std::string_view::npos) {
      return malformed(std::string("[MQTT-1.5.3-2] ") + what + " contains U+0000");
    }
    return malformed(std::string("[MQTT-1.5.3-1] ") + what + " is not well-formed UTF-8");
  }
  return {};
}

Status read_packet_id(Reader& r, std::uint16_t& id, std::string_view packet) {
  if (!r.u16(id)) return malformed(std::string(packet) + " packet identifier is truncated");
  if (id == 0) {
    return malformed("[MQTT-2.3.1-1] " + std::string(packet) + " packet identifier is zero");
  }
  return {};
}

Status expect_end(const Reader& r, std::string_view packet) {
  if (!r.empty()) return malformed(std::string(packet) + " has bytes after its last field");
  return {};
}

// Checks the first byte alone, so garbage is rejected before its length has even arrived.
Status check_fixed_header(std::uint8_t byte) {
  const unsigned type = byte >> 4;
  const unsigned flags = byte & 0x0F;
  if (type == 0 || type == 15) {
    return malformed("reserved control packet type " + std::to_string(type) + " (section 2.2.1)");
  }
  const auto t = static_cast<PacketType>(type);
  switch (t) {
    case PacketType::publish:
      if (((flags >> 1) & 0x03) == 3) return malformed("[MQTT-3.3.1-4] PUBLISH QoS 3");
      if ((flags & 0x08) != 0 && (flags & 0x06) == 0) {
        return malformed("[MQTT-3.3.1-2] PUBLISH DUP set on a QoS 0 message");
      }
      return {};
    case PacketType::pubrel:
      if (flags != 0x02) return malformed("[MQTT-3.6.1-1] PUBREL fixed header flags must be 0010");
      return {};
    case PacketType::subscribe:
      if (flags != 0x02) {
        return malformed("[MQTT-3.8.1-1] SUBSCRIBE fixed header flags must be 0010");
      }
      return {};
    case PacketType::unsubscribe:
      if (flags != 0x02) {
        return malformed("[MQTT-3.10.1-1] UNSUBSCRIBE fixed header flags must be 0010");
      }
      return {};
    default:
      if (flags != 0) {
        return malformed("[MQTT-2.2.2-1] " + std::string(to_string(t)) +
                         " fixed header flags must be 0000");
      }
      return {};
  }
}

Status decode_connect(Reader& r, Packet& out) {
  auto& c = out.emplace<Connect>();
  std::string_view name;
  if (!r.prefixed(name)) return malformed("CONNECT protocol name is truncated");
  std::uint8_t level = 0;
  if (!r.u8(level)) return malformed("CONNECT protocol level is missing");
  if (name == kProtocolMqtt) {
    if (level != kLevelMqtt311) {
      return malformed("[MQTT-3.1.2-2] unsupported protocol level " + std::to_string(level));
    }
  } else if (name == kProtocolMqisdp) {
    if (level != kLevelMqtt31) {
      return malformed("[MQTT-3.1.2-2] unsupported protocol level " + std::to_string(level));
    }
  } else {
    return malformed("[MQTT-3.1.2-1] CONNECT protocol name is not MQTT");
  }
  c.protocol_name.assign(name);
  c.protocol_level = level;

  std::uint8_t flags = 0;
  if (!r.u8(flags)) return malformed("CONNECT flags are missing");
  if ((flags & kConnectReserved) != 0) {
    return malformed("[MQTT-3.1.2-3] CONNECT reserved flag must be 0");
  }
  const bool has_will = (flags & kConnectWill) != 0;
  const auto will_qos = static_cast<std::uint8_t>((flags >> kConnectWillQosShift) & 0x03);
  const bool will_retain = (flags & kConnectWillRetain) != 0;
  if (!has_will && will_qos != 0) {
    return malformed("[MQTT-3.1.2-13] CONNECT will QoS must be 0 without the will flag");
  }
  if (!has_will && will_retain) {
    return malformed("[MQTT-3.1.2-15] CONNECT will retain must be 0 without the will flag");
  }
  if (will_qos == 3) return malformed("[MQTT-3.1.2-14] CONNECT will QoS 3");
  const bool has_username = (flags & kConnectUsername) != 0;
  const bool has_password = (flags & kConnectPassword) != 0;
  if (has_password && !has_username) {
    return malformed("[MQTT-3.1.2-22] CONNECT password flag set without the user name flag");
  }
  c.clean_session = (flags & kConnectCleanSession) != 0;
  if (!r.u16(c.keep_alive)) return malformed("CONNECT keep alive is truncated");

  std::string_view field;
  CAIRN_TRY(read_utf8(r, field, "CONNECT client identifier"));
  c.client_id.assign(field);
  if (has_will) {
    auto& w = c.will.emplace();
    CAIRN_TRY(read_utf8(r, field, "CONNECT will topic"));
    CAIRN_TRY(validate_topic_name(field));
    w.topic.assign(field);
    if (!r.prefixed(field)) return malformed("CONNECT will message is truncated");
    w.payload.assign(field);
    w.qos = will_qos;
    w.retain = will_retain;
  }
  if (has_username) {
    CAIRN_TRY(read_utf8(r, field, "CONNECT user name"));
    c.username.emplace(field);
  }
  if (has_password) {
    if (!r.prefixed(field)) return malformed("CONNECT password is truncated");
    c.password.emplace(field);
  }
  return expect_end(r, "CONNECT");
}

Status decode_connack(Reader& r, Packet& out) {
  std::uint8_t ack_flags = 0;
  std::uint8_t code = 0;
  if (r.size() != 2 || !r.u8(ack_flags) || !r.u8(code)) {
    return malformed("CONNACK remaining length must be 2");
  }
  if ((ack_flags & 0xFE) != 0)
    return malformed("CONNACK reserved flags must be 0 (section 3.2.2.1)");
  if (code > static_cast<std::uint8_t>(ConnectReturn::not_authorized)) {
    return malformed("CONNACK return code " + std::to_string(code) +
                     " is reserved (section 3.2.2.3)");
  }
  if (code != 0 && (ack_flags & 0x01) != 0) {
    return malformed("[MQTT-3.2.2-4] CONNACK session present with a non-zero return code");
  }
  out.emplace<Connack>(Connack{(ack_flags & 0x01) != 0, static_cast<ConnectReturn>(code)});
  return {};
}

Status decode_publish(std::uint8_t flags, Reader& r, Packet& out) {
  auto& p = out.emplace<Publish>();
  p.retain = (flags & 0x01) != 0;
  p.qos = static_cast<std::uint8_t>((flags >> 1) & 0x03);
  p.dup = (flags & 0x08) != 0;
  std::string_view topic;
  CAIRN_TRY(read_utf8(r, topic, "PUBLISH topic name"));
  CAIRN_TRY(validate_topic_name(topic));
  p.topic.assign(topic);
  if (p.qos > 0) CAIRN_TRY(read_packet_id(r, p.packet_id, "PUBLISH"));
  p.payload.assign(r.rest());
  return {};
}

template <class Ack>
Status decode_ack(Reader& r, Packet& out, std::string_view name) {
  if (r.size() != 2) return malformed(std::string(name) + " remaining length must be 2");
  auto& a = out.emplace<Ack>();
  return read_packet_id(r, a.packet_id, name);
}

Status decode_subscribe(Reader& r, Packet& out) {
  auto& s = out.emplace<Subscribe>();
  CAIRN_TRY(read_packet_id(r, s.packet_id, "SUBSCRIBE"));
  if (r.empty()) return malformed("[MQTT-3.8.3-3] SUBSCRIBE without a topic filter");
  while (!r.empty()) {
    std::string_view filter;
    CAIRN_TRY(read_utf8(r, filter, "SUBSCRIBE topic filter"));
    CAIRN_TRY(validate_topic_filter(filter));
    std::uint8_t qos = 0;
    if (!r.u8(qos)) return malformed("SUBSCRIBE requested QoS is missing");
    if (qos > 2) {
      return malformed("[MQTT-3.8.3-4] SUBSCRIBE requested QoS byte " + std::to_string(qos) +
                       " is invalid");
    }
    s.subscriptions.push_back(Subscription{std::string(filter), qos});
  }
  return {};
}

Status decode_suback(Reader& r, Packet& out) {
  auto& s = out.emplace<Suback>();
  CAIRN_TRY(read_packet_id(r, s.packet_id, "SUBACK"));
  if (r.empty()) return malformed("SUBACK without a return code");
  const std::string_view codes = r.rest();
  s.return_codes.reserve(codes.size());
  for (char ch : codes) {
    const auto code = static_cast<std::uint8_t>(ch);
    if (code > 2 && code != kSubackFailure) {
      return malformed("[MQTT-3.9.3-2] SUBACK return code " + std::to_string(code) +
                       " is reserved");
    }
    s.return_codes.push_back(code);
  }
  return {};
}

Status decode_unsubscribe(Reader& r, Packet& out) {
  auto& u = out.emplace<Unsubscribe>();
  CAIRN_TRY(read_packet_id(r, u.packet_id, "UNSUBSCRIBE"));
  if (r.empty()) return malformed("[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter");
  while (!r.empty()) {
    std::string_view filter;
    CAIRN_TRY(read_utf8(r, filter, "UNSUBSCRIBE topic filter"));
    CAIRN_TRY(validate_topic_filter(filter));
    u.filters.emplace_back(filter);
  }
  return {};
}

template <class Empty>
Status decode_empty(const Reader& r, Packet& out, std::string_view name) {
  if (!r.empty()) return malformed(std::string(name) + " remaining length must be 0");
  out.emplace<Empty>();
  return {};
}

Status decode_body(std::uint8_t first, std::string_view body, Packet& out) {
  Reader r(body);
  const auto type = static_cast<PacketType>(first >> 4);
  switch (type) {
    case PacketType::connect:
      return decode_connect(r, out);
    case PacketType::connack:
      return decode_connack(r, out);
    case PacketType::publish:
      return decode_publish(static_cast<std::uint8_t>(first & 0x0F), r, out);
    case PacketType::puback:
      return decode_ack<Puback>(r, out, "PUBACK");
    case PacketType::pubrec:
      return decode_ack<Pubrec>(r, out, "PUBREC");
    case PacketType::pubrel:
      return decode_ack<Pubrel>(r, out, "PUBREL");
    case PacketType::pubcomp:
      return decode_ack<Pubcomp>(r, out, "PUBCOMP");
    case PacketType::subscribe:
      return decode_subscribe(r, out);
    case PacketType::suback:
      return decode_suback(r, out);
    case PacketType::unsubscribe:
      return decode_unsubscribe(r, out);
    case PacketType::unsuback:
      return decode_ack<Unsuback>(r, out, "UNSUBACK");
    case PacketType::pingreq:
      return decode_empty<Pingreq>(r, out, "PINGREQ");
    case PacketType::pingresp:
      return decode_empty<Pingresp>(r, out, "PINGRESP");
    case PacketType::disconnect:
      return decode_empty<Disconnect>(r, out, "DISCONNECT");
  }
  return malformed("reserved control packet type (section 2.2.1)");  // check_fixed_header ran first
}

// Reads the remaining-length varint that starts at buffer[1]. Returns the number of bytes it
// took, 0 if the buffer ends inside it, or an error if it runs past 4 bytes.
Result<std::size_t> read_remaining_length(std::string_view buffer, std::size_t& value) {
  value = 0;
  for (std::size_t i = 0; i < kMaxVarintBytes; ++i) {
    if (1 + i >= buffer.size()) return std::size_t{0};
    const auto b = static_cast<unsigned char>(buffer[1 + i]);
    value |= static_cast<std::size_t>(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) return i + 1;
  }
  return malformed("remaining length is longer than 4 bytes (section 2.2.3)");
}

// ---- encoding ----

std::size_t varint_size(std::size_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void put_u8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }

void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}

void put_prefixed(std::string& out, std::string_view s) {
  put_u16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}

constexpr std::size_t prefixed_size(std::string_view s) noexcept { return 2 + s.size(); }

// Writes the fixed header after making room for the whole packet. Capacity grows at least
// geometrically: an exact reserve per packet would make a writer that appends many packets to
// one buffer quadratic on standard libraries whose reserve() does not round up.
void put_header(std::string& out, std::uint8_t first, std::size_t remaining) {
  const std::size_t need = out.size() + 1 + varint_size(remaining) + remaining;
  if (need > out.capacity()) out.reserve(std::max(need, out.capacity() * 2));
  out.push_back(static_cast<char>(first));
  do {
    auto b = static_cast<std::uint8_t>(remaining & 0x7F);
    remaining >>= 7;
    if (remaining > 0) b = static_cast<std::uint8_t>(b | 0x80);
    put_u8(out, b);
  } while (remaining > 0);
}

constexpr std::uint8_t first_byte(PacketType t, std::uint8_t flags = 0) noexcept {
  return static_cast<std::uint8_t>((static_cast<unsigned>(t) << 4) | flags);
}

struct Encoder {
  std::string& out;

  void operator()(const Connect& c) const {
    std::size_t len = prefixed_size(c.protocol_name) + 1 + 1 + 2 + prefixed_size(c.client_id);
    auto flags = static_cast<std::uint8_t>(c.clean_session ? kConnectCleanSession : 0);
    if (c.will) {
      len += prefixed_size(c.will->topic) + prefixed_size(c.will->payload);
      flags |= static_cast<std::uint8_t>(kConnectWill | (c.will->qos << kConnectWillQosShift) |
                                         (c.will->retain ? kConnectWillRetain : 0));
    }
    if (c.username) {
      len += prefixed_size(*c.username);
      flags |= kConnectUsername;
    }
    if (c.password) {
      len += prefixed_size(*c.password);
      flags |= kConnectPassword;
    }
    put_header(out, first_byte(PacketType::connect), len);
    put_prefixed(out, c.protocol_name);
    put_u8(out, c.protocol_level);
    put_u8(out, flags);
    put_u16(out, c.keep_alive);
    put_prefixed(out, c.client_id);
    if (c.will) {
      put_prefixed(out, c.will->topic);
      put_prefixed(out, c.will->payload);
    }
    if (c.username) put_prefixed(out, *c.username);
    if (c.password) put_prefixed(out, *c.password);
  }

  void operator()(const Connack& c) const {
    put_header(out, first_byte(PacketType::connack), 2);
    put_u8(out, c.session_present ? 1 : 0);
    put_u8(out, static_cast<std::uint8_t>(c.code));
  }

  void operator()(const Publish& p) const {
    const std::size_t len = prefixed_size(p.topic) + (p.qos > 0 ? 2 : 0) + p.payload.size();
    const auto flags =
        static_cast<std::uint8_t>((p.dup ? 0x08 : 0) | (p.qos << 1) | (p.retain ? 0x01 : 0));
    put_header(out, first_byte(PacketType::publish, flags), len);
    put_prefixed(out, p.topic);
    if (p.qos > 0) put_u16(out, p.packet_id);
    out.append(p.payload);
  }

  void ack(PacketType t, std::uint8_t flags, std::uint16_t id) const {
    put_header(out, first_byte(t, flags), 2);
    put_u16(out, id);
  }
  void operator()(const Puback& a) const { ack(PacketType::puback, 0, a.packet_id); }
  void operator()(const Pubrec& a) const { ack(PacketType::pubrec, 0, a.packet_id); }
  void operator()(const Pubrel& a) const { ack(PacketType::pubrel, 0x02, a.packet_id); }
  void operator()(const Pubcomp& a) const { ack(PacketType::pubcomp, 0, a.packet_id); }
  void operator()(const Unsuback& a) const { ack(PacketType::unsuback, 0, a.packet_id); }

  void operator()(const Subscribe& s) const {
    std::size_t len = 2;
    for (const auto& sub : s.subscriptions) len += prefixed_size(sub.filter) + 1;
    put_header(out, first_byte(PacketType::subscribe, 0x02), len);
    put_u16(out, s.packet_id);
    for (const auto& sub : s.subscriptions) {
      put_prefixed(out, sub.filter);
      put_u8(out, sub.qos);
    }
  }

  void operator()(const Suback& s) const {
    put_header(out, first_byte(PacketType::suback), 2 + s.return_codes.size());
    put_u16(out, s.packet_id);
    for (std::uint8_t code : s.return_codes) put_u8(out, code);
  }

  void operator()(const Unsubscribe& u) const {
    std::size_t len = 2;
    for (const auto& f : u.filters) len += prefixed_size(f);
    put_header(out, first_byte(PacketType::unsubscribe, 0x02), len);
    put_u16(out, u.packet_id);
    for (const auto& f : u.filters) put_prefixed(out, f);
  }

  void operator()(const Pingreq&) const { put_header(out, first_byte(PacketType::pingreq), 0); }
  void operator()(const Pingresp&) const { put_header(out, first_byte(PacketType::pingresp), 0); }
  void operator()(const Disconnect&) const {
    put_header(out, first_byte(PacketType::disconnect), 0);
  }
};

}  // namespace

PacketType type_of(const Packet& p) noexcept {
  // The variant's alternatives are declared in PacketType order, starting at connect = 1.
  return static_cast<PacketType>(p.index() + 1);
}

std::string_view to_string(PacketType t) noexcept {
  switch (t) {
    case PacketType::connect:
      return "CONNECT";
    case PacketType::connack:
      return "CONNACK";
    case PacketType::publish:
      return "PUBLISH";
    case PacketType::puback:
      return "PUBACK";
    case PacketType::pubrec:
      return "PUBREC";
    case PacketType::pubrel:
      return "PUBREL";
    case PacketType::pubcomp:
      return "PUBCOMP";
    case PacketType::subscribe:
      return "SUBSCRIBE";
    case PacketType::suback:
      return "SUBACK";
    case PacketType::unsubscribe:
      return "UNSUBSCRIBE";
    case PacketType::unsuback:
      return "UNSUBACK";
    case PacketType::pingreq:
      return "PINGREQ";
    case PacketType::pingresp:
      return "PINGRESP";
    case PacketType::disconnect:
      return "DISCONNECT";
  }
  return "UNKNOWN";
}

Result<std::optional<Decoded>> decode(std::string_view buffer, std::size_t max_packet_size) {
  if (buffer.empty()) return std::optional<Decoded>{};
  const auto first = static_cast<std::uint8_t>(buffer[0]);
  CAIRN_TRY(check_fixed_header(first));
  std::size_t remaining = 0;
  auto varint_len = read_remaining_length(buffer, remaining);
  if (!varint_len) return std::move(varint_len).error();
  if (*varint_len == 0) return std::optional<Decoded>{};
  const std::size_t total = 1 + *varint_len + remaining;
  if (total > max_packet_size) {
    return make_error(errc::limit_exceeded, "packet of " + std::to_string(total) +
                                                " bytes exceeds the maximum of " +
                                                std::to_string(max_packet_size));
  }
  if (buffer.size() < total) return std::optional<Decoded>{};
  Decoded d{Pingreq{}, total};
  CAIRN_TRY(decode_body(first, buffer.substr(1 + *varint_len, remaining), d.packet));
  return std::optional<Decoded>(std::move(d));
}

Status check_encodable(const Packet& p) {
  Status result;
  auto field = [&result](std::string_view what, std::string_view s) {
    if (result && s.size() > kMaxStringBytes) {
      result =
          make_error(errc::limit_exceeded, std::string(what) + " of " + std::to_string(s.size()) +
                                               " bytes exceeds the MQTT limit of " +
                                               std::to_string(kMaxStringBytes));
    }
  };
  std::size_t remaining = 0;
  if (const auto* c = std::get_if<Connect>(&p)) {
    field("client id", c->client_id);
    if (c->username) field("user name", *c->username);
    if (c->password) field("password", *c->password);
    if (c->will) {
      field("will topic", c->will->topic);
      field("will payload", c->will->payload);
      remaining += c->will->payload.size();
    }
  } else if (const auto* pub = std::get_if<Publish>(&p)) {
    field("topic", pub->topic);
    remaining = prefixed_size(pub->topic) + 2 + pub->payload.size();
  } else if (const auto* s = std::get_if<Subscribe>(&p)) {
    for (const auto& sub : s->subscriptions) field("topic filter", sub.filter);
  } else if (const auto* u = std::get_if<Unsubscribe>(&p)) {
    for (const auto& f : u->filters) field("topic filter", f);
  }
  if (result && remaining > kMaxRemainingLength) {
    result = make_error(errc::limit_exceeded, "packet of " + std::to_string(remaining) +
                                                  " bytes exceeds the MQTT limit of " +
                                                  std::to_string(kMaxRemainingLength));
  }
  return result;
}

Status encode(const Packet& p, std::string& out) {
  CAIRN_TRY(check_encodable(p));
  std::visit(Encoder{out}, p);
  return {};
}

std::string encode(const Packet& p) {
  std::string out;
  if (auto s = encode(p, out); !s) throw std::length_error(s.error().message);
  return out;
}

bool is_unsupported_protocol_level(std::string_view buffer) noexcept {
  if (buffer.empty() || static_cast<std::uint8_t>(buffer[0]) != first_byte(PacketType::connect)) {
    return false;
  }
  std::size_t header = 1;
  while (true) {
    if (header >= buffer.size() || header > kMaxVarintBytes) return false;
    if ((static_cast<unsigned char>(buffer[header++]) & 0x80) == 0) break;
  }
  Reader r(buffer.substr(header));
  std::string_view name;
  std::uint8_t level = 0;
  if (!r.prefixed(name) || !r.u8(level)) return false;
  if (name == kProtocolMqtt) return level != kLevelMqtt311;
  if (name == kProtocolMqisdp) return level != kLevelMqtt31;
  return false;
}

}  // namespace cairn::mqtt
