#include "mqtt/packet.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cairn::mqtt {
namespace {

constexpr std::size_t kNoLimit = kMaxRemainingLength + 5;

// "10 0d 00 04 4d" -> bytes. Spaces are ignored; anything else must be a hex digit.
std::string hex(std::string_view text) {
  std::string out;
  int hi = -1;
  for (char c : text) {
    if (c == ' ') continue;
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : c - 'A' + 10;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<char>(hi * 16 + v));
      hi = -1;
    }
  }
  return out;
}

Packet decode_whole(const std::string& bytes) {
  auto r = decode(bytes, kNoLimit);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  if (!r.ok() || !r->has_value()) {
    ADD_FAILURE() << "no packet decoded";
    return Pingreq{};
  }
  EXPECT_EQ((*r)->consumed, bytes.size());
  return (*r)->packet;
}

// Expects decode to reject `bytes` as malformed with a message containing `rule`.
void expect_malformed(const std::string& bytes, std::string_view rule) {
  auto r = decode(bytes, kNoLimit);
  ASSERT_FALSE(r.ok()) << "accepted a malformed packet, expected " << rule;
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find(rule), std::string::npos)
      << "message '" << r.error().message << "' does not name " << rule;
}

Connect full_connect() {
  Connect c;
  c.client_id = "id";
  c.clean_session = false;
  c.keep_alive = 10;
  c.will = Will{"w", "bye", 1, true};
  c.username = "u";
  c.password = "p";
  return c;
}

std::vector<Packet> samples() {
  Connect minimal;
  minimal.client_id = "dev1/mod1";
  minimal.keep_alive = 180;
  Connect mqisdp;
  mqisdp.protocol_name = "MQIsdp";
  mqisdp.protocol_level = 3;
  mqisdp.client_id = "old";
  Connect empty_id;  // zero-length client id is legal on the wire; the session decides
  Connect will_only;
  will_only.client_id = "w";
  will_only.will = Will{"devices/d/messages/events/", std::string("\0\xff", 2), 2, false};
  Connect user_only;
  user_only.client_id = "u";
  user_only.username = "hub.example/dev1/mod1/?api-version=2021-04-12";
  Connect binary_password = full_connect();
  binary_password.password = std::string("\0\x01\xfe", 3);

  Publish q0{"a/b", "hi", 0, false, false, 0};
  Publish q1{
      "devices/dev1/modules/m1/messages/events/%24.on=alert", "{\"t\":1}", 1, true, true, 10};
  Publish q2{"t", "", 2, false, false, 65535};
  Publish utf8{"température/日本/😀", std::string("\0payload", 8), 1, false, false, 1};
  Publish big{"big", std::string(70000, 'x'), 1, false, false, 7};

  return {
      minimal,
      mqisdp,
      empty_id,
      will_only,
      user_only,
      full_connect(),
      binary_password,
      Connack{},
      Connack{true, ConnectReturn::accepted},
      Connack{false, ConnectReturn::not_authorized},
      q0,
      q1,
      q2,
      utf8,
      big,
      Puback{1},
      Pubrec{2},
      Pubrel{3},
      Pubcomp{65535},
      Subscribe{1, {{"a/+", 1}, {"#", 0}, {"$iothub/twin/res/#", 2}}},
      Suback{1, {0, 1, 2, kSubackFailure}},
      Unsubscribe{2, {"a/+", "devices/d/modules/m/#"}},
      Unsuback{2},
      Pingreq{},
      Pingresp{},
      Disconnect{},
  };
}

// ---- round trips and known encodings ----

TEST(PacketCodec, RoundTripEveryPacketType) {
  std::vector<bool> seen(15, false);
  for (const Packet& p : samples()) {
    const std::string bytes = encode(p);
    const Packet back = decode_whole(bytes);
    EXPECT_EQ(back, p) << to_string(type_of(p));
    seen[static_cast<std::size_t>(type_of(p))] = true;
  }
  for (std::size_t t = 1; t <= 14; ++t) EXPECT_TRUE(seen[t]) << "no sample of type " << t;
}

