// Hashes, encodings and IoT Hub shared-access-signature (SAS) tokens.
//
// SAS token: "SharedAccessSignature sr={url(resource)}&sig={url(base64(hmac))}&se={expiry}[&skn=]"
// where the HMAC-SHA256 key is the base64-decoded identity key and the string to sign is
// "{url(resource)}\n{expiry}".
//
// Thread-safety: all functions are pure or use OpenSSL's thread-safe primitives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cairn::crypto {

std::string sha256(std::string_view data);  // 32 raw bytes
std::string sha256_hex(std::string_view data);
// Lower-case hex digits, two per byte.
std::string hex_encode(std::string_view bytes);
std::string hmac_sha256(std::string_view key, std::string_view data);  // 32 raw bytes

std::string base64_encode(std::string_view data);
Result<std::string> base64_decode(std::string_view text);

// Percent-encoding as JavaScript's encodeURIComponent (unreserved: A-Z a-z 0-9 - _ . ! ~ * ' ( )).
std::string url_encode(std::string_view s);
// Decodes %XX sequences; with `plus_as_space`, '+' becomes ' ' (form/query encoding).
Result<std::string> url_decode(std::string_view s, bool plus_as_space = false);

std::string random_bytes(std::size_t n);
// A fresh symmetric identity key: 32 random bytes, base64.
std::string generate_key();

// Constant-time comparison for signatures.
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

struct SasToken {
  std::string resource;          // decoded, e.g. "hub.example/devices/d1/modules/m1"
  std::string resource_encoded;  // sr exactly as in the token: what was signed
  std::string signature;         // decoded base64 text
  std::int64_t expiry = 0;       // seconds since the Unix epoch
  std::string key_name;          // skn, optional
};

// Builds a token for `resource` signed with the base64 `key`, valid until `expiry`.
Result<std::string> make_sas_token(std::string_view resource, std::string_view key_base64,
                                   std::int64_t expiry, std::string_view key_name = {});
// Parses the token text; checks its shape only, not the signature.
Result<SasToken> parse_sas_token(std::string_view token);
// True if `token.signature` is the HMAC of its resource and expiry under `key_base64`.
bool verify_sas_signature(const SasToken& token, std::string_view key_base64);

}  // namespace cairn::crypto
