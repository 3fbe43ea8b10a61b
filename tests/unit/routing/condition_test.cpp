// Condition compiler and evaluator: literals, every operator and function, precedence,
// three-valued logic, property resolution and $body queries. Each table row is an expression
// and its result as rendered by Program::evaluate_for_test().
#include "routing/condition.hpp"

#include <string>
#include <variant>

#include <gtest/gtest.h>

#include "routing/detail/parser.hpp"
#include "routing/route.hpp"

namespace cairn::routing {
namespace {

constexpr std::string_view kWeather =
    R"({"Weather":{"Temperature":50,"city":"Oslo","rain":null,"sunny":true,"obj":{"a":1},)"
    R"("arr":[1,2],"HistoricalData":[{"Month":"Feb","Temperature":40},)"
    R"({"Month":"Jan","Temperature":30}]},"n":1.5,"s":"x"})";

Message test_message() {
  Message m;
  m.body = std::string(kWeather);
  m.system.set("connectionDeviceId", "dev1");
  m.system.set("connectionModuleId", "sensor");
  m.system.set("contentType", "application/json");
  m.system.set("contentEncoding", "UTF-8");
  m.system.set("messageId", "m-1");
  m.system.set("correlationId", "c-9");
  m.system.set("outputName", "out1");
  m.system.set("dt-subject", "comp");
  m.app.set("temp", "35");
  m.app.set("Name", "Alice");
  m.app.set("a-b", "dash");
  m.app.set("a.b", "dot");
  m.app.set("empty", "");
  m.app.set("connectionDeviceId", "appdev");
  return m;
}

std::string eval(std::string_view condition, const Message& m) {
  auto parsed = detail::parse_condition(condition, 0, detail::ConditionEnd::kEndOfText);
  if (auto* e = std::get_if<detail::SyntaxError>(&parsed)) {
    return "error at " + std::to_string(e->pos + 1) + ": " + e->message;
  }
  return std::get<detail::ParsedCondition>(parsed).program->evaluate_for_test(m);
}

struct ConditionRow {
  const char* expr;
  const char* want;
};

void check_table(const std::vector<ConditionRow>& rows, const Message& m) {
  for (const auto& row : rows) {
    EXPECT_EQ(eval(row.expr, m), row.want) << "expression: " << row.expr;
  }
}

TEST(ConditionEval, Literals) {
  check_table(
      {
          {"1", "1"},
          {"1.5", "1.5"},
          {".5", "0.5"},
          {"1e3", "1000"},
          {"1.5E-1", "0.15"},
          {"2e+2", "200"},
          {"0x1F", "31"},
          {"0XfF", "255"},
          {"'a'", "'a'"},
          {"\"b\"", "'b'"},
          {"''", "''"},
          {R"('it\'s')", "'it's'"},
          {R"("q\"x")", "'q\"x'"},
          {R"('a\\b')", "'a\\b'"},
          {R"('\n\t')", "'\n\t'"},
          {R"('\u00e9')", "'\xc3\xa9'"},
          {R"('\ud83d\ude00')", "'\xf0\x9f\x98\x80'"},
          {"true", "true"},
          {"false", "false"},
          {"null", "null"},
          {"undefined", "undefined"},
          {"TRUE", "true"},
          {"Null", "null"},
          {"1 /* a comment */ + 2", "3"},
      },
      test_message());
}

TEST(ConditionEval, Arithmetic) {
  check_table(
      {
          {"1 + 2", "3"},
          {"7 - 10", "-3"},
          {"2 * 3.5", "7"},
          {"7 / 2", "3.5"},
          {"7 % 3", "1"},
          {"-7 % 3", "-1"},
          {"5.5 % 2", "1.5"},
          {"1 / 0", "undefined"},
          {"1 % 0", "undefined"},
          {"-(2)", "-2"},
          {"- -2", "2"},
          {"-'a'", "undefined"},
          {"'a' + 1", "undefined"},
          {"null + 1", "undefined"},
          {"undefined + 1", "undefined"},
          {"true * 2", "undefined"},
          {"1e308 * 10", "undefined"},
          {"'a' || 'b'", "'ab'"},
          {"'a' || 'b' || 'c'", "'abc'"},
          {"'a' || 1", "undefined"},
          {"temp || '!'", "'35!'"},
      },
      test_message());
}

TEST(ConditionEval, Precedence) {
  check_table(
      {
          {"1 + 2 * 3", "7"},
          {"(1 + 2) * 3", "9"},
          {"10 - 4 - 3", "3"},
          {"12 / 3 / 2", "2"},
          {"2 * 3 % 4", "2"},
          {"-2 * 3", "-6"},
          {"1 + 2 = 3", "true"},
          {"1 + 1 < 3", "true"},
          {"1 < 2 = true", "true"},
          {"true = 1 < 2", "true"},
          {"2 > 1 <> false", "true"},
          {"NOT true = false", "true"},  // (NOT true) = false: NOT binds tightest
          {"NOT 1 = 2", "undefined"},    // (NOT 1) = 2
          {"NOT (1 = 2)", "true"},
          {"true OR false AND false", "true"},
          {"(true OR false) AND false", "false"},
          {"false AND true OR true", "true"},
          {"1 = 1 AND 2 = 2", "true"},
          {"undefined ?? 1 = 1", "true"},  // ?? binds loosest
          {"(undefined ?? 1) = 1", "true"},
          {"false OR undefined ?? 'x'", "'x'"},
          {"'a' || 'b' = 'ab'", "true"},
          {"((((1))))", "1"},
      },
      test_message());
}

TEST(ConditionEval, Comparisons) {
  check_table(
      {
          {"2 > 1", "true"},
          {"1 > 2", "false"},
          {"2 >= 2", "true"},
          {"1 <= 0", "false"},
          {"0 <= 0", "true"},
          {"1 < 2", "true"},
          {"1 = 1", "true"},
          {"1 = 1.0", "true"},
          {"1 != 1", "false"},
          {"1 <> 2", "true"},
          {"0x10 = 16", "true"},
          {"'abc' < 'abd'", "true"},
          {"'B' < 'a'", "true"},   // ordinal
          {"'a' = 'A'", "false"},  // values compare case-sensitively; only names do not
          {"'a' >= 'a'", "true"},
          {"true = true", "true"},
          {"true != false", "true"},
          {"true < false", "undefined"},
          {"null = null", "true"},
          {"null != null", "false"},
          {"null < null", "undefined"},
          {"null = 0", "undefined"},
          {"1 = '1'", "undefined"},
          {"'2' > 1", "undefined"},
          {"undefined = undefined", "undefined"},
          {"undefined != 1", "undefined"},
          {"missing = 1", "undefined"},
      },
      test_message());
}

TEST(ConditionEval, ThreeValuedLogic) {
  check_table(
      {
          {"true AND true", "true"},
          {"true AND false", "false"},
          {"false AND true", "false"},
          {"false AND false", "false"},
          {"true AND undefined", "undefined"},
          {"undefined AND true", "undefined"},
          {"false AND undefined", "false"},
          {"undefined AND false", "false"},
          {"undefined AND undefined", "undefined"},
          {"true OR true", "true"},
          {"true OR false", "true"},
          {"false OR false", "false"},
          {"true OR undefined", "true"},
          {"undefined OR true", "true"},
          {"false OR undefined", "undefined"},
          {"undefined OR false", "undefined"},
          {"undefined OR undefined", "undefined"},
          {"NOT true", "false"},
          {"NOT false", "true"},
          {"NOT undefined", "undefined"},
          {"NOT null", "undefined"},
          {"NOT 1", "undefined"},
          {"not not true", "true"},
          {"1 AND true", "undefined"},
          {"'x' OR true", "true"},
          {"null AND false", "false"},
          {"true and true AND True", "true"},
          {"false or false Or true", "true"},
          {"missing = 1 OR temp = '35'", "true"},
          {"missing = 1 AND temp = '35'", "undefined"},
          {"NOT (missing = 1)", "undefined"},
      },
      test_message());
}

TEST(ConditionEval, Coalesce) {
  check_table(
      {
          {"undefined ?? 2", "2"},
          {"null ?? 2", "null"},  // null is a defined value
          {"1 ?? 2", "1"},
          {"undefined ?? undefined ?? 'z'", "'z'"},
          {"undefined ?? undefined", "undefined"},
          {"missing ?? 'default'", "'default'"},
          {"temp ?? 'default'", "'35'"},
          {"$body.nope ?? $body.s", "'x'"},
      },
      test_message());
}

TEST(ConditionEval, MathFunctions) {
  check_table(
      {
          {"abs(-2)", "2"},
          {"ABS(2)", "2"},
          {"abs('x')", "undefined"},
          {"exp(0)", "1"},
          {"exp(1000)", "undefined"},
          {"power(2, 10)", "1024"},
          {"Power(9, 0.5)", "3"},
          {"power('2', 2)", "undefined"},
          {"power(2, undefined)", "undefined"},
          {"square(3)", "9"},
          {"square(-1.5)", "2.25"},
          {"ceiling(1.2)", "2"},
          {"ceiling(-1.2)", "-1"},
          {"floor(-1.2)", "-2"},
          {"floor(1.8)", "1"},
          {"sign(-3)", "-1"},
          {"sign(0)", "0"},
          {"sign(5)", "1"},
          {"sqrt(16)", "4"},
          {"sqrt(-1)", "undefined"},
          {"sqrt(null)", "undefined"},
      },
      test_message());
}

TEST(ConditionEval, TypeFunctions) {
  check_table(
      {
          {"as_number('35')", "35"},
          {"as_number('1e2')", "100"},
          {"as_number('+1.5')", "1.5"},
          {"as_number('-2')", "-2"},
          {"as_number('abc')", "undefined"},
          {"as_number('')", "undefined"},
          {"as_number(' 1')", "undefined"},
          {"as_number('1x')", "undefined"},
          {"as_number('inf')", "undefined"},
          {"as_number('nan')", "undefined"},
          {"as_number(2)", "2"},
          {"as_number(true)", "undefined"},
          {"as_number(null)", "undefined"},
          {"as_number(temp)", "35"},
          {"is_bool(true)", "true"},
          {"is_bool(1)", "false"},
          {"is_bool(undefined)", "false"},
          {"is_defined(undefined)", "false"},
          {"is_defined(null)", "true"},
          {"is_defined(missing)", "false"},
          {"is_defined(temp)", "true"},
          {"IS_DEFINED($connectionModuleId)", "true"},
          {"is_null(null)", "true"},
          {"is_null(undefined)", "false"},
          {"is_null($body.Weather.rain)", "true"},
          {"is_number(1)", "true"},
          {"is_number('1')", "false"},
          {"is_number($body.n)", "true"},
          {"is_string('1')", "true"},
          {"is_string(temp)", "true"},
          {"is_string(1)", "false"},
      },
      test_message());
}

TEST(ConditionEval, StringFunctions) {
  check_table(
      {
          {"concat('a', 'b')", "'ab'"},
          {"concat('a', 'b', 'c', name)", "'abcAlice'"},
          {"concat('a', 1)", "undefined"},
          {"concat('a', missing)", "undefined"},
          {"length('abc')", "3"},
          {"length('')", "0"},
          {"length('\xc3\xa9t\xc3\xa9')", "3"},  // code points, not bytes
          {"length(1)", "undefined"},
          {"length(empty)", "0"},
          {"lower('AbC')", "'abc'"},
          {"upper('aBc')", "'ABC'"},
          {"lower(1)", "undefined"},
          {"upper(name) = 'ALICE'", "true"},
          {"substring('hello', 1)", "'ello'"},
          {"substring('hello', 1, 3)", "'ell'"},
          {"substring('hello', 0, 0)", "''"},
          {"substring('hello', 10)", "''"},
          {"substring('hello', 3, 10)", "'lo'"},
          {"substring('hello', 5)", "''"},
          {"substring('hello', -1)", "undefined"},
          {"substring('hello', 1.5)", "undefined"},
          {"substring('hello', 1, -1)", "undefined"},
          {"substring('hello', '1')", "undefined"},
          {"substring(1, 1)", "undefined"},
          {"substring('h\xc3\xa9llo', 1, 2)", "'\xc3\xa9l'"},
          {"index_of('hello', 'l')", "2"},
          {"index_of('hello', 'z')", "-1"},
          {"index_of('hello', '')", "0"},
          {"index_of('h\xc3\xa9llo', 'l')", "2"},
          {"index_of('hello', 1)", "undefined"},
          {"starts_with('hello', 'he')", "true"},
          {"starts_with('hello', 'lo')", "false"},
          {"STARTS_WITH($connectionDeviceId, 'dev')", "true"},
          {"ends_with('hello', 'lo')", "true"},
          {"ends_with('hello', 'he')", "false"},
          {"contains('hello', 'ell')", "true"},
          {"contains('hello', 'xyz')", "false"},
          {"contains(1, 'a')", "undefined"},
          {"contains('a', undefined)", "undefined"},
          // Twin change notifications are not routed yet; see program.cpp.
          {"twin_change_includes(properties.reported.x)", "undefined"},
      },
      test_message());
}

TEST(ConditionEval, Properties) {
  check_table(
      {
          {"temp", "'35'"},
          {"TEMP", "'35'"},  // names are case-insensitive
          {"name", "'Alice'"},
          {"missing", "undefined"},
          {"a-b", "'dash'"},  // '-' and '.' are name characters, as in edgeHub
          {"a.b", "'dot'"},
          {"a - b", "undefined"},  // with spaces it is subtraction of two undefined names
          {"connectionDeviceId", "'appdev'"},  // bare names are application properties
          {"$connectionDeviceId", "'dev1'"},   // $names are system properties
          {"$CONNECTIONDEVICEID", "'dev1'"},
          {"{$connectionDeviceId}", "'dev1'"},
          {"$connectionModuleId", "'sensor'"},
          {"$contentType", "'application/json'"},
          {"$contentEncoding", "'UTF-8'"},
          {"$messageId", "'m-1'"},
          {"$correlationId", "'c-9'"},
          {"$cid", "'c-9'"},  // edgeHub's name for the correlation id
          {"{$cid}", "'c-9'"},
          {"$outputName", "'out1'"},
          {"$dt-subject", "'comp'"},
          {"$missingSys", "undefined"},
          {"{$temp}", "undefined"},
      },
      test_message());
}

// Application properties are strings, so comparing one with a number is a cross-type comparison
// and undefined, as in IoT Hub: `temp > 30` does not match temp="35". Use as_number().
TEST(ConditionEval, AppPropertiesAreStrings) {
  check_table(
      {
          {"temp > 30", "undefined"},
          {"temp = 35", "undefined"},
          {"as_number(temp) > 30", "true"},
          {"as_number(temp) = 35", "true"},
          {"temp = '35'", "true"},
          {"temp > '30'", "true"},  // string comparison, ordinal
          {"temp > '4'", "false"},  // ...which is lexical, hence as_number()
      },
      test_message());
  auto c = compile_condition("temp > 30");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->evaluate(test_message()));
  auto d = compile_condition("as_number(temp) > 30");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE((*d)->evaluate(test_message()));
}

TEST(ConditionEval, DollarNameAppPropertyWins) {
  Message m = test_message();
  m.app.set("$messageId", "from-app");
  m.app.set("$body.s", "app-body");
  check_table(
      {
          {"$messageId", "'from-app'"},
          {"$MESSAGEID", "'from-app'"},
          {"{$messageId}", "'m-1'"},  // braces always mean the system property
          {"$body.s", "'app-body'"},
          {"$body.n", "1.5"},
      },
      m);
}

TEST(ConditionEval, BodyQueries) {
  check_table(
      {
          {"$body.Weather.Temperature", "50"},
          {"$body.Weather.Temperature > 40", "true"},
          {"$body.Weather.HistoricalData[0].Month", "'Feb'"},
          {"$body.Weather.HistoricalData[1].Temperature", "30"},
          {"$body.Weather.HistoricalData[2].Month", "undefined"},
          {"$body.Weather.HistoricalData[0]", "undefined"},  // objects are not values
          {"$body.Weather", "undefined"},
          {"$body.Weather.obj", "undefined"},
          {"$body.Weather.arr", "undefined"},  // nor are arrays
          {"$body.Weather.arr[1]", "2"},
          {"$body.Weather.arr[1][0]", "undefined"},
          {"$body.Weather.rain", "null"},
          {"$body.Weather.sunny", "true"},
          {"$body.Weather.sunny AND $body.Weather.Temperature = 50", "true"},
          {"$body.Weather.city", "'Oslo'"},
          {"$body.Weather.city = 'Oslo'", "true"},
          {"$body.weather.temperature", "undefined"},  // JSON keys are case-sensitive
          {"$BODY.Weather.city", "'Oslo'"},            // the $body prefix is not
          {"$body.Weather.city.x", "undefined"},
          {"$body.Weather[0]", "undefined"},
          {"$body.n", "1.5"},
          {"$body.s", "'x'"},
          {"$body.nope", "undefined"},
          {"{$body.n}", "undefined"},  // braces: the system property "body.n"
          {"$body", "undefined"},      // no path: the system property "body"
          {"is_defined($body.Weather.obj.a)", "true"},
          {"length($body.Weather.city)", "4"},
      },
      test_message());
}

TEST(ConditionEval, BodyNeedsJsonContentTypeAndEncoding) {
  struct Case {
    const char* content_type;  // nullptr = absent
    const char* encoding;
    bool queryable;
  };
  const Case cases[] = {
      {"application/json", "utf-8", true},
      {"APPLICATION/JSON", "UTF-8", true},
      {"Application/Json", "Utf-8", true},
      {"application/json", "utf-16", false},  // the body is UTF-8 bytes, not UTF-16
      {nullptr, "utf-8", false},
      {"application/json", nullptr, false},
      {"text/plain", "utf-8", false},
      {"application/json; charset=utf-8", "utf-8", false},
      {"application/json", "ascii", false},
      {"application/json", "utf8", false},
  };
  for (const auto& c : cases) {
    Message m;
    m.body = std::string(kWeather);
    if (c.content_type) m.system.set("contentType", c.content_type);
    if (c.encoding) m.system.set("contentEncoding", c.encoding);
    EXPECT_EQ(eval("$body.s", m), c.queryable ? "'x'" : "undefined")
        << (c.content_type ? c.content_type : "-") << " " << (c.encoding ? c.encoding : "-");
  }
}

std::string utf16(std::string_view ascii, bool big_endian, bool bom) {
  std::string out;
  auto put = [&](char hi, char lo) {
    out.push_back(big_endian ? hi : lo);
    out.push_back(big_endian ? lo : hi);
  };
  if (bom) put(static_cast<char>(0xFE), static_cast<char>(0xFF));
  for (char c : ascii) put('\0', c);
  return out;
}

std::string utf32le(std::string_view ascii) {
  std::string out;
  for (char c : ascii) out += std::string{c, '\0', '\0', '\0'};
  return out;
}

TEST(ConditionEval, BodyInWideEncodings) {
  const std::string json = R"({"a":{"b":[7]}})";
  struct Case {
    std::string body;
    const char* encoding;
    const char* want;
  };
  const Case cases[] = {
      {utf16(json, false, false), "utf-16", "7"},
      {utf16(json, false, true), "UTF-16", "7"},
      {utf16(json, true, true), "utf-16", "7"},
      {utf16(json, false, false).substr(1), "utf-16", "undefined"},  // odd length
      {utf32le(json), "utf-32", "7"},
      {std::string("\xFF\xFE\0\0", 4) + utf32le(json), "utf-32", "7"},
      {"\xEF\xBB\xBF" + json, "utf-8", "7"},  // UTF-8 BOM
      {json, "utf-32", "undefined"},
      {std::string("\xFF\xFF\xFF\xFF", 4), "utf-32", "undefined"},
  };
  for (const auto& c : cases) {
    Message m;
    m.body = c.body;
    m.system.set("contentType", "application/json");
    m.system.set("contentEncoding", c.encoding);
    EXPECT_EQ(eval("$body.a.b[0]", m), c.want) << c.encoding << " size " << c.body.size();
  }
}

TEST(ConditionEval, InvalidJsonBodyIsUndefined) {
  for (const char* body : {"", "{", "not json", "{\"a\":1}}", "\xff\xfe", "[1,2"}) {
    Message m;
    m.body = body;
    m.system.set("contentType", "application/json");
    m.system.set("contentEncoding", "utf-8");
    EXPECT_EQ(eval("$body.a", m), "undefined") << body;
    EXPECT_EQ(eval("is_defined($body.a) OR true", m), "true") << body;
  }
}

TEST(ConditionEval, ScalarJsonBodyHasNoPaths) {
  Message m;
  m.body = "42";
  m.system.set("contentType", "application/json");
  m.system.set("contentEncoding", "utf-8");
  EXPECT_EQ(eval("$body.a", m), "undefined");
}

TEST(ConditionEval, BuiltStringsAreBounded) {
  Message m;
  m.app.set("big", std::string(600 * 1024, 'b'));
  EXPECT_EQ(eval("is_defined(big || 'x')", m), "true");
  EXPECT_EQ(eval("length(concat(big, 'x', 'y'))", m), "614402");
  EXPECT_EQ(eval("is_defined(big || big)", m), "false");  // over 1 MiB: undefined
  EXPECT_EQ(eval("is_defined(concat(big, big))", m), "false");
  EXPECT_EQ(eval("is_defined(lower(big) || upper(big))", m), "false");
}

TEST(ConditionEval, LongFlatChainsAreAccepted) {
  std::string ors = "temp = '0'";
  for (int i = 1; i < 2000; ++i) ors += " OR temp = '" + std::to_string(i) + "'";
  EXPECT_EQ(eval(ors, test_message()), "true");
  std::string ands = "true";
  for (int i = 0; i < 2000; ++i) ands += " AND true";
  EXPECT_EQ(eval(ands, test_message()), "true");
}

struct ConditionErrorRow {
  const char* text;
  std::size_t column;
  const char* message;  // substring of the error
};

TEST(ConditionCompile, Errors) {
  const ConditionErrorRow rows[] = {
      {"", 1, "expected an expression, found end of input"},
      {"a =", 4, "expected an expression, found end of input"},
      {"(1 + 2", 7, "expected ')', found end of input"},
      {"1 +* 2", 4, "expected an expression, found '*'"},
      {"foo(1)", 1, "unknown function 'foo'"},
      {"abs()", 1, "function abs takes 1 argument, got 0"},
      {"abs(1, 2)", 1, "function abs takes 1 argument, got 2"},
      {"a AND power(1)", 7, "function power takes 2 arguments, got 1"},
      {"substring('a')", 1, "function substring takes 2 to 3 arguments, got 1"},
      {"substring('a', 1, 2, 3)", 1, "got 4"},
      {"concat('a')", 1, "function concat takes 2 or more arguments, got 1"},
      {"is_defined()", 1, "takes 1 argument, got 0"},
      {"twin_change_includes()", 1, "takes 1 argument"},
      {"abs(1 2)", 7, "expected ',' or ')', found '2'"},
      {"abs(1,)", 7, "expected an expression, found ')'"},
      {"'abc", 1, "unterminated string"},
      {"a = \"abc", 5, "unterminated string"},
      {R"(a = 'x\q')", 7, "invalid escape in string"},
      {R"('\u12')", 2, "invalid \\u escape"},
      {R"('\ud800')", 2, "unpaired surrogate"},
      {R"('\udc00')", 2, "unpaired surrogate"},
      {"1.2.3", 1, "invalid number"},
      {"12abc", 1, "invalid number"},
      {"1.", 1, "invalid number"},
      {"1e", 1, "invalid number"},
      {"0x", 1, "invalid hex number"},
      {"0xZ1", 1, "invalid hex number"},
      {"1e999", 1, "number out of range"},
      {"0x1ffffffffffffffff", 1, "number out of range"},
      {"a ! b", 3, "unexpected character '!'"},
      {"a | b", 3, "unexpected character '|'"},
      {"a ? b", 3, "unexpected character '?'"},
      {"a = 1 \x01", 7, "unexpected character '?'"},
      {"a == b", 4, "expected an expression, found '='"},
      {"a b", 3, "expected an operator or end of condition, found 'b'"},
      {"1 1", 3, "found '1'"},
      {"(a))", 4, "found ')'"},
      {"$", 1, "expected a property name after '$'"},
      {"{a}", 2, "expected a system property like $contentType, found 'a'"},
      {"{$a", 4, "expected '}', found end of input"},
      {"{$a b}", 5, "expected '}', found 'b'"},
      {"$body.", 1, "invalid $body path"},
      {"$body.a[", 1, "invalid $body path"},
      {"$body.a[]", 1, "invalid $body path"},
      {"$body.a[x]", 1, "invalid $body path"},
      {"$body.a[-1]", 1, "invalid $body path"},
      {"$body.a..b", 1, "invalid $body path"},
      {"$body.[0]", 1, "invalid $body path"},
      {"$body.a]", 1, "invalid $body path"},
      {"$body.a[0]b", 1, "invalid $body path"},
      {"1 /* x", 3, "unterminated comment"},
      {"a = 1 INTO", 7, "expected an operator or end of condition, found 'INTO'"},
      {"WHERE a", 1, "expected an expression, found 'WHERE'"},
      {"from = 1", 1, "found 'from'"},
      {"NOT", 4, "found end of input"},
      {"-", 2, "found end of input"},
  };
  for (const auto& row : rows) {
    auto parsed = detail::parse_condition(row.text, 0, detail::ConditionEnd::kEndOfText);
    auto* e = std::get_if<detail::SyntaxError>(&parsed);
    ASSERT_NE(e, nullptr) << "accepted: " << row.text;
    EXPECT_EQ(e->pos + 1, row.column) << row.text << " -> " << e->message;
    EXPECT_NE(e->message.find(row.message), std::string::npos) << row.text << " -> " << e->message;
  }
}

TEST(ConditionCompile, PublicErrorFormat) {
  auto c = compile_condition("a = )");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, errc::invalid_argument);
  EXPECT_EQ(c.error().message, "condition column 5: expected an expression, found ')' in: a = )");
}

