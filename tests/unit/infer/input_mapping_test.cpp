// Input mappings: the twin's JSON, binding to a model's inputs, and records (cairn-sensor's
// readings) turned into tensors.
#include "infer/input_mapping.hpp"

#include <cstring>

#include <gtest/gtest.h>

namespace cairn::infer {
namespace {

using nlohmann::json;

const json kReading = json::parse(R"({
  "machine": {"temperature": 21.5, "pressure": 1.25},
  "ambient": {"temperature": 20.75, "humidity": 25},
  "timeCreated": "2026-12-02T22:00:00.000Z"})");

const std::vector<std::string> kFields = {"machine.temperature", "machine.pressure",
                                          "ambient.temperature", "ambient.humidity"};

std::vector<float> floats(const Tensor& t) {
  std::vector<float> out(t.data.size() / sizeof(float));
  std::memcpy(out.data(), t.data.data(), t.data.size());
  return out;
}

std::string error_of(const Result<InputMapping>& r) { return r ? "" : r.error().message; }

TEST(InputMapping, SensorReadingBecomesOneRow) {
  auto parsed = InputMapping::parse({{"reading", kFields}});
  ASSERT_TRUE(parsed) << parsed.error().message;
  auto bound = parsed->bind({{"reading", DataType::kFp32, {-1, 4}}});
  ASSERT_TRUE(bound) << bound.error().message;
  EXPECT_EQ(bound->inputs()[0].shape, (std::vector<std::int64_t>{1, 4}));
  EXPECT_EQ(bound->to_json(),
            json::parse(R"({"reading": {"fields": ["machine.temperature", "machine.pressure",
              "ambient.temperature", "ambient.humidity"], "datatype": "FP32", "shape": [1, 4]}})"));

  auto tensors = bound->map(kReading);
  ASSERT_TRUE(tensors) << tensors.error().message;
  ASSERT_EQ(tensors->size(), 1u);
  const Tensor& t = (*tensors)[0];
  EXPECT_EQ(t.name, "reading");
  EXPECT_EQ(t.dtype, DataType::kFp32);
  EXPECT_EQ(t.shape, (std::vector<std::int64_t>{1, 4}));
  EXPECT_EQ(floats(t), (std::vector<float>{21.5f, 1.25f, 20.75f, 25.0f}));
}

TEST(InputMapping, SeveralInputsDtypesArraysAndStatedShapes) {
  auto parsed = InputMapping::parse(json::parse(R"({
    "temps": {"fields": ["machine.temperature", "ambient.temperature", "history.1"],
              "datatype": "FP64", "shape": [3, 1]},
    "count": {"fields": ["count"]},
    "ok": ["flags.ok"]})"));
  ASSERT_TRUE(parsed) << parsed.error().message;
  auto bound = parsed->bind({{"temps", DataType::kFp64, {-1, 1}},
                             {"count", DataType::kInt64, {}},
                             {"ok", DataType::kBool, {1}}});
  ASSERT_TRUE(bound) << bound.error().message;
  json record = kReading;
  record["history"] = {10.5, 11.5};
  record["count"] = 7;
  record["flags"] = {{"ok", true}};
  auto tensors = bound->map(record);
  ASSERT_TRUE(tensors) << tensors.error().message;
  ASSERT_EQ(tensors->size(), 3u);
  for (const auto& t : *tensors) {
    if (t.name == "temps") {
      EXPECT_EQ(t.shape, (std::vector<std::int64_t>{3, 1}));
      ASSERT_EQ(t.data.size(), 3 * sizeof(double));
      double v[3];
      std::memcpy(v, t.data.data(), sizeof v);
      EXPECT_EQ(v[0], 21.5);
      EXPECT_EQ(v[1], 20.75);
      EXPECT_EQ(v[2], 11.5);
    } else if (t.name == "count") {
      EXPECT_TRUE(t.shape.empty());
      std::int64_t v = 0;
      std::memcpy(&v, t.data.data(), sizeof v);
      EXPECT_EQ(v, 7);
    } else {
      EXPECT_EQ(t.name, "ok");
      EXPECT_EQ(t.data, std::string(1, '\1'));
    }
  }
}

TEST(InputMapping, MalformedTwinEntriesNameTheMember) {
  EXPECT_NE(error_of(InputMapping::parse(json::array())).find("must be an object"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse(json::object())).find("must be an object"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", json::array()}})).find("non-empty array"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {"a", 3}}})).find("inputMapping.x.fields[1]"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {"a..b"}}})).find("empty segment"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {std::string(300, 'a')}}})).find("1-256 bytes"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q"}}}))
                .find("deeper than 16"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {{"fields", {"a"}}, {"datatype", "FLOAT"}}}}))
                .find("inputMapping.x.datatype"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {{"fields", {"a"}}, {"shape", {1, 0}}}}}))
                .find("inputMapping.x.shape"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {{"fields", {"a"}}, {"dtype", "FP32"}}}}))
                .find("unknown member 'dtype'"),
            std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", {{"datatype", "FP32"}}}})).find("needs \"fields\""),
            std::string::npos);
  json many = json::object();
  for (int i = 0; i < 65; ++i) many["in" + std::to_string(i)] = {"a"};
  EXPECT_NE(error_of(InputMapping::parse(many)).find("more than 64 inputs"), std::string::npos);
  EXPECT_NE(error_of(InputMapping::parse({{"x", std::vector<std::string>(4097, "a")}}))
                .find("more than 4096 fields"),
            std::string::npos);
}

