// The strict JSON checker and the envelope reader of REST bodies, against nlohmann's verdicts:
// hand-written edge cases and mutations of valid bodies (every truncation, every byte replaced,
// deleted or bit-flipped), through the differential check the fuzz target runs too.
#include "infer/json_envelope.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "infer/testing/json_differential.hpp"

namespace cairn::infer {
namespace {

constexpr std::size_t kDepth = 64;
constexpr DataType kTypes[] = {DataType::kFp32, DataType::kInt64, DataType::kBool,
                               DataType::kFp16, DataType::kUint8, DataType::kBytes};

// Every body through both kinds of envelope and several tensor types.
void expect_agreement(const std::string& body) {
  for (KeepAsText keep : {keep_v2_tensor_data, keep_score_tensors}) {
    for (DataType dtype : kTypes) {
      const auto mismatch = testing::json_differential_mismatch(body, keep, dtype, kDepth);
      ASSERT_FALSE(mismatch) << *mismatch << "\nbody (" << body.size() << " bytes): " << body;
    }
  }
}

bool checker_accepts(std::string_view text, std::size_t depth = kDepth) {
  return !find_json_syntax_error(text, depth);
}

const std::vector<std::string> kValid = {
    R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2.5,-3e2,4]}]})",
    R"({"id":"r\u00e9","inputs":[{"name":"x","datatype":"INT64","shape":[2,2],"data":[[1,-2],[3,9223372036854775807]]}],"outputs":[{"name":"y","data":[true,null,{"a":[]}],"parameters":{"binary_data":false}}]})",
    R"({"x":[[1,0,1,0]],"y":["NaN","Infinity","-Infinity"],"z":[],"w":[[],[]]})",
    R"({"data":[0.1,1E+2,1e-400,-0,0e0,18446744073709551616,1.7976931348623157e308]})",
    "\xEF\xBB\xBF{\"x\":[1]}",
    " \t\r\n{ \"a\" : [ 1 , [ 2 ] ] , \"b\" : { } } \n",
    R"({"a":"\"\\\/\b\f\n\r\t\u0000\uD83D\uDE00","b":["\u00ff"]})",
    "{\"a\":[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\"]}",
    R"({"a":[1],"a":[2],"a":3})",
    "[]",
    "\"top\"",
    "0",
    "-1.5e3",
    "true",
    "null",
};

const std::vector<std::string> kInvalid = {
    "",
    " ",
    "\xEF\xBB",
    "{\"x\":[1]",
    "{\"x\":[1]}}",
    "{\"x\":[1]} x",
    "{\"x\":[1],}",
    "{,\"x\":[1]}",
    "{\"x\" [1]}",
    "{x:[1]}",
    "{'x':[1]}",
    "{\"x\":[1}]}",
    "{\"x\":[{]]}",
    "{\"x\":[{\"a\":1]]}",
    "{\"x\":[[1]}}",
    "{\"x\":[1,]}",
    "{\"x\":[,]}",
    "{\"x\":[1 2]}",
    "{\"x\":[01]}",
    "{\"x\":[-]}",
    "{\"x\":[-a]}",
    "{\"x\":[1.]}",
    "{\"x\":[.1]}",
    "{\"x\":[1e]}",
    "{\"x\":[1e+]}",
    "{\"x\":[+1]}",
    "{\"x\":[0x1]}",
    "{\"x\":[1e999]}",
    "{\"x\":[-1e309]}",
    "{\"x\":[1" + std::string(400, '0') + "]}",
    "{\"x\":[NaN]}",
    "{\"x\":[Infinity]}",
    "{\"x\":[-Infinity]}",
    "{\"x\":[nan]}",
    "{\"x\":[tru]}",
    "{\"x\":[True]}",
    "{\"x\":[nulll]}",
    "{\"x\":[\"a]}",
    "{\"x\":[\"\\\"]}",
    "{\"x\":[\"\\q\"]}",
    "{\"x\":[\"\\u12\"]}",
    "{\"x\":[\"\\u12G4\"]}",
    "{\"x\":[\"\\ud800\"]}",
    "{\"x\":[\"\\ud800\\u0041\"]}",
    "{\"x\":[\"\\udc00\"]}",
    "{\"x\":[\"\x01\"]}",
    "{\"x\":[\"\t\"]}",
    "{\"x\":[\"\xff\"]}",
    "{\"x\":[\"\xc0\xaf\"]}",
    "{\"x\":[\"\xc3\"]}",
    "{\"x\":[\"\xe0\x80\x80\"]}",
    "{\"x\":[\"\xed\xa0\x80\"]}",
    "{\"x\":[\"\xf4\x90\x80\x80\"]}",
    "{\"x\":[\"\xf5\x80\x80\x80\"]}",
    std::string("{\"x\":[1,\0]}", 11),
    "{\"shape\":[\xEF\xBB\xBF"
    "1]}",  // a byte order mark only starts the body
    "{\"shape\":\xEF\xBB\xBF"
    "1}",
    "{\"x\":[1] /* comment */}",
};

TEST(JsonCheckerTest, HandWrittenCasesAgreeWithNlohmann) {
  for (const auto& body : kValid) {
    EXPECT_TRUE(nlohmann::json::accept(body)) << body;
    EXPECT_TRUE(checker_accepts(body)) << body;
    expect_agreement(body);
  }
  for (const auto& body : kInvalid) {
    EXPECT_FALSE(nlohmann::json::accept(body)) << body;
    EXPECT_FALSE(checker_accepts(body)) << body;
    expect_agreement(body);
  }
}