TEST(ConditionCompile, NestingIsBounded) {
  auto nested = [](const std::string& open, const std::string& inner, const std::string& close,
                   int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += open;
    s += inner;
    for (int i = 0; i < n; ++i) s += close;
    return s;
  };
  EXPECT_TRUE(compile_condition(nested("(", "1 = 1", ")", 50)).ok());
  EXPECT_TRUE(compile_condition(nested("NOT ", "true", "", 50)).ok());
  for (const auto& text : {nested("(", "1", ")", 20000), nested("NOT ", "true", "", 1000),
                           nested("- ", "1", "", 1000), nested("abs(", "1", ")", 1000)}) {
    auto c = compile_condition(text);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().message.find("too deeply nested"), std::string::npos)
        << c.error().message.substr(0, 200);
  }
  // Left-associative chains grow the tree without recursion in the parser; they are capped too.
  std::string sum = "1";
  for (int i = 0; i < 1000; ++i) sum += " + 1";
  auto c = compile_condition(sum + " = 1001");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("too deeply nested"), std::string::npos);
  std::string small = "1";
  for (int i = 0; i < 100; ++i) small += " + 1";
  auto d = compile_condition(small + " = 101");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE((*d)->evaluate(Message{}));
}

TEST(ConditionCompile, LengthIsBounded) {
  std::string text = "a = '" + std::string(kMaxRouteTextBytes, 'x') + "'";
  auto c = compile_condition(text);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, errc::invalid_argument);
}

