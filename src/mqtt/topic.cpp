#include "mqtt/topic.hpp"

#include <cstdint>
#include <cstring>

namespace cairn::mqtt {
namespace {

// Topic names and filters travel as length-prefixed strings with a 16-bit length.
constexpr std::size_t kMaxTopicLength = 65'535;

constexpr std::uint64_t kHighBits = 0x8080808080808080ULL;
constexpr std::uint64_t kLowBits = 0x0101010101010101ULL;

bool is_continuation(unsigned char c) noexcept { return (c & 0xC0) == 0x80; }

Status validate_common(std::string_view s, const char* what) {
  if (s.empty()) {
    return make_error(errc::invalid_argument,
                      std::string("[MQTT-4.7.3-1] ") + what + " must not be empty");
  }
  if (s.size() > kMaxTopicLength) {
    return make_error(errc::invalid_argument,
                      std::string(what) + " is longer than 65535 bytes (section 1.5.3)");
  }
  if (!is_valid_utf8_string(s)) {
    if (s.find('\0') != std::string_view::npos) {
      return make_error(errc::invalid_argument,
                        std::string("[MQTT-4.7.3-2] ") + what + " contains U+0000");
    }
    return make_error(errc::invalid_argument,
                      std::string("[MQTT-1.5.3-1] ") + what + " is not well-formed UTF-8");
  }
  return {};
}

}  // namespace

bool is_valid_utf8_string(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // Topics and client ids are nearly always ASCII: skip 8 bytes at a time while none has the
    // high bit set and none is zero (the classic "has zero byte" test).
    while (end - p >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, sizeof w);
      if (((w & kHighBits) | ((w - kLowBits) & ~w & kHighBits)) != 0) break;
      p += 8;
    }
    if (p == end) break;
    unsigned char c = *p;
    if (c < 0x80) {
      if (c == 0) return false;  // [MQTT-1.5.3-2]
      ++p;
      continue;
    }
    // Unicode table 3-7 (well-formed UTF-8 byte sequences): the second byte's range excludes
    // overlong forms (E0, F0), surrogates (ED) and code points above U+10FFFF (F4).
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) < len) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (std::size_t i = 2; i < len; ++i) {
      if (!is_continuation(p[i])) return false;
    }
    p += len;
  }
  return true;
}

Status validate_topic_name(std::string_view topic) {
  CAIRN_TRY(validate_common(topic, "topic name"));
  if (topic.find_first_of("+#") != std::string_view::npos) {
    return make_error(errc::invalid_argument,
                      "[MQTT-3.3.2-2] topic name must not contain wildcards");
  }
  return {};
}

Status validate_topic_filter(std::string_view filter) {
  CAIRN_TRY(validate_common(filter, "topic filter"));
  for (std::size_t i = 0; i < filter.size(); ++i) {
    char c = filter[i];
    if (c != '+' && c != '#') continue;
    bool starts_level = i == 0 || filter[i - 1] == '/';
    bool ends_level = i + 1 == filter.size() || filter[i + 1] == '/';
    if (c == '+' && !(starts_level && ends_level)) {
      return make_error(errc::invalid_argument,
                        "[MQTT-4.7.1-3] '+' must occupy an entire topic level");
    }
    if (c == '#' && !(starts_level && i + 1 == filter.size())) {
      return make_error(errc::invalid_argument,
                        "[MQTT-4.7.1-2] '#' must be the last character, alone in its level");
    }
  }
  return {};
}

bool topic_matches(std::string_view filter, std::string_view topic) noexcept {
  // [MQTT-4.7.2-1]: "#" and "+/..." must not leak $SYS-style server topics.
  if (!topic.empty() && topic.front() == '$' && !filter.empty() &&
      (filter.front() == '+' || filter.front() == '#')) {
    return false;
  }
  constexpr auto npos = std::string_view::npos;
  std::size_t fi = 0;
  std::size_t ti = 0;
  bool topic_done = false;
  for (;;) {
    std::size_t fe = filter.find('/', fi);
    const bool filter_last = fe == npos;
    if (filter_last) fe = filter.size();
    const std::string_view flevel = filter.substr(fi, fe - fi);
    // '#' also matches the parent level, so "a/#" matches "a" (topic already exhausted).
    if (flevel == "#") return true;
    if (topic_done) return false;
    std::size_t te = topic.find('/', ti);
    const bool topic_last = te == npos;
    if (topic_last) te = topic.size();
    if (flevel != "+" && flevel != topic.substr(ti, te - ti)) return false;
    if (filter_last) return topic_last;
    fi = fe + 1;
    if (topic_last) {
      topic_done = true;
    } else {
      ti = te + 1;
    }
  }
}

}  // namespace cairn::mqtt