TEST(PacketCodec, EncodeAppendsToCallersBuffer) {
  std::string out = "prefix";
  ASSERT_TRUE(encode(Pingreq{}, out));
  ASSERT_TRUE(encode(Puback{5}, out));
  EXPECT_EQ(out, "prefix" + hex("c0 00 40 02 00 05"));
}

// A topic longer than a 16-bit length can say used to be written with its length truncated:
// the peer then read a malformed packet. It is an error now, and nothing is written.
TEST(PacketCodec, TopicOverSixtyFourKibibytesIsAnErrorNotATruncation) {
  std::string out = "prefix";
  const Publish too_long{std::string(kMaxStringBytes + 1, 't'), "body", 1, false, false, 3};
  auto s = encode(too_long, out);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, cairn::errc::limit_exceeded);
  EXPECT_NE(s.error().message.find("topic"), std::string::npos) << s.error().message;
  EXPECT_EQ(out, "prefix");
  EXPECT_THROW((void)encode(Packet{too_long}), std::length_error);

  // Exactly the limit still encodes and decodes back to the same topic.
  const Publish longest{std::string(kMaxStringBytes, 't'), "body", 1, false, false, 3};
  ASSERT_TRUE(encode(longest, out));
  auto d = decode(std::string_view(out).substr(6), kNoLimit);
  ASSERT_TRUE(d && *d);
  EXPECT_EQ(std::get<Publish>((*d)->packet).topic.size(), kMaxStringBytes);

  Connect c;
  c.client_id = std::string(kMaxStringBytes + 1, 'c');
  EXPECT_FALSE(check_encodable(c));
  Subscribe sub{1, {Subscription{std::string(kMaxStringBytes + 1, 'f'), 1}}};
  EXPECT_FALSE(check_encodable(sub));
}

struct KnownEncoding {
  const char* name;
  Packet packet;
  const char* hex;
};

TEST(PacketCodec, KnownEncodings) {
  Connect minimal;
  minimal.client_id = "c";
  minimal.keep_alive = 60;
  Connect mqisdp = minimal;
  mqisdp.protocol_name = "MQIsdp";
  mqisdp.protocol_level = 3;
  const KnownEncoding cases[] = {
      {"connect minimal", minimal, "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 63"},
      {"connect full", full_connect(),
       "10 1c 00 04 4d 51 54 54 04 ec 00 0a 00 02 69 64 00 01 77 00 03 62 79 65"
       " 00 01 75 00 01 70"},
      {"connect mqisdp", mqisdp, "10 0f 00 06 4d 51 49 73 64 70 03 02 00 3c 00 01 63"},
      {"connack session present", Connack{true, ConnectReturn::accepted}, "20 02 01 00"},
      {"connack refused", Connack{false, ConnectReturn::not_authorized}, "20 02 00 05"},
      {"publish qos0", Publish{"a/b", "hi", 0, false, false, 0}, "30 07 00 03 61 2f 62 68 69"},
      {"publish qos1 dup retain", Publish{"a/b", "hi", 1, true, true, 10},
       "3b 09 00 03 61 2f 62 00 0a 68 69"},
      {"publish qos2", Publish{"a/b", "", 2, false, false, 0x1234}, "34 07 00 03 61 2f 62 12 34"},
      {"puback", Puback{1}, "40 02 00 01"},
      {"pubrec", Pubrec{2}, "50 02 00 02"},
      {"pubrel", Pubrel{3}, "62 02 00 03"},
      {"pubcomp", Pubcomp{0x0104}, "70 02 01 04"},
      {"subscribe", Subscribe{1, {{"a/+", 1}, {"#", 0}}},
       "82 0c 00 01 00 03 61 2f 2b 01 00 01 23 00"},
      {"suback", Suback{1, {1, kSubackFailure}}, "90 04 00 01 01 80"},
      {"unsubscribe", Unsubscribe{2, {"a/+"}}, "a2 07 00 02 00 03 61 2f 2b"},
      {"unsuback", Unsuback{2}, "b0 02 00 02"},
      {"pingreq", Pingreq{}, "c0 00"},
      {"pingresp", Pingresp{}, "d0 00"},
      {"disconnect", Disconnect{}, "e0 00"},
  };
  for (const auto& c : cases) {
    const std::string bytes = hex(c.hex);
    EXPECT_EQ(encode(c.packet), bytes) << c.name;
    EXPECT_EQ(decode_whole(bytes), c.packet) << c.name;
  }
}

