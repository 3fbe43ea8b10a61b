// Backoff: the delay before the next retry of something that failed — the first delay, doubled
// on every further failure up to a cap, back to the first after a success. Used wherever cairn
// retries a store operation (endpoint reads, the cloud's telemetry writer).
//
// Thread-safety: a plain value.
#pragma once

#include <algorithm>
#include <chrono>

namespace cairn {

class Backoff {
 public:
  constexpr Backoff(std::chrono::milliseconds first, std::chrono::milliseconds max)
      : first_(first), max_(std::max(first, max)) {}

  // The delay before the next attempt; each call doubles the following one, up to the cap.
  std::chrono::milliseconds next() {
    current_ = current_.count() == 0 ? first_ : std::min(current_ * 2, max_);
    return current_;
  }
  // The operation succeeded: the next failure waits the first delay again.
  void reset() { current_ = std::chrono::milliseconds(0); }
  // True between a failure and the next success.
  bool failing() const { return current_.count() != 0; }

 private:
  std::chrono::milliseconds first_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds current_{0};
};

}  // namespace cairn