// nlohmann's lexer takes a NUL byte for the end of the input and accepts what it read so far;
// a NUL is never valid JSON, and the REST reading refuses it.
TEST(JsonCheckerTest, NulAfterTheValueIsRefused) {
  const std::string body("{\"x\":[1]}\0garbage", 16);
  EXPECT_TRUE(nlohmann::json::accept(body));
  const auto error = find_json_syntax_error(body, kDepth);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset, 9u);
  EXPECT_FALSE(JsonEnvelope::parse(body, kDepth, keep_score_tensors));
  EXPECT_FALSE(JsonEnvelope::parse(std::string("[1\0]", 4), kDepth, keep_v2_tensor_data));
  expect_agreement(body);
}

TEST(JsonCheckerTest, DepthIsLimited) {
  const auto nested = [](std::size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  EXPECT_TRUE(checker_accepts(nested(64)));
  const auto error = find_json_syntax_error(nested(65), kDepth);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset, 64u);
  EXPECT_EQ(error->reason, "nested deeper than 64 levels");
  // No recursion: a deep body costs a stack of brackets, not of calls.
  EXPECT_TRUE(checker_accepts(nested(1'000'000), 2'000'000));
  // Inside an array kept as text, the levels around it count.
  auto envelope = JsonEnvelope::parse("{\"x\":" + nested(64) + "}", kDepth, keep_score_tensors);
  ASSERT_FALSE(envelope);
  EXPECT_EQ(envelope.error().message, "JSON nested deeper than 64 levels");
  const std::string body = "{\"data\":[1],\"x\":[" + nested(62) + "]}";
  envelope = JsonEnvelope::parse(body, kDepth, keep_score_tensors);
  ASSERT_TRUE(envelope) << envelope.error().message;
  EXPECT_TRUE(envelope->check_unread());
}

TEST(JsonCheckerTest, ErrorsSayWhereAndWhat) {
  auto error = find_json_syntax_error("{\"a\":\n [1,2}", kDepth);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset, 11u);
  EXPECT_EQ(error->reason, "expected ',' or ']', found '}'");
  EXPECT_EQ(json_syntax_error("{\"a\":\n [1,2}", *error).message,
            "the body is not valid JSON: expected ',' or ']', found '}' at byte 11 (line 2, "
            "column 6)");
  error = find_json_syntax_error("[\"ab\xff\"]", kDepth);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset, 4u);
  EXPECT_EQ(error->reason, "invalid UTF-8 in a string");
  error = find_json_syntax_error("[1e400]", kDepth);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset, 1u);
  EXPECT_EQ(error->reason, "number overflows a double");
}

TEST(JsonEnvelopeTest, UnreadArraysAreCheckedReadOnesAreNot) {
  const std::string body = R"({"x":[1,2],"y":[1,,2]})";
  auto envelope = JsonEnvelope::parse(body, kDepth, keep_score_tensors);
  ASSERT_TRUE(envelope) << envelope.error().message;  // only the ends of kept arrays so far
  const auto& x = envelope->doc()["x"];
  ASSERT_EQ(envelope->kept_text(x), "[1,2]");
  envelope->mark_read(x);
  const auto status = envelope->check_unread();
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().message,
            "the body is not valid JSON: expected a value, found ',' at byte 18 (line 1, column "
            "19)");
  // A replaced duplicate is checked too, though the document no longer holds it.
  envelope = JsonEnvelope::parse(R"({"x":[1,,2],"x":[1]})", kDepth, keep_score_tensors);
  ASSERT_TRUE(envelope) << envelope.error().message;
  envelope->mark_read(envelope->doc()["x"]);
  EXPECT_FALSE(envelope->check_unread());
}

// Mutations of small valid bodies: every prefix, every byte replaced by each of a set of bytes
// that matter to JSON, every byte deleted, every bit flipped.
TEST(JsonDifferentialTest, MutationsAgreeWithNlohmann) {
  const std::vector<std::string> seeds = {
      R"({"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1.5,-2e1]}],"outputs":[{"data":[{"a":"\u00e9"}]}]})",
      R"({"x":[[1,0],[true,false]],"y":["NaN",-0],"z":{"w":[null]}})",
  };
  const std::string replacements =
      std::string("[]{}\",:\\-+.eE0 9tfnux/\x01\x7f\x80\xc3\xed\xff") + std::string(1, '\0');
  std::size_t bodies = 0;
  for (const auto& seed : seeds) {
    ASSERT_TRUE(nlohmann::json::accept(seed)) << seed;
    for (std::size_t n = 0; n <= seed.size(); ++n) {
      expect_agreement(seed.substr(0, n));
      ++bodies;
    }
    for (std::size_t i = 0; i < seed.size(); ++i) {
      for (char c : replacements) {
        std::string mutated = seed;
        mutated[i] = c;
        expect_agreement(mutated);
        ++bodies;
      }
      expect_agreement(seed.substr(0, i) + seed.substr(i + 1));
      ++bodies;
      for (int bit = 0; bit < 8; ++bit) {
        std::string mutated = seed;
        mutated[i] = static_cast<char>(mutated[i] ^ (1 << bit));
        expect_agreement(mutated);
        ++bodies;
      }
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_GT(bodies, 5000u);
}

}  // namespace
}  // namespace cairn::infer
