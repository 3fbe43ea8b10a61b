// validate_patch: every rule of docs/protocol.md §4 at its exact boundary, and parse_json.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "json_literal.hpp"
#include "twin/twin.hpp"

namespace cairn::twin {
namespace {

using test_support::j;

void expect_ok(const json& patch) {
  const Status s = validate_patch(patch);
  EXPECT_TRUE(s) << patch.dump(-1, ' ', false, json::error_handler_t::replace) << ": "
                 << s.error().message;
}

// Rejected with `code` and a message containing `fragment`.
void expect_rejected(const json& patch, errc code, const std::string& fragment) {
  const Status s = validate_patch(patch);
  ASSERT_FALSE(s) << patch.dump(-1, ' ', false, json::error_handler_t::replace);
  EXPECT_EQ(s.error().code, code) << s.error().message;
  EXPECT_NE(s.error().message.find(fragment), std::string::npos) << s.error().message;
}

// {"l1":{"l2":...{"l<levels>":{"leaf":"v"}}}}: `levels` objects nested below the root.
json nested_objects(int levels) {
  json inner = {{"leaf", "v"}};
  for (int i = levels; i >= 1; --i) inner = json{{"l" + std::to_string(i), inner}};
  return inner;
}

TEST(Validate, TopLevelMustBeObject) {
  expect_rejected(json::array(), errc::invalid_argument, "patch: must be a JSON object");
  expect_rejected(json(5), errc::invalid_argument, "must be a JSON object");
  expect_rejected(json(nullptr), errc::invalid_argument, "must be a JSON object");
  expect_ok(json::object());
}

TEST(Validate, AllValueTypesAccepted) {
  expect_ok(j(R"({"i":-3,"u":3,"f":2.5,"s":"x","b":false,"n":null,"o":{"p":1},
                 "a":[1,"x",true,1.5,[2],{"q":1}],"e":[],"eo":{}})"));
}

TEST(Validate, DepthTenOkElevenRejected) {
  // IoT Hub's documented example: "one" .. "ten" nested, holding "property": "value".
  expect_ok(nested_objects(10));
  const Status s = validate_patch(nested_objects(11), "reported");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::limit_exceeded);
  EXPECT_EQ(s.error().message,
            "reported.l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11: nesting deeper than 10 levels");
}

TEST(Validate, ArraysCountAsNestingLevels) {
  json ten = json::array({1});
  for (int i = 1; i < 10; ++i) ten = json::array({ten});
  expect_ok(json{{"a", ten}});
  expect_rejected(json{{"a", json::array({ten})}}, errc::limit_exceeded,
                  "patch.a[0][0][0][0][0][0][0][0][0][0]: nesting deeper than 10 levels");
}

TEST(Validate, StringLengthBoundary) {
  expect_ok(json{{"s", std::string(4096, 'x')}});
  expect_rejected(json{{"s", std::string(4097, 'x')}}, errc::limit_exceeded,
                  "patch.s: string value is 4097 bytes, more than the 4096 allowed");
  // Bytes, not characters: 2048 two-byte characters are exactly 4096 bytes.
  std::string two_byte;
  for (int i = 0; i < 2048; ++i) two_byte += "\xc3\xa9";
  expect_ok(json{{"s", two_byte}});
  expect_rejected(json{{"s", two_byte + "x"}}, errc::limit_exceeded, "4097 bytes");
  // Inside arrays too.
  expect_rejected(json{{"a", json::array({"ok", std::string(4097, 'x')})}}, errc::limit_exceeded,
                  "patch.a[1]: string value");
}

TEST(Validate, IntegerBoundaries) {
  expect_ok(j(R"({"max":4503599627370495,"min":-4503599627370496})"));
  expect_ok(
      json{{"max", std::int64_t{4503599627370495}}, {"min", std::int64_t{-4503599627370496}}});
  expect_ok(json{{"max", std::uint64_t{4503599627370495}}});
  expect_rejected(j(R"({"big":4503599627370496})"), errc::limit_exceeded,
                  "patch.big: integer 4503599627370496 is outside the allowed range");
  expect_rejected(j(R"({"small":-4503599627370497})"), errc::limit_exceeded,
                  "integer -4503599627370497");
  expect_rejected(json{{"big", std::int64_t{4503599627370496}}}, errc::limit_exceeded, "integer");
  expect_rejected(json{{"big", std::numeric_limits<std::uint64_t>::max()}}, errc::limit_exceeded,
                  "integer 18446744073709551615");
  expect_rejected(json{{"a", json::array({1, std::int64_t{-4503599627370497}})}},
                  errc::limit_exceeded, "patch.a[1]: integer");
  // Floats are not range-checked (IoT Hub accepts them), but must be finite.
  expect_ok(j(R"({"f":1e300})"));
  expect_rejected(json{{"f", std::nan("")}}, errc::invalid_argument, "finite");
  expect_rejected(json{{"f", std::numeric_limits<double>::infinity()}}, errc::invalid_argument,
                  "finite");
}

TEST(Validate, PropertyNameLengthBoundary) {
  expect_ok(json{{std::string(1024, 'k'), 1}});
  expect_rejected(json{{std::string(1025, 'k'), 1}}, errc::limit_exceeded,
                  "is 1025 bytes, more than the 1024 allowed");
  expect_rejected(json{{"o", {{std::string(1025, 'k'), 1}}}}, errc::limit_exceeded, "patch.o:");
}

TEST(Validate, PropertyNameCharacters) {
  expect_ok(
      j(R"({"a-b_c:d/e@f+g":1,"temp\u00e9rature":2,"\u6e29\u5ea6":3,"emoji\ud83d\ude00":4})"));
  struct Case {
    std::string name;
    std::string fragment;
  };
  const Case bad[] = {
      {"a.b", "contains '.'"},
      {"a$b", "contains '$'"},
      {"a#b", "contains '#'"},
      {"a b", "whitespace (U+0020)"},
      {"a\tb", "control character U+0009"},
      {std::string("a\0b", 3), "control character U+0000"},
      {"a\x7f", "control character U+007F"},
      {"a\xc2\x85", "control character U+0085"},  // C1 NEL
      {"a\xc2\xa0", "whitespace (U+00A0)"},       // no-break space
      {"a\xe3\x80\x80", "whitespace (U+3000)"},   // ideographic space
      {"a\xe2\x80\xa8", "whitespace (U+2028)"},
      {"", "property names may not be empty"},
      {"a\xff", "not valid UTF-8"},
      {"\xc0\xaf", "not valid UTF-8"},      // overlong '/'
      {"\xed\xa0\x80", "not valid UTF-8"},  // surrogate
  };
  for (const auto& c : bad) {
    SCOPED_TRACE(c.fragment);
    expect_rejected(json{{"ok", {{c.name, 1}}}}, errc::invalid_argument, c.fragment);
    expect_rejected(json{{"ok", {{c.name, 1}}}}, errc::invalid_argument, "patch.ok: property name");
  }
}

TEST(Validate, DollarNames) {
  // Clients echo the $version they received; it is ignored, whatever its value.
  expect_ok(j(R"({"$version":7,"a":1})"));
  expect_ok(j(R"({"$version":"anything"})"));
  expect_rejected(j(R"({"$metadata":{}})"), errc::invalid_argument, "contains '$'");
  expect_rejected(j(R"({"a":{"$version":1}})"), errc::invalid_argument, "patch.a: property name");
  expect_rejected(j(R"({"a":[{"$version":1}]})"), errc::invalid_argument, "patch.a[0]:");
}

TEST(Validate, NullsOnlyOutsideArrays) {
  expect_ok(j(R"({"a":null,"b":{"c":null}})"));
  expect_rejected(j(R"({"a":[1,null]})"), errc::invalid_argument,
                  "patch.a[1]: arrays may not contain null");
  expect_rejected(j(R"({"a":[{"b":null}]})"), errc::invalid_argument,
                  "patch.a[0].b: objects inside arrays may not have null members");
  expect_rejected(j(R"({"a":[{"b":{"c":null}}]})"), errc::invalid_argument, "patch.a[0].b.c:");
  expect_rejected(j(R"({"a":[[null]]})"), errc::invalid_argument, "patch.a[0][0]:");
}

TEST(Validate, StringValuesMustBeUtf8) {
  expect_rejected(json{{"s", "bad\xff"}}, errc::invalid_argument, "patch.s: string value is not");
  expect_rejected(json{{"a", json::array({"\xe2\x82"})}}, errc::invalid_argument, "patch.a[0]");
  expect_ok(json{{"s", std::string("nul\0inside", 10)}});
}

TEST(Validate, BinaryValuesRejected) {
  expect_rejected(json{{"b", json::binary({1, 2, 3})}}, errc::invalid_argument, "binary");
}

// {"k0":"...","k1":"...",...}: eight members whose dump() is exactly `bytes` long.
json patch_of_serialized_size(std::size_t bytes) {
  json patch = json::object();
  for (int i = 0; i < 8; ++i) patch["k" + std::to_string(i)] = "";
  std::size_t remaining = bytes - patch.dump().size();
  for (int i = 0; i < 8; ++i) {
    const std::size_t n = std::min<std::size_t>(remaining, 4096);
    patch["k" + std::to_string(i)] = std::string(n, 'v');
    remaining -= n;
  }
  EXPECT_EQ(patch.dump().size(), bytes);
  return patch;
}

TEST(Validate, SerializedSizeBoundary) {
  expect_ok(patch_of_serialized_size(32 * 1024));
  expect_rejected(patch_of_serialized_size(32 * 1024 + 1), errc::limit_exceeded,
                  "patch: patch is 32769 bytes serialized, more than the 32768 allowed");
}

TEST(Validate, SectionNameStartsThePath) {
  const Status s = validate_patch(j(R"({"a":{"b":[1,{"c d":1}]}})"), "desired");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message.rfind("desired.a.b[1]: property name \"c d\" contains whitespace", 0),
            0u)
      << s.error().message;
}