TEST(PacketCodec, RemainingLengthVarintBoundaries) {
  // remaining = 2 + topic(1) + payload; the varint grows at 128, 16384 and 2097152.
  const std::pair<std::size_t, std::string> cases[] = {
      {127, "7f"},         {128, "80 01"},        {16383, "ff 7f"},
      {16384, "80 80 01"}, {2097151, "ff ff 7f"}, {2097152, "80 80 80 01"},
  };
  for (const auto& [remaining, varint] : cases) {
    Publish p{"t", std::string(remaining - 3, 'x'), 0, false, false, 0};
    const std::string bytes = encode(p);
    const std::string header = hex("30 " + varint);
    ASSERT_EQ(bytes.substr(0, header.size()), header) << remaining;
    EXPECT_EQ(bytes.size(), header.size() + remaining);
    EXPECT_EQ(decode_whole(bytes), Packet(p)) << remaining;
  }
}

TEST(PacketCodec, LargestRemainingLengthIsPartialNotError) {
  // FF FF FF 7F is the 4-byte maximum, 268,435,455 (section 2.2.3): the header alone is valid.
  auto r = decode(hex("30 ff ff ff 7f 00 01 74"), kNoLimit);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_FALSE(r->has_value());
}

TEST(PacketCodec, NonMinimalRemainingLengthIsAccepted) {
  // 3.1.1, unlike MQTT 5, does not require the shortest varint; re-encoding normalises it.
  auto r = decode(hex("e0 80 00"), kNoLimit);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->consumed, 3u);
  EXPECT_EQ((*r)->packet, Packet(Disconnect{}));
  EXPECT_EQ(encode((*r)->packet), hex("e0 00"));
}

TEST(PacketCodec, TypeOfAndToString) {
  for (const Packet& p : samples()) {
    EXPECT_EQ(static_cast<std::uint8_t>(encode(p)[0]) >> 4, static_cast<int>(type_of(p)));
  }
  EXPECT_EQ(to_string(PacketType::connect), "CONNECT");
  EXPECT_EQ(to_string(PacketType::unsuback), "UNSUBACK");
  EXPECT_EQ(to_string(PacketType::disconnect), "DISCONNECT");
}

// ---- streaming ----

TEST(PacketCodec, PartialInputAtEverySplitPoint) {
  for (const Packet& p : samples()) {
    const std::string bytes = encode(p);
    if (bytes.size() > 4096) continue;  // the 70 kB sample would make this quadratic
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      auto r = decode(std::string_view(bytes).substr(0, n), kNoLimit);
      ASSERT_TRUE(r.ok()) << to_string(type_of(p)) << " split at " << n << ": "
                          << r.error().to_string();
      EXPECT_FALSE(r->has_value()) << to_string(type_of(p)) << " split at " << n;
    }
  }
}

TEST(PacketCodec, PartialLargePacketHeaderAndBody) {
  const std::string bytes = encode(Publish{"big", std::string(70000, 'x'), 1, false, false, 7});
  for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 5u, 100u, 69999u, 70009u}) {
    ASSERT_LT(n, bytes.size());
    auto r = decode(std::string_view(bytes).substr(0, n), kNoLimit);
    ASSERT_TRUE(r.ok()) << n;
    EXPECT_FALSE(r->has_value()) << n;
  }
}

