#include "modelpkg/signing.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace cairn::modelpkg {
namespace {

TEST(SigningTest, SignsAndVerifies) {
  testing::TempDir dir;
  auto priv = dir.path() + "/k", pub = dir.path() + "/k.pub";
  ASSERT_TRUE(generate_signing_key(priv, pub));
  auto sig = sign_bytes(priv, "index bytes");
  ASSERT_TRUE(sig) << sig.error().to_string();
  EXPECT_TRUE(verify_signature(pub, "index bytes", *sig));
  auto tampered = verify_signature(pub, "index bytez", *sig);
  ASSERT_FALSE(tampered);
  EXPECT_EQ(tampered.error().code, errc::unauthorized);
  EXPECT_FALSE(verify_signature(pub, "index bytes", "bm90IGEgc2lnbmF0dXJl"));
  // Another key's signature does not verify.
  ASSERT_TRUE(generate_signing_key(priv + "2", pub + "2"));
  auto other = sign_bytes(priv + "2", "index bytes");
  ASSERT_TRUE(other);
  EXPECT_FALSE(verify_signature(pub, "index bytes", *other));
  // A private key is not a public key, and a missing file is an error.
  EXPECT_FALSE(verify_signature(priv, "index bytes", *sig));
  EXPECT_FALSE(sign_bytes(dir.path() + "/missing", "x"));
}

}  // namespace
}  // namespace cairn::modelpkg
