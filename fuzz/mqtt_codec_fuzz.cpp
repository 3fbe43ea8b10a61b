// Feeds arbitrary bytes to the MQTT codec as a stream. Every packet that decodes must re-encode
// to bytes that decode to the same packet (the encoder may only normalise the remaining-length
// varint, so the re-encoding is never longer), and must read as partial when cut short.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "mqtt/packet.hpp"
#include "mqtt/topic.hpp"

namespace {

constexpr std::size_t kMaxPacketSize = 64 * 1024;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "mqtt_codec_fuzz: %s\n", what);
  std::abort();
}

void check_round_trip(const cairn::mqtt::Decoded& d) {
  const std::string bytes = cairn::mqtt::encode(d.packet);
  if (bytes.size() > d.consumed) fail("re-encoding is longer than the input");
  auto again = cairn::mqtt::decode(bytes, kMaxPacketSize);
  if (!again.ok()) fail("re-encoded packet does not decode");
  if (!again->has_value()) fail("re-encoded packet decodes as partial");
  if ((*again)->consumed != bytes.size()) fail("re-encoded packet not consumed exactly");
  if (!((*again)->packet == d.packet)) fail("round trip changed the packet");
  // A strict prefix is never a packet nor an error.
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, bytes.size() / 2, bytes.size() - 1}) {
    auto cut = cairn::mqtt::decode(std::string_view(bytes).substr(0, n), kMaxPacketSize);
    if (!cut.ok() || cut->has_value()) fail("truncated packet is not reported as partial");
  }
  // Topics that decoded must satisfy the validators, and a name always matches itself.
  if (const auto* p = std::get_if<cairn::mqtt::Publish>(&d.packet)) {
    if (!cairn::mqtt::validate_topic_name(p->topic).ok()) fail("decoded invalid topic name");
    if (!cairn::mqtt::topic_matches(p->topic, p->topic)) fail("topic does not match itself");
    if (!cairn::mqtt::topic_matches("#", p->topic) && p->topic.front() != '$') {
      fail("'#' does not match a non-$ topic");
    }
  }
  if (const auto* s = std::get_if<cairn::mqtt::Subscribe>(&d.packet)) {
    for (const auto& sub : s->subscriptions) {
      if (!cairn::mqtt::validate_topic_filter(sub.filter).ok()) fail("decoded invalid filter");
      (void)cairn::mqtt::topic_matches(sub.filter, "a/b/$c");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (!rest.empty()) {
    auto r = cairn::mqtt::decode(rest, kMaxPacketSize);
    if (!r.ok()) {
      (void)cairn::mqtt::is_unsupported_protocol_level(rest);
      break;
    }
    if (!r->has_value()) break;
    const cairn::mqtt::Decoded& d = **r;
    if (d.consumed == 0 || d.consumed > rest.size()) fail("bad consumed count");
    check_round_trip(d);
    rest.remove_prefix(d.consumed);
  }
  return 0;
}
