// InlineRunWatch: keeps a request that runs inline on an HTTP thread from stalling the server.
//
// cairn-infer's HTTP io_context runs with concurrency hint 1 on two (or more) threads: one thread
// at a time waits for I/O and runs what it finds itself, the others sleep until asked, so a
// request costs no wake-up of a second thread. A request run inline occupies its thread for a
// whole model run; the I/O of every other connection would wait for it. The watch is the one
// that asks: while inline runs happen it looks every `period`, and when one run has lasted a
// whole period it calls `wake_spare` (which posts a no-op to the io_context from outside it),
// waking a sleeping HTTP thread that then takes over the I/O. Other requests wait at most about
// two periods for a slow run; a fast run costs two atomic increments and nobody's wake-up.
// With no inline run for a while the watch sleeps until the next one begins.
//
// Thread-safety: begin() and end() from any thread, paired, at most one run at a time
// (RestOptions::max_inline_runs is 1 where a watch is used).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace cairn::infer {

class InlineRunWatch {
 public:
  InlineRunWatch(std::function<void()> wake_spare, std::chrono::microseconds period);
  ~InlineRunWatch();  // stops and joins the watch thread
  InlineRunWatch(const InlineRunWatch&) = delete;
  InlineRunWatch& operator=(const InlineRunWatch&) = delete;

  void begin();
  void end();
  // Spare threads woken so far (a metric: each is a run that outlasted a period).
  std::uint64_t wakes() const { return wakes_.load(std::memory_order_relaxed); }

 private:
  void loop();

  std::function<void()> wake_spare_;
  std::chrono::microseconds period_;
  std::atomic<std::uint64_t> begun_{0};
  std::atomic<std::uint64_t> ended_{0};
  std::atomic<std::uint64_t> wakes_{0};
  std::atomic<bool> sleeping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace cairn::infer
