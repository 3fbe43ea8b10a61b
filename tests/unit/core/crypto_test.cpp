#include "core/crypto.hpp"

#include <gtest/gtest.h>

namespace cairn::crypto {
namespace {

TEST(Crypto, Sha256KnownVector) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, HmacSha256Rfc4231Case2) {
  auto mac = hmac_sha256("Jefe", "what do ya want for nothing?");
  EXPECT_EQ(base64_encode(mac), "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
}

TEST(Crypto, Base64RoundTripAllLengths) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    auto enc = base64_encode(data);
    auto dec = base64_decode(enc);
    ASSERT_TRUE(dec.ok()) << enc;
    EXPECT_EQ(*dec, data);
    data.push_back(static_cast<char>(i * 37));
  }
}

TEST(Crypto, Base64RejectsGarbage) {
  EXPECT_FALSE(base64_decode("abc").ok());
  EXPECT_FALSE(base64_decode("ab!d").ok());
}

TEST(Crypto, UrlEncodeMatchesEncodeURIComponent) {
  EXPECT_EQ(url_encode("hub.azure-devices.net/devices/d1/modules/m1"),
            "hub.azure-devices.net%2Fdevices%2Fd1%2Fmodules%2Fm1");
  EXPECT_EQ(url_encode("a+b=c&d e"), "a%2Bb%3Dc%26d%20e");
  EXPECT_EQ(*url_decode("a%2Bb%3Dc%26d%20e"), "a+b=c&d e");
  EXPECT_EQ(*url_decode("a+b", true), "a b");
  EXPECT_FALSE(url_decode("%4").ok());
  EXPECT_FALSE(url_decode("%zz").ok());
}

TEST(Crypto, SasTokenRoundTrip) {
  auto key = generate_key();
  auto token = make_sas_token("hub/devices/d1/modules/m1", key, 2000000000);
  ASSERT_TRUE(token.ok());
  auto parsed = parse_sas_token(*token);
  ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
  EXPECT_EQ(parsed->resource, "hub/devices/d1/modules/m1");
  EXPECT_EQ(parsed->expiry, 2000000000);
  EXPECT_TRUE(verify_sas_signature(*parsed, key));
  EXPECT_FALSE(verify_sas_signature(*parsed, generate_key()));
}

TEST(Crypto, SasTokenTamperedExpiryFails) {
  auto key = generate_key();
  auto token = *make_sas_token("hub/devices/d1", key, 2000000000);
  auto pos = token.find("se=2000000000");
  token.replace(pos, 13, "se=2000000001");
  auto parsed = parse_sas_token(token);
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(verify_sas_signature(*parsed, key));
}

TEST(Crypto, SasTokenMalformed) {
  EXPECT_FALSE(parse_sas_token("Bearer x").ok());
  EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=a&sig=b").ok());
  EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=a&sig=b&se=12x").ok());
  EXPECT_FALSE(parse_sas_token("SharedAccessSignature sr=a&sig&se=1").ok());
}

}  // namespace
}  // namespace cairn::crypto
