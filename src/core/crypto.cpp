#include "core/crypto.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

namespace cairn::crypto {
namespace {

constexpr std::string_view kSasPrefix = "SharedAccessSignature ";
constexpr char kHex[] = "0123456789abcdef";

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_unreserved(unsigned char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '-':
    case '_':
    case '.':
    case '!':
    case '~':
    case '*':
    case '\'':
    case '(':
    case ')':
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string sha256(std::string_view data) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(bytes(data), data.size(), reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string hex_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) {
    auto c = static_cast<unsigned char>(ch);
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string sha256_hex(std::string_view data) { return hex_encode(sha256(data)); }

std::string hmac_sha256(std::string_view key, std::string_view data) {
  std::string out(EVP_MAX_MD_SIZE, '\0');
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes(data), data.size(),
       reinterpret_cast<unsigned char*>(out.data()), &len);
  out.resize(len);
  return out;
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes(data),
                          static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return make_error(errc::invalid_argument, "base64 text length is not a multiple of 4");
  }
  std::string out(3 * text.size() / 4 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes(text),
                          static_cast<int>(text.size()));
  if (n < 0) return make_error(errc::invalid_argument, "invalid base64 text");
  std::size_t len = static_cast<std::size_t>(n);
  // EVP_DecodeBlock counts padding as zero bytes; drop them.
  if (!text.empty() && text.back() == '=') --len;
  if (text.size() > 1 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::string url_encode(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(static_cast<char>(std::toupper(kHex[c >> 4])));
      out.push_back(static_cast<char>(std::toupper(kHex[c & 15])));
    }
  }
  return out;
}

Result<std::string> url_decode(std::string_view s, bool plus_as_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) {
        return make_error(errc::invalid_argument, "truncated percent-escape");
      }
      int hi = hex_value(s[i + 1]);
      int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return make_error(errc::invalid_argument, "invalid percent-escape");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    // Without entropy no key or token can be trusted; continuing would be unsafe.
    throw std::runtime_error("OpenSSL RAND_bytes failed");
  }
  return out;
}

std::string generate_key() { return base64_encode(random_bytes(32)); }

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<std::string> make_sas_token(std::string_view resource, std::string_view key_base64,
                                   std::int64_t expiry, std::string_view key_name) {
  auto key = base64_decode(key_base64);
  if (!key) return make_error(errc::invalid_argument, "identity key is not valid base64");
  std::string sr = url_encode(resource);
  std::string to_sign = sr + "\n" + std::to_string(expiry);
  std::string sig = base64_encode(hmac_sha256(*key, to_sign));
  std::string token = std::string(kSasPrefix) + "sr=" + sr + "&sig=" + url_encode(sig) +
                      "&se=" + std::to_string(expiry);
  if (!key_name.empty()) token += "&skn=" + url_encode(key_name);
  return token;
}

Result<SasToken> parse_sas_token(std::string_view token) {
  if (token.substr(0, kSasPrefix.size()) != kSasPrefix) {
    return make_error(errc::invalid_argument, "not a SharedAccessSignature token");
  }
  std::string_view rest = token.substr(kSasPrefix.size());
  SasToken out;
  bool have_sr = false, have_sig = false, have_se = false;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view field = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    auto eq = field.find('=');
    if (eq == std::string_view::npos) {
      return make_error(errc::invalid_argument, "SAS token field without '='");
    }
    std::string_view name = field.substr(0, eq);
    auto value = url_decode(field.substr(eq + 1));
    if (!value) return make_error(errc::invalid_argument, "SAS token field is badly encoded");
    if (name == "sr") {
      out.resource_encoded = std::string(field.substr(eq + 1));
      out.resource = std::move(*value);
      have_sr = true;
    } else if (name == "sig") {
      out.signature = std::move(*value);
      have_sig = true;
    } else if (name == "se") {
      const auto& v = *value;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out.expiry);
      if (ec != std::errc() || p != v.data() + v.size()) {
        return make_error(errc::invalid_argument, "SAS token expiry is not a number");
      }
      have_se = true;
    } else if (name == "skn") {
      out.key_name = std::move(*value);
    }
  }
  if (!have_sr || !have_sig || !have_se) {
    return make_error(errc::invalid_argument, "SAS token needs sr, sig and se");
  }
  return out;
}

bool verify_sas_signature(const SasToken& token, std::string_view key_base64) {
  auto key = base64_decode(key_base64);
  if (!key) return false;
  std::string to_sign = token.resource_encoded + "\n" + std::to_string(token.expiry);
  return constant_time_equal(base64_encode(hmac_sha256(*key, to_sign)), token.signature);
}

}  // namespace cairn::crypto
