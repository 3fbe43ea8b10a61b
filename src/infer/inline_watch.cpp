#include "infer/inline_watch.hpp"

#include "core/thread_name.hpp"

namespace cairn::infer {

namespace {
// Periods without an inline run after which the watch stops looking until the next one.
constexpr int kIdlePeriods = 100;
}  // namespace

InlineRunWatch::InlineRunWatch(std::function<void()> wake_spare, std::chrono::microseconds period)
    : wake_spare_(std::move(wake_spare)), period_(period), thread_([this] { loop(); }) {}

InlineRunWatch::~InlineRunWatch() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void InlineRunWatch::begin() {
  begun_.fetch_add(1);  // sequentially consistent with the watch's sleeping_ (see loop())
  if (sleeping_.load()) {
    std::lock_guard lock(mu_);
    cv_.notify_one();
  }
}

void InlineRunWatch::end() { ended_.fetch_add(1, std::memory_order_release); }

void InlineRunWatch::loop() {
  name_this_thread("inline-watch");
  std::unique_lock lock(mu_);
  std::uint64_t seen_begun = begun_.load();
  std::uint64_t woken_for = 0;  // the run a spare thread was woken for (runs count from 1)
  int idle_periods = 0;
  while (!stopping_) {
    if (idle_periods >= kIdlePeriods) {
      // Either begin() sees sleeping_ and notifies under the lock, or this sees its increment.
      sleeping_.store(true);
      cv_.wait(lock, [&] { return stopping_ || begun_.load() != seen_begun; });
      sleeping_.store(false);
      idle_periods = 0;
      continue;
    }
    const bool active_before = ended_.load(std::memory_order_acquire) < seen_begun;
    cv_.wait_for(lock, period_, [&] { return stopping_; });
    if (stopping_) return;
    const std::uint64_t begun = begun_.load();
    const bool active = ended_.load(std::memory_order_acquire) < begun;
    // The same run, active a whole period ago and still: it is slow, hand the I/O over.
    if (active && active_before && begun == seen_begun && woken_for != begun) {
      woken_for = begun;
      wakes_.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      wake_spare_();
      lock.lock();
    }
    idle_periods = (active || begun != seen_begun) ? 0 : idle_periods + 1;
    seen_begun = begun;
  }
}

}  // namespace cairn::infer
