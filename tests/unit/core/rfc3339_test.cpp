#include "core/rfc3339.hpp"

#include <gtest/gtest.h>

#include "core/clock.hpp"

namespace cairn {
namespace {

TEST(Rfc3339, ReadsWhatFormatIso8601Writes) {
  for (std::int64_t ms : {std::int64_t{0}, std::int64_t{951782400123},  // 2000-02-29
                          std::int64_t{1796256000999}, std::int64_t{4102444799000}}) {
    EXPECT_EQ(parse_rfc3339_ms(format_iso8601(ms)), ms) << format_iso8601(ms);
  }
}

TEST(Rfc3339, OffsetsAndFractions) {
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), 0);
  EXPECT_EQ(parse_rfc3339_ms("1969-12-31T23:30:00-00:30"), 0);
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T00:00:01.123456789Z"), 1123);
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01t00:00:02z"), 2000);
  EXPECT_LT(*parse_rfc3339_ms("0001-01-01T00:00:00Z"), 0);  // Docker's "never"
}

TEST(Rfc3339, RefusesWhatIsNotATime) {
  for (const char* bad :
       {"", "2026-12-02", "2026-12-02T10:00:00", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z", "2026-12-02T24:00:00Z", "2026-12-02T10:00:00.Z",
        "2026-12-02T10:00:00+0100", "2026-12-02T10:00:00Zjunk", "tomorrow", "9999999999"}) {
    EXPECT_FALSE(parse_rfc3339_ms(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace cairn
