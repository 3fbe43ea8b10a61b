#include "core/message.hpp"

#include <gtest/gtest.h>

namespace cairn {
namespace {

TEST(Properties, CaseInsensitiveAndOrdered) {
  Properties p;
  p.set("Temp", "1");
  p.set("b", "2");
  p.set("TEMP", "3");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(*p.get("temp"), "3");
  EXPECT_EQ(p.entries()[0].first, "Temp");
  EXPECT_FALSE(p.get("c").has_value());
  EXPECT_TRUE(p.erase("B"));
  EXPECT_EQ(p.size(), 1u);
}

TEST(MessageCodec, RoundTrip) {
  Message m;
  m.body = std::string("\0binary\xff", 8);
  m.system.set("messageId", "42");
  m.system.set("connectionModuleId", "sensor");
  m.app.set("alert", "");
  auto bytes = encode_message(m);
  auto back = decode_message(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, m);
}

TEST(MessageCodec, RejectsTruncatedAndForeign) {
  Message m;
  m.body = "hello";
  m.app.set("k", "v");
  auto bytes = encode_message(m);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(decode_message(std::string_view(bytes).substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(decode_message(bytes + "x").ok());
  EXPECT_EQ(decode_message("\x07").error().code, errc::corruption);
}

}  // namespace
}  // namespace cairn
