#include "core/rfc3339.hpp"

namespace cairn {
namespace {

// Reads exactly `n` digits at `pos`.
std::optional<int> digits(std::string_view s, std::size_t& pos, int n) {
  if (pos + static_cast<std::size_t>(n) > s.size()) return std::nullopt;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    char c = s[pos++];
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool expect(std::string_view s, std::size_t& pos, std::string_view one_of) {
  if (pos >= s.size() || one_of.find(s[pos]) == std::string_view::npos) return false;
  ++pos;
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

}  // namespace

std::optional<std::int64_t> parse_rfc3339_ms(std::string_view s) {
  std::size_t p = 0;
  auto year = digits(s, p, 4);
  if (!year || !expect(s, p, "-")) return std::nullopt;
  auto month = digits(s, p, 2);
  if (!month || !expect(s, p, "-")) return std::nullopt;
  auto day = digits(s, p, 2);
  if (!day || !expect(s, p, "Tt ")) return std::nullopt;
  auto hour = digits(s, p, 2);
  if (!hour || !expect(s, p, ":")) return std::nullopt;
  auto minute = digits(s, p, 2);
  if (!minute || !expect(s, p, ":")) return std::nullopt;
  auto second = digits(s, p, 2);
  if (!second) return std::nullopt;
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (*month < 1 || *month > 12 || *day < 1 ||
      *day > kDays[*month - 1] + (*month == 2 && leap(*year) ? 1 : 0) || *hour > 23 ||
      *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  std::int64_t ms = 0;
  if (p < s.size() && s[p] == '.') {
    ++p;
    std::size_t start = p;
    std::int64_t scale = 100;
    for (; p < s.size() && s[p] >= '0' && s[p] <= '9'; ++p) {
      ms += (s[p] - '0') * scale;
      scale /= 10;
    }
    if (p == start) return std::nullopt;
  }
  std::int64_t offset_s = 0;
  if (p < s.size() && (s[p] == 'Z' || s[p] == 'z')) {
    ++p;
  } else if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
    int sign = s[p++] == '+' ? 1 : -1;
    auto oh = digits(s, p, 2);
    if (!oh || !expect(s, p, ":")) return std::nullopt;
    auto om = digits(s, p, 2);
    if (!om || *oh > 23 || *om > 59) return std::nullopt;
    offset_s = sign * (*oh * 3600 + *om * 60);
  } else {
    return std::nullopt;
  }
  if (p != s.size()) return std::nullopt;
  std::int64_t secs =
      days_from_civil(*year, static_cast<unsigned>(*month), static_cast<unsigned>(*day)) * 86400 +
      *hour * 3600 + *minute * 60 + *second - offset_s;
  return secs * 1000 + ms;
}

}  // namespace cairn
