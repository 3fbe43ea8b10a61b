// A number of bytes many holders share under one limit (request bodies being read, requests
// waiting in queues), and each holder's claim on it, given back when the claim goes.
//
// The rule: a claim is granted when it fits under the limit, when nothing else is held (so a
// claim of any size the caller accepts at all never waits forever), or when it is for 0 bytes.
//
// Thread-safety: a budget is shared between threads; a claim belongs to one holder at a time.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

namespace cairn {

class ByteBudget {
 public:
  explicit ByteBudget(std::size_t limit) : limit_(limit) {}
  std::size_t limit() const noexcept { return limit_; }
  std::size_t held() const noexcept { return held_.load(); }

 private:
  friend class ByteClaim;
  std::atomic<std::size_t> held_{0};
  const std::size_t limit_;
};

class ByteClaim {
 public:
  ByteClaim() = default;
  ByteClaim(ByteClaim&& other) noexcept
      : budget_(std::move(other.budget_)), bytes_(std::exchange(other.bytes_, 0)) {}
  ByteClaim& operator=(ByteClaim&& other) noexcept {
    if (this != &other) {
      release();
      budget_ = std::move(other.budget_);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ~ByteClaim() { release(); }

  // `bytes` of `budget`, or nothing when the rule above refuses them; `held_by_others`, when
  // given, receives what the budget held before.
  static std::optional<ByteClaim> take(std::shared_ptr<ByteBudget> budget, std::size_t bytes,
                                       std::size_t* held_by_others = nullptr) {
    const std::size_t before = budget->held_.fetch_add(bytes);
    if (held_by_others) *held_by_others = before;
    ByteClaim claim(std::move(budget), bytes);
    if (bytes == 0 || before == 0 || before + bytes <= claim.budget_->limit_) return claim;
    return std::nullopt;  // `claim` gives the bytes back
  }

  // Gives the bytes back before the claim goes.
  void release() noexcept {
    if (budget_ && bytes_) budget_->held_.fetch_sub(bytes_);
    bytes_ = 0;
  }

 private:
  ByteClaim(std::shared_ptr<ByteBudget> budget, std::size_t bytes)
      : budget_(std::move(budget)), bytes_(bytes) {}
  std::shared_ptr<ByteBudget> budget_;
  std::size_t bytes_ = 0;
};

}  // namespace cairn
