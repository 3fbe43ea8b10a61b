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

// The text reader must agree with the JSON-document reader on every input: the same bytes and
// shape when both accept, the same error when either refuses.
TEST(TensorJsonTextTest, AgreesWithTheDocumentReader) {
  const DataType types[] = {
      DataType::kBool, DataType::kUint8, DataType::kUint16, DataType::kUint32, DataType::kUint64,
      DataType::kInt8, DataType::kInt16, DataType::kInt32,  DataType::kInt64,  DataType::kFp16,
      DataType::kBf16, DataType::kFp32,  DataType::kFp64,   DataType::kBytes};
  const char* texts[] = {"[1,2,3,4]",
                         "[[1,2],[3,4]]",
                         " [ [ 1 , 2 ] , [ 3 , 4 ] ] ",
                         "[[1,2],[3]]",
                         "[[1,2],3]",
                         "[1,[2]]",
                         "[]",
                         "[[],[]]",
                         "[[],[1]]",
                         "[[[1]],[[2]]]",
                         "[0,1,0,1]",
                         "[true,false]",
                         "[-0,0]",
                         "[-0.0,0.5]",
                         "[1.5,2]",
                         "[1e3,-2E-2]",
                         "[255,256]",
                         "[-1,-128,-129]",
                         "[127,128]",
                         "[65535,65536]",
                         "[4294967295,4294967296]",
                         "[9223372036854775807,-9223372036854775808]",
                         "[18446744073709551615]",
                         "[18446744073709551616]",
                         "[123456789012345678901234567890]",
                         "[1e999]",
                         "[1e-999]",
                         "[\"NaN\",\"Infinity\",\"-Infinity\",\"nan\"]",
                         "[\"inf\",\"-inf\"]",
                         "[\"a\",\"b\"]",
                         "[\"N\\u0061N\"]",
                         "[null]",
                         "[{}]",
                         "[01]",
                         "[1.]",
                         "[.5]",
                         "[1,]",
                         "[1 2]",
                         "[-]",
                         "[1e]",
                         "[tru]",
                         "[truex]",
                         "[1,2",
                         "5",
                         "true",
                         "\"NaN\"",
                         "[3.4028235e38,3.5e38]",
                         "[1e-46,65504,65520]",
                         "[0.1,0.2,0.30000000000000004]",
                         "[2,2]"};
  for (auto dtype : types) {
    for (const char* text : texts) {
      for (bool infer : {true, false}) {
        Tensor a;
        a.name = "x";
        a.dtype = dtype;
        a.shape = {2, 2};
        Tensor b = a;
        auto parsed = nlohmann::json::parse(text, nullptr, false);
        Status expected = parsed.is_discarded()
                              ? Status(make_error(errc::invalid_argument, "invalid"))
                              : tensor_from_json(parsed, infer, a);
        Status got = tensor_from_json_text(text, infer, b);
        const std::string what =
            std::string(to_string(dtype)) + " " + text + (infer ? " (infer shape)" : "");
        ASSERT_EQ(static_cast<bool>(got), static_cast<bool>(expected)) << what;
        if (!got) {
          if (!parsed.is_discarded()) {
            EXPECT_EQ(got.error().message, expected.error().message) << what;
          }
          continue;
        }
        EXPECT_EQ(b.shape, a.shape) << what;
        EXPECT_EQ(b.data, a.data) << what;
        EXPECT_EQ(b.strings, a.strings) << what;
      }
    }
  }
}

// The text writer gives what the JSON-document writer gives, numbers read back as the same
// values of the tensor's type.
TEST(TensorJsonTextTest, WriterMatchesTheDocumentWriter) {
  const char* texts[] = {"[[1,2,3],[4,5,6]]",
                         "[[[0.1,-2.5]],[[1e-7,3e38]]]",
                         "[[\"NaN\",\"Infinity\"],[\"-Infinity\",-0.0]]",
                         "[]",
                         "[[],[]]",
                         "7",
                         "[true,false]",
                         "[0.3333333333333333]"};
  for (auto dtype : {DataType::kFp32, DataType::kFp64, DataType::kFp16, DataType::kBf16,
                     DataType::kInt32, DataType::kBool, DataType::kUint8}) {
    for (const char* text : texts) {
      Tensor t;
      t.name = "x";
      t.dtype = dtype;
      if (!tensor_from_json_text(text, true, t)) continue;
      for (bool nested : {false, true}) {
        std::string written;
        append_tensor_json(written, t, nested);
        auto doc = tensor_to_json(t, nested);
        auto back = nlohmann::json::parse(written, nullptr, false);
        ASSERT_FALSE(back.is_discarded()) << written;
        // Same structure and same values once read back into the tensor's type.
        Tensor from_text = t, from_doc = t;
        ASSERT_TRUE(tensor_from_json(back, nested, from_text)) << written;
        ASSERT_TRUE(tensor_from_json(doc, nested, from_doc));
        EXPECT_EQ(from_text.shape, from_doc.shape) << written;
        EXPECT_EQ(from_text.data, t.data) << to_string(dtype) << " " << written;
      }
    }
  }
  Tensor f;
  f.dtype = DataType::kFp32;
  ASSERT_TRUE(tensor_from_json_text("[[0.1,1],[2.5,\"NaN\"]]", true, f));
  std::string written;
  append_tensor_json(written, f, true);
  EXPECT_EQ(written, R"([[0.1,1.0],[2.5,"NaN"]])");
  Tensor s;
  s.dtype = DataType::kBytes;
  s.shape = {2};
  s.strings = {"a\"b", "c"};
  written.clear();
  append_tensor_json(written, s, false);
  EXPECT_EQ(written, R"(["a\"b","c"])");
}

}  // namespace
}  // namespace cairn::infer
