#include "core/backoff.hpp"

#include <gtest/gtest.h>

namespace cairn {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, DoublesFromTheFirstDelayUpToTheCapAndStartsOverAfterASuccess) {
  Backoff b(milliseconds(100), milliseconds(1000));
  EXPECT_FALSE(b.failing());
  EXPECT_EQ(b.next(), milliseconds(100));
  EXPECT_TRUE(b.failing());
  EXPECT_EQ(b.next(), milliseconds(200));
  EXPECT_EQ(b.next(), milliseconds(400));
  EXPECT_EQ(b.next(), milliseconds(800));
  EXPECT_EQ(b.next(), milliseconds(1000));  // capped, never above
  EXPECT_EQ(b.next(), milliseconds(1000));
  b.reset();
  EXPECT_FALSE(b.failing());
  EXPECT_EQ(b.next(), milliseconds(100));
}

TEST(Backoff, ACapBelowTheFirstDelayIsTheFirstDelay) {
  Backoff b(milliseconds(500), milliseconds(10));
  EXPECT_EQ(b.next(), milliseconds(500));
  EXPECT_EQ(b.next(), milliseconds(500));
}

}  // namespace
}  // namespace cairn