TEST(PacketCodec, DecodesAStreamOnePacketAtATime) {
  std::string stream;
  const auto all = samples();
  for (const Packet& p : all) ASSERT_TRUE(encode(p, stream));
  stream += hex("30");  // the start of one more packet
  std::string_view rest = stream;
  for (const Packet& p : all) {
    auto r = decode(rest, kNoLimit);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ASSERT_TRUE(r->has_value());
    EXPECT_EQ((*r)->packet, p);
    rest.remove_prefix((*r)->consumed);
  }
  auto tail = decode(rest, kNoLimit);
  ASSERT_TRUE(tail.ok());
  EXPECT_FALSE(tail->has_value());
}

// ---- size limit ----

TEST(PacketCodec, OversizeDetectedFromFixedHeaderAlone) {
  // PUBLISH announcing 203 bytes of body; only the 3-byte fixed header has arrived.
  auto r = decode(hex("30 cb 01"), 100);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  // The largest encodable packet is refused without buffering any of it.
  auto huge = decode(hex("30 ff ff ff 7f"), 256 * 1024);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().code, errc::limit_exceeded);
}

TEST(PacketCodec, MaxPacketSizeCountsTheWholePacket) {
  const std::string bytes = encode(Publish{"t", std::string(100, 'x'), 0, false, false, 0});
  ASSERT_EQ(bytes.size(), 105u);  // 1 + 1 + 2 + 1 + 100
  auto at_limit = decode(bytes, bytes.size());
  ASSERT_TRUE(at_limit.ok());
  EXPECT_TRUE(at_limit->has_value());
  auto over = decode(bytes, bytes.size() - 1);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, errc::limit_exceeded);
}

// ---- fixed header ----

TEST(PacketMalformed, Section_2_2_1_ReservedPacketTypes) {
  expect_malformed(hex("00 00"), "reserved control packet type 0");
  expect_malformed(hex("f0 00"), "reserved control packet type 15");
}

TEST(PacketMalformed, MQTT_2_2_2_1_ReservedFlagsMustMatchTable) {
  // The first byte alone is enough to reject: no length or body has arrived yet.
  for (const char* first : {"11", "21", "48", "52", "74", "91", "b8", "c1", "d2", "e4", "e1"}) {
    expect_malformed(hex(first), "MQTT-2.2.2-1");
  }
}

TEST(PacketMalformed, MQTT_3_6_1_1_PubrelFlagsMustBe0010) {
  expect_malformed(hex("60 02 00 01"), "MQTT-3.6.1-1");
  expect_malformed(hex("63 02 00 01"), "MQTT-3.6.1-1");
}

TEST(PacketMalformed, MQTT_3_8_1_1_SubscribeFlagsMustBe0010) {
  expect_malformed(hex("80 06 00 01 00 01 61 00"), "MQTT-3.8.1-1");
  expect_malformed(hex("8a"), "MQTT-3.8.1-1");
}

TEST(PacketMalformed, MQTT_3_10_1_1_UnsubscribeFlagsMustBe0010) {
  expect_malformed(hex("a0 05 00 01 00 01 61"), "MQTT-3.10.1-1");
  expect_malformed(hex("a3"), "MQTT-3.10.1-1");
}

TEST(PacketMalformed, MQTT_3_3_1_4_PublishQos3) {
  expect_malformed(hex("36 05 00 01 74 00 01"), "MQTT-3.3.1-4");
  expect_malformed(hex("3f"), "MQTT-3.3.1-4");
}

TEST(PacketMalformed, MQTT_3_3_1_2_DupMustBeZeroForQos0) {
  expect_malformed(hex("38 03 00 01 74"), "MQTT-3.3.1-2");
}

TEST(PacketMalformed, Section_2_2_3_RemainingLengthAtMostFourBytes) {
  expect_malformed(hex("30 ff ff ff ff 01"), "longer than 4 bytes");
  // Detected as soon as the fourth byte still has its continuation bit.
  expect_malformed(hex("30 80 80 80 80"), "longer than 4 bytes");
}

// ---- packet identifiers ----

