#include "cloud/ids.hpp"

#include <cstring>

#include "core/clock.hpp"
#include "core/crypto.hpp"

namespace cairn::cloud {

bool valid_identity_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  static constexpr std::string_view kSpecial = "-:.+%_#*?!(),=@;$'";
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              kSpecial.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

std::string invalid_id_message(std::string_view what, std::string_view id) {
  return std::string(what) + " '" + std::string(id.substr(0, 200)) +
         "' is invalid: use 1 to 128 characters from A-Z a-z 0-9 and - : . + % _ # * ? ! ( ) , "
         "= @ ; $ '";
}

std::string new_etag() {
  // 9 random bytes give 12 base64 characters without padding: short, and unguessable enough
  // that an etag from a deleted and re-created identity never matches by accident.
  return crypto::base64_encode(crypto::random_bytes(9));
}

std::string new_generation_id() {
  std::string bytes = crypto::random_bytes(8);
  std::uint64_t v = 0;
  std::memcpy(&v, bytes.data(), sizeof v);
  // 18 digits, leading digit 6, like the ids IoT Hub hands out.
  return "6" +
         std::to_string(v % 100'000'000'000'000'000ULL + 100'000'000'000'000'000ULL).substr(1);
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool etag_matches(std::string_view if_match, std::string_view etag) {
  if_match = trim(if_match);
  if (if_match.empty()) return true;
  while (!if_match.empty()) {
    auto comma = if_match.find(',');
    std::string_view tag = trim(if_match.substr(0, comma));
    if_match = comma == std::string_view::npos ? std::string_view{} : if_match.substr(comma + 1);
    if (tag == "*" || tag == "\"*\"") return true;
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"') {
      tag = tag.substr(1, tag.size() - 2);
    }
    if (!tag.empty() && tag == etag) return true;
  }
  return false;
}

std::string service_time(std::int64_t unix_ms) {
  if (unix_ms <= 0) return "0001-01-01T00:00:00Z";
  return format_iso8601(unix_ms);
}

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0u) != 0x80u) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace cairn::cloud
