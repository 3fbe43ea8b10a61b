// merge_patch (RFC 7386), diff and section_size.
#include <cstdint>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "json_literal.hpp"
#include "twin/twin.hpp"

namespace cairn::twin {
namespace {

using test_support::j;

json merged(json target, const json& patch) {
  merge_patch(target, patch);
  return target;
}

TEST(ComposePatches, OnePatchDoesTheWorkOfBoth) {
  const json target = j(R"({"a":1,"b":{"c":2,"d":3},"e":[1],"f":"x"})");
  const json first = j(R"({"a":null,"b":{"c":5},"g":1})");
  const json second = j(R"({"a":7,"b":{"d":null},"e":[2],"g":null})");
  json both = first;
  compose_patches(both, second);
  // Nulls stay in the composed patch: they still delete in the target.
  EXPECT_EQ(both, j(R"({"a":7,"b":{"c":5,"d":null},"e":[2],"g":null})"));
  EXPECT_EQ(merged(target, both), merged(merged(target, first), second));
}

// The test cases of RFC 7386 Appendix A.
TEST(MergePatch, Rfc7386AppendixA) {
  struct Case {
    const char* target;
    const char* patch;
    const char* result;
  };
  const Case cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", R"(null)", R"(null)"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(merged(j(c.target), j(c.patch)), j(c.result)) << c.target << " + " << c.patch;
  }
}

// The worked example of RFC 7386 section 3.
TEST(MergePatch, Rfc7386Example) {
  const json target = j(R"({"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},
                            "tags":["example","sample"],"content":"This will be unchanged"})");
  const json patch = j(R"({"title":"Hello!","phoneNumber":"+01-123-456-7890",
                           "author":{"familyName":null},"tags":["example"]})");
  EXPECT_EQ(merged(target, patch),
            j(R"({"title":"Hello!","author":{"givenName":"John"},"tags":["example"],
                  "content":"This will be unchanged","phoneNumber":"+01-123-456-7890"})"));
}

TEST(Diff, EqualObjectsGiveEmptyPatch) {
  const json doc = j(R"({"a":1,"b":{"c":[1,2,{"d":"x"}]},"e":"s"})");
  EXPECT_EQ(diff(doc, doc), json::object());
  EXPECT_EQ(diff(json::object(), json::object()), json::object());
}

TEST(Diff, RemovedMembersBecomeNullAndObjectsRecurse) {
  const json from = j(R"({"keep":1,"gone":2,"obj":{"x":1,"y":2},"arr":[1,2,3]})");
  const json to = j(R"({"keep":1,"new":true,"obj":{"x":1,"y":3,"z":{}},"arr":[1,2]})");
  EXPECT_EQ(diff(from, to), j(R"({"gone":null,"new":true,"obj":{"y":3,"z":{}},"arr":[1,2]})"));
}

TEST(Diff, ObjectReplacedByScalarAndBack) {
  EXPECT_EQ(diff(j(R"({"a":{"b":1}})"), j(R"({"a":5})")), j(R"({"a":5})"));
  EXPECT_EQ(diff(j(R"({"a":5})"), j(R"({"a":{"b":1}})")), j(R"({"a":{"b":1}})"));
}

TEST(Diff, IntegerAndFloatOfSameValueDiffer) {
  const json from = j(R"({"a":1})");
  const json to = j(R"({"a":1.0})");
  const json patch = diff(from, to);
  ASSERT_TRUE(patch.contains("a"));
  EXPECT_TRUE(patch["a"].is_number_float());
  // Signed and unsigned storage of the same integer are the same value.
  EXPECT_EQ(diff(json{{"a", std::int64_t{7}}}, json{{"a", std::uint64_t{7}}}), json::object());
}

TEST(Diff, NonObjectsAreReplacedWhole) {
  EXPECT_EQ(diff(json(1), json(2)), json(2));
  EXPECT_EQ(diff(json::array({1}), json::object()), json::object());
  EXPECT_EQ(diff(json::object({{"a", 1}}), json::array({1})), json::array({1}));
}

