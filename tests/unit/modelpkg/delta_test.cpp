#include "modelpkg/delta.hpp"

#include <cstring>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace cairn::modelpkg {
namespace {

std::string scaled(const std::string& floats, float factor) {
  std::string out = floats;
  for (std::size_t i = 0; i + 4 <= out.size(); i += 4) {
    float f;
    std::memcpy(&f, out.data() + i, 4);
    f *= factor;
    std::memcpy(out.data() + i, &f, 4);
  }
  return out;
}

TEST(DeltaTest, RoundTripsAndBeatsTheRawSizeForSmallChanges) {
  auto old_bytes = testing::random_floats(50000, 1);
  auto new_bytes = scaled(old_bytes, 1.001f);
  auto delta = make_delta(old_bytes, new_bytes, 4, 19);
  ASSERT_TRUE(delta) << delta.error().to_string();
  EXPECT_LT(delta->size(), new_bytes.size() * 3 / 4);
  auto applied = apply_delta(old_bytes, *delta);
  ASSERT_TRUE(applied);
  EXPECT_EQ(*applied, new_bytes);
}

TEST(DeltaTest, OddSizesRoundTrip) {
  auto old_bytes = testing::random_bytes(1003, 1);
  auto new_bytes = testing::random_bytes(1003, 2);
  for (std::size_t planes : {1u, 2u, 4u, 8u}) {
    auto delta = make_delta(old_bytes, new_bytes, planes, 3);
    ASSERT_TRUE(delta);
    auto applied = apply_delta(old_bytes, *delta);
    ASSERT_TRUE(applied);
    EXPECT_EQ(*applied, new_bytes);
  }
}

TEST(DeltaTest, WrongBaseOrDamagedDeltaIsCorruption) {
  auto old_bytes = testing::random_floats(1000, 1);
  auto delta = make_delta(old_bytes, scaled(old_bytes, 2.0f), 4, 3);
  ASSERT_TRUE(delta);
  auto wrong_base = apply_delta(old_bytes.substr(4), *delta);
  ASSERT_FALSE(wrong_base);
  EXPECT_EQ(wrong_base.error().code, errc::corruption);
  auto damaged = *delta;
  damaged.resize(damaged.size() - 10);
  auto bad = apply_delta(old_bytes, damaged);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::corruption);
  EXPECT_FALSE(apply_delta(old_bytes, "CDLT"));
  EXPECT_FALSE(make_delta("abc", "abcd", 1, 3));
}

}  // namespace
}  // namespace cairn::modelpkg