TEST(PacketMalformed, MQTT_2_3_1_1_PacketIdMustBeNonZero) {
  expect_malformed(hex("32 05 00 01 74 00 00"), "MQTT-2.3.1-1");     // PUBLISH QoS 1
  expect_malformed(hex("34 05 00 01 74 00 00"), "MQTT-2.3.1-1");     // PUBLISH QoS 2
  expect_malformed(hex("82 06 00 00 00 01 61 00"), "MQTT-2.3.1-1");  // SUBSCRIBE
  expect_malformed(hex("a2 05 00 00 00 01 61"), "MQTT-2.3.1-1");     // UNSUBSCRIBE
  expect_malformed(hex("90 03 00 00 00"), "MQTT-2.3.1-1");           // SUBACK
}

TEST(PacketMalformed, AcksEchoANonZeroPacketId) {
  for (const char* first : {"40", "50", "62", "70", "b0"}) {
    expect_malformed(hex(std::string(first) + " 02 00 00"), "packet identifier is zero");
  }
}

TEST(PacketMalformed, AcksHaveRemainingLengthTwo) {
  for (const char* first : {"40", "50", "62", "70", "b0"}) {
    expect_malformed(hex(std::string(first) + " 03 00 01 00"), "remaining length must be 2");
    expect_malformed(hex(std::string(first) + " 01 01"), "remaining length must be 2");
    expect_malformed(hex(std::string(first) + " 00"), "remaining length must be 2");
  }
}

TEST(PacketMalformed, PingAndDisconnectHaveNoBody) {
  expect_malformed(hex("c0 01 00"), "PINGREQ remaining length must be 0");
  expect_malformed(hex("d0 01 00"), "PINGRESP remaining length must be 0");
  expect_malformed(hex("e0 01 00"), "DISCONNECT remaining length must be 0");
}

// ---- CONNECT ----

// CONNECT with the given protocol name/level/flags, keep-alive 60 and client id "c".
std::string connect_bytes(std::string_view name_hex, std::string_view level_and_flags,
                          std::string_view payload_hex = "00 01 63") {
  std::string body = hex(name_hex) + hex(level_and_flags) + hex("00 3c") + hex(payload_hex);
  return std::string(1, '\x10') + static_cast<char>(body.size()) + body;
}
constexpr std::string_view kMqtt = "00 04 4d 51 54 54";

TEST(ConnectMalformed, MQTT_3_1_2_1_ProtocolNameMustBeMqtt) {
  expect_malformed(connect_bytes("00 04 4d 51 54 58", "04 02"), "MQTT-3.1.2-1");
  expect_malformed(connect_bytes("00 00", "04 02"), "MQTT-3.1.2-1");
  expect_malformed(connect_bytes("00 04 6d 71 74 74", "04 02"), "MQTT-3.1.2-1");  // "mqtt"
  EXPECT_FALSE(is_unsupported_protocol_level(connect_bytes("00 04 4d 51 54 58", "04 02")));
}

TEST(ConnectMalformed, MQTT_3_1_2_2_UnsupportedProtocolLevelGetsConnackRefusal) {
  const std::string cases[] = {
      connect_bytes(kMqtt, "05 02"),                      // MQTT 5
      connect_bytes(kMqtt, "03 02"),                      // "MQTT" with the 3.1 level
      connect_bytes("00 06 4d 51 49 73 64 70", "04 02"),  // "MQIsdp" with the 3.1.1 level
  };
  for (const auto& bytes : cases) {
    expect_malformed(bytes, "MQTT-3.1.2-2");
    EXPECT_TRUE(is_unsupported_protocol_level(bytes));
    // The level byte is enough to decide; the rest of a v5 CONNECT need not have arrived.
    EXPECT_TRUE(is_unsupported_protocol_level(bytes.substr(0, 2 + 2 + 6 + 1)));
  }
  EXPECT_FALSE(is_unsupported_protocol_level(connect_bytes(kMqtt, "04 02")));
  EXPECT_FALSE(is_unsupported_protocol_level(hex("10 05 00 04 4d 51")));  // level not yet here
  EXPECT_FALSE(is_unsupported_protocol_level(hex("30 05 00 04 4d 51 54 54 05")));
  EXPECT_FALSE(is_unsupported_protocol_level(""));
}

