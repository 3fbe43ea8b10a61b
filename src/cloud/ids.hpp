// Identifier rules and generated identifiers of the cloud registry: device and module ids as
// IoT Hub accepts them, etags, generation ids, If-Match matching and the time format of the
// service API.
//
// Thread-safety: pure functions (the generators use OpenSSL's thread-safe RNG).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cairn::cloud {

inline constexpr std::size_t kMaxIdLength = 128;

// IoT Hub's rule for device ids, which cairn also applies to module ids: 1..128 ASCII
// characters from [A-Za-z0-9] and - : . + % _ # * ? ! ( ) , = @ ; $ '
bool valid_identity_id(std::string_view id);
// The message for an id that breaks the rule ("device id 'x y' ...").
std::string invalid_id_message(std::string_view what, std::string_view id);

// A fresh opaque etag (base64 text, no quotes).
std::string new_etag();
// A fresh generation id (decimal digits, as IoT Hub's look).
std::string new_generation_id();

// HTTP If-Match against the current etag: empty or "*" matches anything; otherwise one or more
// comma-separated entity tags, quoted or not, with or without a weak "W/" prefix.
bool etag_matches(std::string_view if_match, std::string_view etag);

// ISO 8601 UTC with milliseconds; 0 (never) is IoT Hub's "0001-01-01T00:00:00Z".
std::string service_time(std::int64_t unix_ms);

// True if `bytes` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

}  // namespace cairn::cloud