TEST(ConditionCompile, ErrorsDoNotEchoControlCharactersOrHugeText) {
  std::string text = "a = \n\x1b[31m" + std::string(5000, 'z') + " !";
  auto c = compile_condition(text);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message.find('\n'), std::string::npos);
  EXPECT_EQ(c.error().message.find('\x1b'), std::string::npos);
  EXPECT_LT(c.error().message.size(), 1000u);
}

TEST(ConditionCompile, EvaluateMatchesOnlyTrue) {
  struct Case {
    const char* text;
    bool match;
  };
  const Case cases[] = {
      {"true", true},        {"false", false},   {"undefined", false},
      {"null", false},       {"1", false},       {"'true'", false},
      {"temp = '35'", true}, {"missing", false}, {"NOT is_defined(missing)", true},
  };
  for (const auto& c : cases) {
    auto cond = compile_condition(c.text);
    ASSERT_TRUE(cond.ok()) << c.text;
    EXPECT_EQ((*cond)->evaluate(test_message()), c.match) << c.text;
  }
}

TEST(ConditionCompile, SharedConditionIsReusable) {
  auto cond = compile_condition("concat(lower(name), '-', temp) = 'alice-35'");
  ASSERT_TRUE(cond.ok());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((*cond)->evaluate(test_message()));
  Message other = test_message();
  other.app.set("name", "BOB");
  EXPECT_FALSE((*cond)->evaluate(other));
}

}  // namespace
}  // namespace cairn::routing