TEST(ConnectMalformed, MQTT_3_1_2_3_ReservedFlagMustBeZero) {
  expect_malformed(connect_bytes(kMqtt, "04 03"), "MQTT-3.1.2-3");
}

TEST(ConnectMalformed, MQTT_3_1_2_13_WillQosMustBeZeroWithoutWill) {
  expect_malformed(connect_bytes(kMqtt, "04 0a"), "MQTT-3.1.2-13");
  expect_malformed(connect_bytes(kMqtt, "04 12"), "MQTT-3.1.2-13");
}

TEST(ConnectMalformed, MQTT_3_1_2_14_WillQosMustNotBe3) {
  expect_malformed(connect_bytes(kMqtt, "04 1e", "00 01 63 00 01 77 00 00"), "MQTT-3.1.2-14");
}

TEST(ConnectMalformed, MQTT_3_1_2_15_WillRetainMustBeZeroWithoutWill) {
  expect_malformed(connect_bytes(kMqtt, "04 22"), "MQTT-3.1.2-15");
}

TEST(ConnectMalformed, MQTT_3_1_2_22_PasswordRequiresUsername) {
  expect_malformed(connect_bytes(kMqtt, "04 42", "00 01 63 00 01 70"), "MQTT-3.1.2-22");
}

TEST(ConnectMalformed, MQTT_1_5_3_1_ClientIdMustBeValidUtf8) {
  const char* bad[] = {
      "00 02 c0 80",        // overlong NUL
      "00 03 e0 80 80",     // overlong
      "00 03 ed a0 80",     // surrogate U+D800
      "00 03 ed bf bf",     // surrogate U+DFFF
      "00 04 f4 90 80 80",  // above U+10FFFF
      "00 01 f5",           // never valid
      "00 01 ff",           // never valid
      "00 01 80",           // lone continuation
      "00 02 e2 82",        // truncated sequence
      "00 02 61 c3",        // truncated at end
  };
  for (const char* id : bad) expect_malformed(connect_bytes(kMqtt, "04 02", id), "MQTT-1.5.3-1");
}

TEST(ConnectMalformed, MQTT_1_5_3_2_ClientIdMustNotContainNul) {
  expect_malformed(connect_bytes(kMqtt, "04 02", "00 03 61 00 62"), "MQTT-1.5.3-2");
}

TEST(ConnectMalformed, UsernameAndWillTopicAreValidated) {
  // user name with a surrogate
  expect_malformed(connect_bytes(kMqtt, "04 82", "00 01 63 00 03 ed a0 80"), "MQTT-1.5.3-1");
  // will topic with a wildcard
  expect_malformed(connect_bytes(kMqtt, "04 06", "00 01 63 00 03 61 2f 23 00 00"), "MQTT-3.3.2-2");
  // empty will topic
  expect_malformed(connect_bytes(kMqtt, "04 06", "00 01 63 00 00 00 00"), "MQTT-4.7.3-1");
}

TEST(ConnectMalformed, FieldsMustFitTheRemainingLength) {
  expect_malformed(connect_bytes(kMqtt, "04 02", "00 05 63"), "client identifier is truncated");
  expect_malformed(connect_bytes(kMqtt, "04 02", ""), "client identifier is truncated");
  expect_malformed(connect_bytes(kMqtt, "04 06", "00 01 63 00 01 77"), "will message");
  expect_malformed(connect_bytes(kMqtt, "04 06", "00 01 63"), "will topic");
  expect_malformed(connect_bytes(kMqtt, "04 82", "00 01 63"), "user name is truncated");
  expect_malformed(connect_bytes(kMqtt, "04 c2", "00 01 63 00 01 75"), "password is truncated");
  expect_malformed(hex("10 02 00 04"), "protocol name is truncated");
  expect_malformed(hex("10 06 00 04 4d 51 54 54"), "protocol level");
  expect_malformed(hex("10 07 00 04 4d 51 54 54 04"), "flags");
  expect_malformed(hex("10 09 00 04 4d 51 54 54 04 02 00"), "keep alive");
}