TEST(Validate, MessagesStayValidUtf8) {
  const Status s = validate_patch(json{{"o", {{"bad\xff\x01name", 1}}}});
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find(R"("bad\xFF<U+0001>name")"), std::string::npos)
      << s.error().message;
  // The message can go into a JSON body without throwing.
  EXPECT_NO_THROW((void)(json{{"error", s.error().message}}.dump()));
}

TEST(ParseJson, AcceptsValidText) {
  auto r = parse_json(R"( {"a":[1,2.5,"x",null,true]} )");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["a"][1], 2.5);
}

TEST(ParseJson, GarbageGivesPositionedError) {
  for (const char* text : {"", "not json", "{\"a\":", "{\"a\" 1}", "[1,]", "{\n\"a\":tru}"}) {
    auto r = parse_json(text);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_EQ(r.error().message.rfind("invalid JSON at line ", 0), 0u) << r.error().message;
  }
  auto r = parse_json("{\n\"a\":tru}");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("line 2"), std::string::npos) << r.error().message;
}

TEST(ParseJson, InvalidUtf8AndHugeNumbers) {
  auto bad = parse_json("{\"a\":\"\xff\xfe\"}");
  ASSERT_FALSE(bad);
  EXPECT_NO_THROW((void)json(bad.error().message).dump());
  auto huge = parse_json("[1e999]");
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, errc::invalid_argument);
}

TEST(ParseJson, NestingCap) {
  EXPECT_TRUE(parse_json(std::string(64, '[') + std::string(64, ']')));
  auto deep = parse_json(std::string(65, '[') + std::string(65, ']'));
  ASSERT_FALSE(deep);
  EXPECT_NE(deep.error().message.find("line 1, column 65: nested deeper than 64 levels"),
            std::string::npos)
      << deep.error().message;
  // Brackets inside strings do not count; escaped quotes do not end a string.
  EXPECT_TRUE(parse_json(R"({"s":"[[[[[[[[[[\"[[[[[[["})", 3));
  EXPECT_FALSE(parse_json(std::string(1000000, '[')));
}

TEST(DumpJson, InvalidUtf8DoesNotThrow) {
  std::string out;
  EXPECT_NO_THROW(out = dump_json(json{{"s", "a\xff"}}));
  EXPECT_EQ(out, "{\"s\":\"a\xef\xbf\xbd\"}");
}

}  // namespace
}  // namespace cairn::twin
