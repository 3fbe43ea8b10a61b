#pragma once
// What the hub can see of one client's window of QoS 1 publishes, and from it whether a
// publish may wait for later ones to share its commit (store::MessageStore::AppendRequest's
// can_wait). An MQTT 3.1.1 client does not announce how many publishes it sends before it
// waits for a PUBACK; the hub learns it from what the client has in flight.

#include <chrono>
#include <cstddef>

namespace cairn::hub {

class PublishWindow {
 public:
  using Clock = std::chrono::steady_clock;
  // The peak is kept from period to period unless the client used less than a quarter of it.
  static constexpr auto kPeriod = std::chrono::seconds(1);
  // How often a round waits for the whole peak to see whether the client goes past it.
  static constexpr auto kProbePeriod = std::chrono::milliseconds(100);

  // For the publish just counted: `in_flight` QoS 1 publishes await their PUBACK, this one
  // included (for a QoS 0 publish, those before it); `others` is the rest of the client's
  // unfinished work (QoS 0 publishes and requests awaiting a commit); the hub stops reading
  // the client when everything reaches `limit` (mqtt.max_inflight_in). True: the publish
  // may wait for company. False: its commit should start now, and it takes every publish
  // before it along.
  bool may_wait(bool qos1, std::size_t in_flight, std::size_t others, std::size_t limit,
                Clock::time_point now);
  // The oldest publish in flight got its PUBACK.
  void acknowledged() {
    if (in_commit_ > 0) --in_commit_;
  }

  std::size_t peak() const { return peak_; }

 private:
  bool commit_now(std::size_t in_flight);

  std::size_t peak_ = 0;      // the most publishes the client had in flight at once
  std::size_t peak_now_ = 0;  // the most in the current period
  Clock::time_point period_start_;
  // The oldest publishes in flight, which a commit asked to start at once holds: those after
  // them wait for the next commit.
  std::size_t in_commit_ = 0;
  bool probing_ = false;  // this round waits for the whole peak
  Clock::time_point last_probe_;
  std::size_t probe_peak_ = 0;  // the peak when the last probe started
};

}  // namespace cairn::hub
