#include "mqtt/topic.hpp"

#include <string>

#include <gtest/gtest.h>

namespace cairn::mqtt {
namespace {

struct MatchCase {
  const char* filter;
  const char* topic;
  bool matches;
};

// MQTT 3.1.1 section 4.7 examples plus the edges around empty levels and '$' topics.
constexpr MatchCase kMatchCases[] = {
    {"sport/tennis/player1", "sport/tennis/player1", true},
    {"sport/tennis/player1", "sport/tennis/player2", false},
    {"sport/tennis/player1", "sport/tennis", false},
    {"sport/tennis", "sport/tennis/player1", false},
    // '#' (4.7.1.2)
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/#", "sport", true},
    {"sport/#", "sports", false},
    {"sport/#", "sport/", true},
    {"#", "sport/tennis/player1", true},
    {"#", "/", true},
    {"#", "a", true},
    {"a/b/#", "a", false},
    // '+' (4.7.1.3)
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+", "finance", true},
    {"+/tennis/#", "sport/tennis/player1", true},
    {"+/tennis/#", "sport/tennis", true},
    {"+/+/+", "a/b", false},
    {"a/+/c", "a//c", true},
    {"+/#", "a", true},
    // empty levels are levels
    {"/", "/", true},
    {"a/", "a", false},
    {"a", "a/", false},
    {"a//b", "a/b", false},
    {"/a", "a", false},
    // '$' topics (4.7.2) [MQTT-4.7.2-1]
    {"#", "$SYS/broker/clients", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"+", "$SYS", false},
    {"$SYS/#", "$SYS/monitor/Clients", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true},
    {"$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=abc", true},
    {"a/$b/#", "a/$b/c", true},
    {"+/$b", "a/$b", true},
    // IoT Hub module input subscription
    {"devices/dev1/modules/m1/#", "devices/dev1/modules/m1/inputs/in1/%24.cdid=dev1", true},
    {"devices/dev1/modules/m1/#", "devices/dev1/modules/m2/inputs/in1/", false},
    // case-sensitive
    {"ACCOUNTS", "Accounts", false},
};

TEST(TopicMatches, Table) {
  for (const auto& c : kMatchCases) {
    EXPECT_EQ(topic_matches(c.filter, c.topic), c.matches)
        << "filter '" << c.filter << "' topic '" << c.topic << "'";
  }
}

TEST(TopicMatches, MQTT_4_7_2_1_WildcardFirstLevelNeverMatchesDollarTopics) {
  EXPECT_FALSE(topic_matches("#", "$x"));
  EXPECT_FALSE(topic_matches("+/#", "$x/y"));
  EXPECT_TRUE(topic_matches("$x/#", "$x/y"));
}

TEST(ValidateTopicName, AcceptsAndRejects) {
  for (const char* ok : {"a", "/", "a/b/c", "$SYS/x", "a//b", " ", "température/😀",
                         "devices/d/messages/events/%24.on=out"}) {
    EXPECT_TRUE(validate_topic_name(ok).ok()) << ok;
  }
  EXPECT_NE(validate_topic_name("").error().message.find("MQTT-4.7.3-1"), std::string::npos);
  EXPECT_NE(validate_topic_name("a/+").error().message.find("MQTT-3.3.2-2"), std::string::npos);
  EXPECT_NE(validate_topic_name("a/#").error().message.find("MQTT-3.3.2-2"), std::string::npos);
  EXPECT_NE(validate_topic_name("a+b").error().message.find("MQTT-3.3.2-2"), std::string::npos);
  EXPECT_NE(validate_topic_name(std::string("a\0b", 3)).error().message.find("MQTT-4.7.3-2"),
            std::string::npos);
  EXPECT_NE(validate_topic_name("\xed\xa0\x80").error().message.find("MQTT-1.5.3-1"),
            std::string::npos);
  EXPECT_TRUE(validate_topic_name(std::string(65535, 'a')).ok());
  auto too_long = validate_topic_name(std::string(65536, 'a'));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, errc::invalid_argument);
}

TEST(ValidateTopicFilter, AcceptsAndRejects) {
  for (const char* ok : {"a", "#", "+", "+/+", "/+", "+/", "a/#", "a/+/b", "+/#", "/#", "$SYS/#",
                         "$iothub/twin/res/#", "devices/d/modules/m/#", "a//b"}) {
    EXPECT_TRUE(validate_topic_filter(ok).ok()) << ok;
  }
  struct Bad {
    const char* filter;
    const char* rule;
  };
  for (const Bad& b :
       {Bad{"", "MQTT-4.7.3-1"}, Bad{"a#", "MQTT-4.7.1-2"}, Bad{"#/a", "MQTT-4.7.1-2"},
        Bad{"a/#/b", "MQTT-4.7.1-2"}, Bad{"a/b#", "MQTT-4.7.1-2"}, Bad{"##", "MQTT-4.7.1-2"},
        Bad{"a+", "MQTT-4.7.1-3"}, Bad{"+a", "MQTT-4.7.1-3"}, Bad{"a/+b/c", "MQTT-4.7.1-3"},
        Bad{"++", "MQTT-4.7.1-3"}, Bad{"\xc0\x80", "MQTT-1.5.3-1"}}) {
    auto s = validate_topic_filter(b.filter);
    ASSERT_FALSE(s.ok()) << b.filter;
    EXPECT_NE(s.error().message.find(b.rule), std::string::npos)
        << b.filter << ": " << s.error().message;
  }
  EXPECT_FALSE(validate_topic_filter(std::string("a/\0", 3)).ok());
}

TEST(Utf8, WellFormedSequences) {
  for (const char* ok : {"", "plain ascii", "\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80",
                         "\xed\x9f\xbf" /* U+D7FF */, "\xee\x80\x80" /* U+E000 */, "\xef\xbf\xbf",
                         "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf" /* U+10FFFF */,
                         "\xef\xbb\xbf" /* BOM is kept, not an error */}) {
    EXPECT_TRUE(is_valid_utf8_string(ok)) << ok;
  }
}

TEST(Utf8, MQTT_1_5_3_1_IllFormedSequences) {
  for (const char* bad : {"\x80",
                          "\xbf",
                          "\xc0\x80",
                          "\xc1\xbf",
                          "\xc2",
                          "\xc2\x41",
                          "\xe0\x80\x80",
                          "\xe0\x9f\xbf",
                          "\xe2\x82",
                          "\xe2\x28\xa1",
                          "\xed\xa0\x80" /* U+D800 */,
                          "\xed\xbf\xbf" /* U+DFFF */,
                          "\xf0\x80\x80\x80",
                          "\xf0\x8f\xbf\xbf",
                          "\xf4\x90\x80\x80",
                          "\xf5\x80\x80\x80",
                          "\xf8\x88\x80\x80\x80",
                          "\xfe",
                          "\xff",
                          "\xf0\x90\x80"}) {
    EXPECT_FALSE(is_valid_utf8_string(bad)) << testing::PrintToString(std::string(bad));
  }
}

TEST(Utf8, MQTT_1_5_3_2_NulAnywhereIsRejected) {
  // Covers the 8-byte ASCII fast path at every alignment as well as the byte-by-byte tail.
  const std::string base = "abcdefghijklmnopqrstuvwxyz0123";
  ASSERT_TRUE(is_valid_utf8_string(base));
  for (std::size_t i = 0; i < base.size(); ++i) {
    std::string s = base;
    s[i] = '\0';
    EXPECT_FALSE(is_valid_utf8_string(s)) << i;
  }
}

TEST(Utf8, InvalidByteAnywhereIsRejected) {
  const std::string base = "abcdefghijklmnopqrstuvwxyz0123";
  for (std::size_t i = 0; i < base.size(); ++i) {
    std::string bad = base;
    bad[i] = '\xff';
    EXPECT_FALSE(is_valid_utf8_string(bad)) << i;
    std::string good = base;
    good.replace(i, 1, "\xc3\xa9");
    EXPECT_TRUE(is_valid_utf8_string(good)) << i;
    std::string cut = base.substr(0, i) + "\xe2\x82";
    EXPECT_FALSE(is_valid_utf8_string(cut)) << i;
  }
}

}  // namespace
}  // namespace cairn::mqtt
