#include "modelpkg/tensors.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace cairn::modelpkg {
namespace {

using testing::FakeTensor;

TEST(TensorsTest, FindsOnnxInitializerDataAtItsOffsets) {
  std::vector<FakeTensor> tensors{{"conv1.weight", testing::random_floats(1000, 1)},
                                  {"conv1.bias", testing::random_floats(8, 2)}};
  auto file = testing::make_onnx(tensors);
  auto layout = find_tensors(file);
  ASSERT_EQ(layout.format, ModelFormat::kOnnx);
  ASSERT_EQ(layout.tensors.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(layout.tensors[i].name, tensors[i].name);
    EXPECT_EQ(layout.tensors[i].element_size, 4u);
    EXPECT_EQ(file.substr(layout.tensors[i].offset, layout.tensors[i].size), tensors[i].data);
  }
}

TEST(TensorsTest, TruncatedOnnxIsOpaque) {
  auto file = testing::make_onnx({{"w", testing::random_floats(1000, 1)}});
  auto layout = find_tensors(file.substr(0, file.size() - 100));
  EXPECT_EQ(layout.format, ModelFormat::kOpaque);
  EXPECT_TRUE(layout.tensors.empty());
}

TEST(TensorsTest, RandomBytesAreOpaque) {
  for (unsigned seed = 0; seed < 50; ++seed) {
    auto layout = find_tensors(testing::random_bytes(4096, seed));
    EXPECT_EQ(layout.format, ModelFormat::kOpaque) << seed;
  }
}

TEST(TensorsTest, DuplicateTensorNamesDropTheLayout) {
  auto file = testing::make_onnx(
      {{"w", testing::random_floats(100, 1)}, {"w", testing::random_floats(100, 2)}});
  EXPECT_TRUE(find_tensors(file).tensors.empty());
}

TEST(TensorsTest, TfliteIdentifierWithGarbageIsOpaque) {
  std::string file = testing::random_bytes(256, 3);
  file.replace(4, 4, "TFL3");
  file.replace(0, 4, std::string("\xf0\xff\xff\x7f", 4));  // root offset past the end
  EXPECT_EQ(find_tensors(file).format, ModelFormat::kOpaque);
}

}  // namespace
}  // namespace cairn::modelpkg
