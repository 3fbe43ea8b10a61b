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

TEST(Properties, SetAllIsSetInOrder) {
  Properties one_by_one, at_once;
  one_by_one.set("Temp", "0");
  at_once.set("Temp", "0");
  std::vector<Properties::Entry> more{{"a", "1"}, {"TEMP", "2"}, {"A", "3"}, {"b", "4"}};
  for (const auto& [k, v] : more) one_by_one.set(k, v);
  at_once.set_all(more);
  EXPECT_EQ(at_once, one_by_one);
  EXPECT_EQ(at_once.entries(),
            (std::vector<Properties::Entry>{{"Temp", "2"}, {"a", "3"}, {"b", "4"}}));
  // A large bag with every key repeated in another case keeps one entry per key.
  std::vector<Properties::Entry> big;
  for (int i = 0; i < 20000; ++i) big.emplace_back("key" + std::to_string(i % 10000), "x");
  for (int i = 0; i < 10000; ++i) big.emplace_back("KEY" + std::to_string(i), "y");
  Properties p;
  p.set_all(std::move(big));
  ASSERT_EQ(p.size(), 10000u);
  EXPECT_EQ(*p.get("key9999"), "y");
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