TEST(ConnectMalformed, NoBytesAfterThePayload) {
  expect_malformed(connect_bytes(kMqtt, "04 02", "00 01 63 00"), "bytes after");
  // Password flag clear but a password present.
  expect_malformed(connect_bytes(kMqtt, "04 82", "00 01 63 00 01 75 00 01 70"), "bytes after");
}

TEST(Connect, FlagsDecodeIndependently) {
  auto p = decode_whole(connect_bytes(kMqtt, "04 00"));
  const auto& c = std::get<Connect>(p);
  EXPECT_FALSE(c.clean_session);
  EXPECT_EQ(c.keep_alive, 60);
  EXPECT_EQ(c.client_id, "c");
  EXPECT_FALSE(c.will || c.username || c.password);
  // Will QoS 2 without retain, username with an empty password.
  auto q = decode_whole(connect_bytes(kMqtt, "04 d6", "00 01 63 00 01 77 00 00 00 01 75 00 00"));
  const auto& d = std::get<Connect>(q);
  ASSERT_TRUE(d.will);
  EXPECT_EQ(d.will->qos, 2);
  EXPECT_FALSE(d.will->retain);
  EXPECT_EQ(d.will->payload, "");
  EXPECT_EQ(d.username, "u");
  EXPECT_EQ(d.password, "");
}

// ---- CONNACK ----

TEST(ConnackMalformed, RemainingLengthMustBeTwo) {
  expect_malformed(hex("20 03 00 00 00"), "CONNACK remaining length must be 2");
  expect_malformed(hex("20 01 00"), "CONNACK remaining length must be 2");
}

TEST(ConnackMalformed, Section_3_2_2_1_ReservedAckFlagsMustBeZero) {
  expect_malformed(hex("20 02 02 00"), "reserved flags");
  expect_malformed(hex("20 02 80 00"), "reserved flags");
}

TEST(ConnackMalformed, Section_3_2_2_3_ReservedReturnCodes) {
  expect_malformed(hex("20 02 00 06"), "return code 6 is reserved");
  expect_malformed(hex("20 02 00 ff"), "return code 255 is reserved");
}

TEST(ConnackMalformed, MQTT_3_2_2_4_SessionPresentOnlyWhenAccepted) {
  expect_malformed(hex("20 02 01 02"), "MQTT-3.2.2-4");
}

// ---- PUBLISH ----

TEST(PublishMalformed, MQTT_3_3_2_2_TopicNameMustNotContainWildcards) {
  expect_malformed(hex("30 05 00 03 61 2f 2b"), "MQTT-3.3.2-2");
  expect_malformed(hex("30 03 00 01 23"), "MQTT-3.3.2-2");
}

TEST(PublishMalformed, MQTT_4_7_3_1_TopicNameMustNotBeEmpty) {
  expect_malformed(hex("30 02 00 00"), "MQTT-4.7.3-1");
}

TEST(PublishMalformed, MQTT_1_5_3_1_and_2_TopicNameMustBeValidUtf8WithoutNul) {
  expect_malformed(hex("30 05 00 03 ed b0 80"), "MQTT-1.5.3-1");
  expect_malformed(hex("30 05 00 03 61 00 62"), "MQTT-1.5.3-2");
}

TEST(PublishMalformed, TopicAndPacketIdMustFit) {
  expect_malformed(hex("30 03 00 05 61"), "topic name is truncated");
  expect_malformed(hex("30 01 00"), "topic name is truncated");
  expect_malformed(hex("32 04 00 01 74 00"), "packet identifier is truncated");
}

