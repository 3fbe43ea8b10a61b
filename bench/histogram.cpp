#include "bench/histogram.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace cairn::bench {

std::size_t LatencyHistogram::index_of(std::uint64_t v) noexcept {
  if (v < kLinear) return static_cast<std::size_t>(v);
  const int exponent = static_cast<int>(std::bit_width(v)) - 1;  // >= kSubBits + 1
  const int shift = exponent - kSubBits;
  const auto mantissa = static_cast<std::size_t>(v >> shift);  // in [kSub, 2 * kSub)
  return kLinear + static_cast<std::size_t>(exponent - (kSubBits + 1)) * kSub + (mantissa - kSub);
}

std::uint64_t LatencyHistogram::midpoint_of(std::size_t index) noexcept {
  if (index < kLinear) return index;
  const std::size_t k = index - kLinear;
  const int exponent = static_cast<int>(k / kSub) + kSubBits + 1;
  const int shift = exponent - kSubBits;
  const std::uint64_t low = static_cast<std::uint64_t>(kSub + k % kSub) << shift;
  return low + ((std::uint64_t{1} << shift) >> 1);
}

void LatencyHistogram::record(std::uint64_t value_ns) noexcept {
  ++buckets_[index_of(value_ns)];
  ++count_;
  min_ = std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
}

void LatencyHistogram::merge(const LatencyHistogram& other) noexcept {
  for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

std::uint64_t LatencyHistogram::quantile(double q) const noexcept {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  if (rank >= count_) return max_;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(midpoint_of(i), min_, max_);
  }
  return max_;
}

}  // namespace cairn::bench
