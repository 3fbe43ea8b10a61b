#include "modelpkg/delta.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

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

TEST(DeltaTest, MaskedPlanesRoundTripForEveryMask) {
  auto old_bytes = testing::random_floats(2001, 1);
  auto new_bytes = testing::random_floats(2001, 2) + "xyz";  // a size that is no multiple of 4
  old_bytes += "abc";
  for (std::uint16_t mask : std::initializer_list<std::uint16_t>{0x0, 0x1, 0x8, 0x6, 0xf}) {
    auto delta = make_plane_delta(old_bytes, new_bytes, 4, mask, 3);
    ASSERT_TRUE(delta) << mask;
    EXPECT_EQ(delta_format(*delta), 2);
    auto applied = apply_delta(old_bytes, *delta, new_bytes.size());
    ASSERT_TRUE(applied) << applied.error().to_string();
    EXPECT_EQ(*applied, new_bytes) << mask;
  }
  // No plane XORed: the base is not needed.
  auto standalone = make_plane_delta("", new_bytes, 4, 0, 3);
  ASSERT_TRUE(standalone);
  auto applied = apply_delta("", *standalone, new_bytes.size());
  ASSERT_TRUE(applied);
  EXPECT_EQ(*applied, new_bytes);
}

TEST(DeltaTest, RetrainedTensorCodesItsOwnExponentPlane) {
  // Every value replaced by an unrelated one of the same spread: the XOR of the sign/exponent
  // byte is noise, the new byte itself is not.
  auto old_bytes = testing::random_floats(20000, 1);
  auto new_bytes = testing::random_floats(20000, 2);
  auto mask = choose_plane_mask(old_bytes, new_bytes, 4);
  EXPECT_EQ(mask & 0x8U, 0U) << "the exponent plane should be sent as it is";
  auto masked = make_plane_delta(old_bytes, new_bytes, 4, mask, 19);
  auto xored = make_delta(old_bytes, new_bytes, 4, 19);
  ASSERT_TRUE(masked && xored);
  EXPECT_LT(masked->size(), xored->size());
  auto applied = apply_delta(old_bytes, *masked);
  ASSERT_TRUE(applied);
  EXPECT_EQ(*applied, new_bytes);
}

TEST(DeltaTest, PrefixDeltaFindsMovedBytes) {
  auto a = testing::random_bytes(3000, 1), b = testing::random_bytes(3000, 2);
  auto prefix = a + b;
  auto moved = b + a.substr(0, 1000) + "new bytes";
  auto delta = make_prefix_delta(prefix, moved, 19);
  ASSERT_TRUE(delta);
  EXPECT_EQ(delta_format(*delta), 3);
  EXPECT_LT(delta->size(), 200u);
  auto applied = apply_delta(prefix, *delta, moved.size());
  ASSERT_TRUE(applied) << applied.error().to_string();
  EXPECT_EQ(*applied, moved);
}

TEST(DeltaTest, DamagedOrMisfittingNewCodingsAreCorruption) {
  auto old_bytes = testing::random_floats(1000, 1);
  auto new_bytes = testing::random_floats(1000, 2);
  auto masked = make_plane_delta(old_bytes, new_bytes, 4, 0x3, 3);
  auto prefix = make_prefix_delta(old_bytes, new_bytes, 3);
  ASSERT_TRUE(masked && prefix);
  for (const auto* delta : {&*masked, &*prefix}) {
    auto truncated = delta->substr(0, delta->size() - 10);
    auto r = apply_delta(old_bytes, truncated, new_bytes.size());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::corruption);
    // A header that claims another size is refused before anything is decoded.
    auto wrong = apply_delta(old_bytes, *delta, new_bytes.size() + 1);
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.error().code, errc::corruption);
    auto bad_format = *delta;
    bad_format[4] = 9;
    EXPECT_FALSE(apply_delta(old_bytes, bad_format, new_bytes.size()));
  }
  // Masked planes need the base they were made against (its size at least).
  EXPECT_FALSE(apply_delta(old_bytes.substr(4), *masked, new_bytes.size()));
}

// Every value moved by noise as large as the values, as when a layer is retrained.
std::string retrained(const std::string& floats, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.06f);
  std::string out = floats;
  for (std::size_t i = 0; i + 4 <= out.size(); i += 4) {
    float f;
    std::memcpy(&f, out.data() + i, 4);
    f += noise(rng);
    std::memcpy(out.data() + i, &f, 4);
  }
  return out;
}

TEST(DeltaTest, ModelledFloatsRoundTripAnyBits) {
  auto old_bytes = testing::random_floats(3000, 1);
  std::string new_bytes = retrained(old_bytes, 2);
  // Values no weight has, at the start: zeros, infinities, NaNs, subnormals, extremes.
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::lowest()};
  std::memcpy(new_bytes.data(), specials, sizeof specials);
  for (const auto& [old_case, new_case] :
       {std::pair{old_bytes, new_bytes}, std::pair{old_bytes + "ab", new_bytes + "yz"},
        std::pair{testing::random_bytes(4001, 3), testing::random_bytes(4001, 4)},
        std::pair{std::string(), std::string()}}) {
    auto delta = make_float_delta(old_case, new_case);
    ASSERT_TRUE(delta) << delta.error().to_string();
    EXPECT_EQ(delta_format(*delta), 4);
    auto applied = apply_delta(old_case, *delta, new_case.size());
    ASSERT_TRUE(applied) << applied.error().to_string();
    EXPECT_EQ(*applied, new_case);
  }
}

TEST(DeltaTest, ModelledFloatsCodeARetrainedTensorSmallerThanBytePlanes) {
  auto old_bytes = testing::random_floats(20000, 1);
  auto new_bytes = retrained(old_bytes, 2);
  auto floats = make_float_delta(old_bytes, new_bytes);
  auto planes =
      make_plane_delta(old_bytes, new_bytes, 4, choose_plane_mask(old_bytes, new_bytes, 4), 19);
  ASSERT_TRUE(floats && planes);
  // The random low 21 mantissa bits alone are 52,500 bytes; the planes spend about 2.7 bits on
  // each exponent and a whole bit on each sign.
  EXPECT_GT(floats->size(), 52500u);
  EXPECT_LT(floats->size() + 300, planes->size());
}

TEST(DeltaTest, DamagedModelledFloatsAreCorruption) {
  auto old_bytes = testing::random_floats(1000, 1);
  auto new_bytes = retrained(old_bytes, 2);
  auto delta = make_float_delta(old_bytes, new_bytes);
  ASSERT_TRUE(delta);
  for (const auto& damaged : {delta->substr(0, delta->size() - 1), *delta + "x"}) {
    auto r = apply_delta(old_bytes, damaged, new_bytes.size());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::corruption) << r.error().to_string();
  }
  auto wrong_planes = *delta;
  wrong_planes[5] = 2;
  EXPECT_FALSE(apply_delta(old_bytes, wrong_planes, new_bytes.size()));
  // The base must be the old segment: same size.
  auto short_base = apply_delta(old_bytes.substr(4), *delta, new_bytes.size());
  ASSERT_FALSE(short_base);
  EXPECT_EQ(short_base.error().code, errc::corruption);
  EXPECT_FALSE(make_float_delta("abcd", "abcdefgh"));
}

}  // namespace
}  // namespace cairn::modelpkg
