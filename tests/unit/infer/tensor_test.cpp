#include "infer/tensor.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include <gtest/gtest.h>

#include "infer/engine.hpp"
#include "infer/rest_api.hpp"

namespace cairn::infer {
namespace {

TEST(DataTypeTest, NamesRoundTrip) {
  for (auto t :
       {DataType::kBool, DataType::kUint8, DataType::kUint16, DataType::kUint32, DataType::kUint64,
        DataType::kInt8, DataType::kInt16, DataType::kInt32, DataType::kInt64, DataType::kFp16,
        DataType::kBf16, DataType::kFp32, DataType::kFp64, DataType::kBytes}) {
    auto parsed = parse_datatype(to_string(t));
    ASSERT_TRUE(parsed.has_value()) << to_string(t);
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_FALSE(parse_datatype("FLOAT").has_value());
  EXPECT_EQ(element_size(DataType::kFp64), 8u);
}

TEST(TensorJsonTest, NestedInfersShapeAndFlattens) {
  Tensor t;
  t.name = "x";
  t.dtype = DataType::kInt32;
  ASSERT_TRUE(tensor_from_json(nlohmann::json::parse("[[1,2,3],[4,5,6]]"), true, t));
  EXPECT_EQ(t.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(tensor_to_json(t, false), nlohmann::json::parse("[1,2,3,4,5,6]"));
  EXPECT_EQ(tensor_to_json(t, true), nlohmann::json::parse("[[1,2,3],[4,5,6]]"));
}

TEST(TensorJsonTest, RaggedArrayIsRefused) {
  Tensor t;
  t.dtype = DataType::kFp32;
  auto s = tensor_from_json(nlohmann::json::parse("[[1,2],[3]]"), true, t);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("rectangular"), std::string::npos);
}

TEST(TensorJsonTest, ShapeMismatchIsRefused) {
  Tensor t;
  t.dtype = DataType::kFp32;
  t.shape = {2, 2};
  EXPECT_FALSE(tensor_from_json(nlohmann::json::parse("[1,2,3]"), false, t));
  EXPECT_TRUE(tensor_from_json(nlohmann::json::parse("[1,2,3,4]"), false, t));
}

TEST(TensorJsonTest, OutOfRangeIntegersAreRefused) {
  Tensor t;
  t.dtype = DataType::kUint8;
  t.shape = {1};
  EXPECT_FALSE(tensor_from_json(nlohmann::json::parse("[256]"), false, t));
  EXPECT_FALSE(tensor_from_json(nlohmann::json::parse("[-1]"), false, t));
  EXPECT_FALSE(tensor_from_json(nlohmann::json::parse("[\"a\"]"), false, t));
  EXPECT_TRUE(tensor_from_json(nlohmann::json::parse("[255]"), false, t));
}

TEST(TensorJsonTest, Int64ExtremesSurvive) {
  Tensor t;
  t.dtype = DataType::kInt64;
  t.shape = {2};
  auto j = nlohmann::json::array(
      {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()});
  ASSERT_TRUE(tensor_from_json(j, false, t));
  EXPECT_EQ(tensor_to_json(t, false), j);
  Tensor u;
  u.dtype = DataType::kUint64;
  u.shape = {1};
  auto big = nlohmann::json::array({std::numeric_limits<std::uint64_t>::max()});
  ASSERT_TRUE(tensor_from_json(big, false, u));
  EXPECT_EQ(tensor_to_json(u, false), big);
}

TEST(TensorJsonTest, FloatSpecialsUseStrings) {
  Tensor t;
  t.dtype = DataType::kFp32;
  t.shape = {3};
  ASSERT_TRUE(
      tensor_from_json(nlohmann::json::parse(R"(["NaN","Infinity","-Infinity"])"), false, t));
  auto back = tensor_to_json(t, false);
  EXPECT_EQ(back, nlohmann::json::parse(R"(["NaN","Infinity","-Infinity"])"));
}

TEST(TensorJsonTest, Fp32RoundTripsExactly) {
  Tensor t;
  t.dtype = DataType::kFp32;
  t.shape = {3};
  const float values[] = {0.1f, 3.4028235e38f, 1.17549435e-38f};
  t.data.assign(reinterpret_cast<const char*>(values), sizeof(values));
  Tensor u;
  u.dtype = DataType::kFp32;
  u.shape = {3};
  auto text = tensor_to_json(t, false).dump();
  ASSERT_TRUE(tensor_from_json(nlohmann::json::parse(text), false, u));
  EXPECT_EQ(t.data, u.data);
}

TEST(HalfTest, Fp16KnownValues) {
  EXPECT_EQ(float_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(1e6f), 0x7c00);
  EXPECT_EQ(fp16_to_float(0x3555), 0.333251953125f);
  EXPECT_EQ(fp16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(std::nanf("")))));
  // Every finite half survives half -> float -> half.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto half = static_cast<std::uint16_t>(h);
    if ((half & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(float_to_fp16(fp16_to_float(half)), half) << h;
  }
}

TEST(HalfTest, Bf16KnownValues) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0xc000), -2.0f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

TEST(BinaryBytesTest, RoundTripAndTruncation) {
  std::vector<std::string> s = {"a", "", std::string("\0x", 2)};
  auto raw = bytes_to_binary(s);
  auto back = bytes_from_binary(raw, 3);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, s);
  EXPECT_FALSE(bytes_from_binary(raw.substr(0, raw.size() - 1), 3));
  EXPECT_FALSE(bytes_from_binary(raw, 2));
}

TEST(FormatTest, DetectedFromBytes) {
  EXPECT_EQ(detect_format(std::string("\x1c\0\0\0TFL3xxxx", 12)), ModelFormat::kTflite);
  EXPECT_EQ(detect_format(std::string("\x08\x08\x12\x04test", 8)), ModelFormat::kOnnx);
  EXPECT_EQ(detect_format("GIF89a"), ModelFormat::kUnknown);
  EXPECT_EQ(detect_format(""), ModelFormat::kUnknown);
}

TEST(FormatTest, GarbageFailsWithReason) {
  auto r = load_engine("this is not a model", {}, "junk.onnx");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("neither an ONNX"), std::string::npos);
  // Looks like ONNX by its first byte, but ONNX Runtime refuses it: its reason comes back.
  auto o = load_engine(std::string("\x08\x07\x3a\xff\xff\xff", 6), {}, "cut.onnx");
  ASSERT_FALSE(o);
  EXPECT_NE(o.error().message.find("onnxruntime"), std::string::npos) << o.error().message;
  auto t = load_engine(std::string("\x1c\0\0\0TFL3\xff\xff\xff\xff", 12), {}, "cut.tflite");
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("cut.tflite"), std::string::npos) << t.error().message;
}

TEST(JsonDepthTest, CountsOnlyStructure) {
  EXPECT_EQ(json_depth(R"({"a": [[1], "[[[["]})", 100), 3u);
  EXPECT_EQ(json_depth(R"("\"[[[")", 100), 0u);
  std::string bomb(100000, '[');
  EXPECT_GT(json_depth(bomb, 64), 64u);
}

}  // namespace
}  // namespace cairn::infer