TEST(InputMapping, MappingsThatDoNotFitTheModelAreRefusedAtBind) {
  auto four = InputMapping::parse({{"reading", kFields}});
  ASSERT_TRUE(four);
  // An input the model lacks, and an input the mapping leaves out.
  EXPECT_NE(error_of(four->bind({{"x", DataType::kFp32, {-1, 4}}})).find("not mapped"),
            std::string::npos);
  EXPECT_NE(error_of(four->bind({{"reading", DataType::kFp32, {-1, 4}},
                                 {"other", DataType::kFp32, {-1, 1}}}))
                .find("'other' is not mapped"),
            std::string::npos);
  auto extra = InputMapping::parse({{"reading", kFields}, {"ghost", {"a"}}});
  ASSERT_TRUE(extra);
  EXPECT_NE(error_of(extra->bind({{"reading", DataType::kFp32, {-1, 4}}}))
                .find("the model has no input 'ghost' (it has reading)"),
            std::string::npos);
  // Four fields do not fill [-1, 3] or [2]; a stated shape must fit and hold the fields.
  EXPECT_NE(error_of(four->bind({{"reading", DataType::kFp32, {-1, 3}}}))
                .find("4 fields do not fill the model's input shape [-1,3]"),
            std::string::npos);
  EXPECT_NE(error_of(four->bind({{"reading", DataType::kFp32, {2}}})).find("do not fill"),
            std::string::npos);
  auto stated = InputMapping::parse({{"reading", {{"fields", kFields}, {"shape", {2, 2}}}}});
  ASSERT_TRUE(stated);
  EXPECT_TRUE(stated->bind({{"reading", DataType::kFp32, {-1, 2}}}));
  EXPECT_NE(error_of(stated->bind({{"reading", DataType::kFp32, {-1, 4}}})).find("does not fit"),
            std::string::npos);
  auto wrong_count = InputMapping::parse({{"reading", {{"fields", kFields}, {"shape", {1, 3}}}}});
  ASSERT_TRUE(wrong_count);
  EXPECT_NE(error_of(wrong_count->bind({{"reading", DataType::kFp32, {-1, 3}}}))
                .find("holds 3 elements, the mapping has 4 fields"),
            std::string::npos);
  auto typed = InputMapping::parse({{"reading", {{"fields", kFields}, {"datatype", "FP64"}}}});
  ASSERT_TRUE(typed);
  EXPECT_NE(error_of(typed->bind({{"reading", DataType::kFp32, {-1, 4}}}))
                .find("datatype FP64 is stated, the model takes FP32"),
            std::string::npos);
  // Open dimensions: the last open one takes the fields.
  auto bound = four->bind({{"reading", DataType::kFp32, {-1, -1}}});
  ASSERT_TRUE(bound);
  EXPECT_EQ(bound->inputs()[0].shape, (std::vector<std::int64_t>{1, 4}));
  bound = four->bind({{"reading", DataType::kFp32, {-1, 2, -1}}});
  ASSERT_TRUE(bound);
  EXPECT_EQ(bound->inputs()[0].shape, (std::vector<std::int64_t>{1, 2, 2}));
}

TEST(InputMapping, RecordsThatDoNotFitAreRefusedWithTheField) {
  auto bound =
      InputMapping::parse({{"reading", kFields}})->bind({{"reading", DataType::kFp32, {-1, 4}}});
  ASSERT_TRUE(bound);
  auto message = [&](const json& record) {
    auto r = bound->map(record);
    EXPECT_FALSE(r);
    return r ? std::string() : r.error().message;
  };
  EXPECT_NE(message(json::array({1, 2, 3, 4})).find("must be a JSON object"), std::string::npos);
  json missing = kReading;
  missing["machine"].erase("pressure");
  EXPECT_NE(message(missing).find("no field 'machine.pressure'"), std::string::npos);
  json null_value = kReading;
  null_value["ambient"]["humidity"] = nullptr;
  EXPECT_NE(message(null_value).find("no field 'ambient.humidity'"), std::string::npos);
  json text = kReading;
  text["machine"]["temperature"] = "hot";
  EXPECT_NE(message(text).find("field 'machine.temperature' is \"hot\", not a FP32 value"),
            std::string::npos);
  json nested = kReading;
  nested["machine"]["temperature"] = {{"value", 21}};
  EXPECT_NE(message(nested).find("field 'machine.temperature'"), std::string::npos);
  json flat = kReading;
  flat["machine"] = 3;
  EXPECT_NE(message(flat).find("no field 'machine.temperature'"), std::string::npos);

  // Integers out of range for the model's dtype are refused, not wrapped.
  auto small = InputMapping::parse({{"x", {"v"}}})->bind({{"x", DataType::kUint8, {1}}});
  ASSERT_TRUE(small);
  EXPECT_FALSE(small->map({{"v", 300}}));
  EXPECT_TRUE(small->map({{"v", 200}}));
}

}  // namespace
}  // namespace cairn::infer
