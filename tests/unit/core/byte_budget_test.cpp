#include "core/byte_budget.hpp"

#include <memory>
#include <utility>

#include <gtest/gtest.h>

namespace cairn {
namespace {

TEST(ByteBudgetTest, ClaimsFitAloneOrEmptyAndGiveTheirBytesBack) {
  auto budget = std::make_shared<ByteBudget>(100);
  auto alone = ByteClaim::take(budget, 150);  // larger than the limit, but nothing else is held
  ASSERT_TRUE(alone);
  EXPECT_EQ(budget->held(), 150u);
  std::size_t others = 0;
  EXPECT_FALSE(ByteClaim::take(budget, 1, &others));
  EXPECT_EQ(others, 150u);
  EXPECT_EQ(budget->held(), 150u);  // a refused claim holds nothing
  EXPECT_TRUE(ByteClaim::take(budget, 0));
  alone.reset();
  EXPECT_EQ(budget->held(), 0u);

  auto a = ByteClaim::take(budget, 60);
  auto b = ByteClaim::take(budget, 40);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(ByteClaim::take(budget, 1));
  ByteClaim moved = std::move(*a);  // the share moves with the claim, once
  a.reset();
  EXPECT_EQ(budget->held(), 100u);
  moved.release();
  EXPECT_EQ(budget->held(), 40u);
  EXPECT_TRUE(ByteClaim::take(budget, 60));
}

}  // namespace
}  // namespace cairn