TEST(Publish, EmptyPayloadAndBinaryPayload) {
  EXPECT_EQ(decode_whole(hex("30 03 00 01 74")), Packet(Publish{"t", "", 0, false, false, 0}));
  EXPECT_EQ(decode_whole(hex("31 05 00 01 74 00 ff")),
            Packet(Publish{"t", std::string("\0\xff", 2), 0, true, false, 0}));
}

// ---- SUBSCRIBE / SUBACK / UNSUBSCRIBE ----

TEST(SubscribeMalformed, MQTT_3_8_3_3_AtLeastOneFilter) {
  expect_malformed(hex("82 02 00 01"), "MQTT-3.8.3-3");
}

TEST(SubscribeMalformed, MQTT_3_8_3_4_RequestedQosMustBe012WithZeroReservedBits) {
  expect_malformed(hex("82 06 00 01 00 01 61 03"), "MQTT-3.8.3-4");
  expect_malformed(hex("82 06 00 01 00 01 61 81"), "MQTT-3.8.3-4");
  expect_malformed(hex("82 06 00 01 00 01 61 04"), "MQTT-3.8.3-4");
}

TEST(SubscribeMalformed, EveryFilterNeedsAQosByte) {
  expect_malformed(hex("82 05 00 01 00 01 61"), "requested QoS is missing");
  expect_malformed(hex("82 09 00 01 00 01 61 00 00 01 62"), "requested QoS is missing");
}

TEST(SubscribeMalformed, MQTT_4_7_1_2_MultiLevelWildcardLast) {
  expect_malformed(hex("82 08 00 01 00 03 23 2f 61 00"), "MQTT-4.7.1-2");
  expect_malformed(hex("82 07 00 01 00 02 61 23 00"), "MQTT-4.7.1-2");
}

TEST(SubscribeMalformed, MQTT_4_7_1_3_SingleLevelWildcardWholeLevel) {
  expect_malformed(hex("82 07 00 01 00 02 61 2b 00"), "MQTT-4.7.1-3");
}

TEST(SubscribeMalformed, MQTT_4_7_3_1_FilterMustNotBeEmpty) {
  expect_malformed(hex("82 05 00 01 00 00 00"), "MQTT-4.7.3-1");
}

TEST(SubscribeMalformed, MQTT_4_7_3_2_FilterMustNotContainNul) {
  expect_malformed(hex("82 06 00 01 00 01 00 00"), "MQTT-1.5.3-2");
}

TEST(SubackMalformed, MQTT_3_9_3_2_ReservedReturnCodes) {
  expect_malformed(hex("90 03 00 01 03"), "MQTT-3.9.3-2");
  expect_malformed(hex("90 04 00 01 00 81"), "MQTT-3.9.3-2");
}

TEST(SubackMalformed, AtLeastOneReturnCode) {
  expect_malformed(hex("90 02 00 01"), "without a return code");
}

TEST(UnsubscribeMalformed, MQTT_3_10_3_2_AtLeastOneFilter) {
  expect_malformed(hex("a2 02 00 01"), "MQTT-3.10.3-2");
}

TEST(UnsubscribeMalformed, FiltersAreValidated) {
  expect_malformed(hex("a2 05 00 01 00 01 ff"), "MQTT-1.5.3-1");
  expect_malformed(hex("a2 06 00 01 00 02 61 2b"), "MQTT-4.7.1-3");
  expect_malformed(hex("a2 05 00 01 00 05 61"), "topic filter is truncated");
}

TEST(PacketMalformed, ErrorsArriveWithTheWholeBodyNotBefore) {
  // A body error is only knowable once the body is there; until then the answer is "more".
  const std::string bytes = hex("82 06 00 01 00 01 61 03");
  for (std::size_t n = 1; n < bytes.size(); ++n) {
    auto r = decode(std::string_view(bytes).substr(0, n), kNoLimit);
    ASSERT_TRUE(r.ok()) << n;
    EXPECT_FALSE(r->has_value()) << n;
  }
}

}  // namespace
}  // namespace cairn::mqtt