// Random twin-section-shaped documents: objects without null members, arrays without nulls,
// names from a small alphabet so that `from` and `to` share members often.
class Generator {
 public:
  explicit Generator(std::uint32_t seed) : rng_(seed) {}

  json object(int depth) {
    json out = json::object();
    const int members = pick(0, depth > 3 ? 2 : 5);
    for (int i = 0; i < members; ++i) out[name()] = value(depth + 1);
    return out;
  }

  // A copy of `doc` with random members changed, added, removed or descended into.
  json mutate(const json& doc, int depth) {
    json out = doc;
    const int edits = pick(0, 4);
    for (int i = 0; i < edits; ++i) {
      const std::string key = name();
      switch (pick(0, 3)) {
        case 0:
          out.erase(key);
          break;
        case 1:
          out[key] = value(depth + 1);
          break;
        default:
          if (out.contains(key) && out[key].is_object()) {
            out[key] = mutate(out[key], depth + 1);
          } else {
            out[key] = object(depth + 1);
          }
      }
    }
    return out;
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  std::string name() {
    static const char* const names[] = {"a", "b", "c", "d", "temp", "h\xc3\xa9", "x_y"};
    return names[pick(0, 6)];
  }

  json scalar() {
    switch (pick(0, 5)) {
      case 0:
        return pick(-1000, 1000);
      case 1:
        return pick(-1000, 1000) / 8.0;
      case 2:
        return pick(0, 1) == 1;
      case 3:
        return std::string(static_cast<std::size_t>(pick(0, 5)), 'z');
      case 4:
        return std::uint64_t{4503599627370495};
      default:
        return name();
    }
  }

  json value(int depth) {
    const int kind = pick(0, depth > 4 ? 0 : 9);
    if (kind <= 5) return scalar();
    if (kind <= 7) return object(depth);
    json arr = json::array();
    const int n = pick(0, 3);
    for (int i = 0; i < n; ++i) arr.push_back(pick(0, 2) == 0 ? object(depth + 1) : scalar());
    return arr;
  }

  std::mt19937 rng_;
};

TEST(Diff, MergeOfDiffRoundTripsOnGeneratedDocuments) {
  Generator gen(20240611);
  for (int i = 0; i < 3000; ++i) {
    const json from = gen.object(0);
    const json to = (i % 3 == 0) ? gen.object(0) : gen.mutate(from, 0);
    const json patch = diff(from, to);
    const json result = merged(from, patch);
    // dump() also tells 1 from 1.0 apart, which operator== does not.
    ASSERT_EQ(result.dump(), to.dump()) << "from " << from << "\nto " << to << "\npatch " << patch;
    EXPECT_EQ(diff(to, to), json::object());
    EXPECT_EQ(patch.empty(), from.dump() == to.dump());
    // A diff between valid sections is itself a valid patch.
    ASSERT_TRUE(validate_patch(patch)) << validate_patch(patch).error().message;
  }
}

TEST(SectionSize, CountsTheIoTHubWay) {
  const json section = j(R"({"a":"xyz","b":1,"c":true,"d":{"e":1.5},"f":[1,"ab"],"g":null,
                             "$version":4,"$metadata":{"$lastUpdated":"2024-01-01T00:00:00.000Z"}})");
  // a:1+3, b:1+8, c:1+4, d:1+(1+8), f:1+8+2, g:1+4; $-members free.
  EXPECT_EQ(section_size(section), 4u + 9u + 5u + 10u + 11u + 5u);
  EXPECT_EQ(section_size(json::object()), 0u);
  // UTF-8 bytes, not characters.
  EXPECT_EQ(section_size(j(R"({"h\u00e9":"\u00e9\u00e9"})")), 3u + 4u);
}

}  // namespace
}  // namespace cairn::twin
