#include "hub/publish_window.hpp"

#include <algorithm>

namespace cairn::hub {

bool PublishWindow::may_wait(bool qos1, std::size_t in_flight, std::size_t others,
                             std::size_t limit, Clock::time_point now) {
  const std::size_t in_commit = std::min(in_commit_, in_flight);
  const std::size_t waiting = in_flight + others;
  // The hub stops reading the client here: nothing more can come to share the commit.
  if (waiting >= limit) return commit_now(in_flight);
  if (qos1) {
    // The client's own window is only seen when it fills it. The peak is kept from period to
    // period, so that commits started at half of it do not shrink what it is measured by,
    // unless the client now uses much less of it (a backlog sent, then one message at a
    // time): such a client is then not kept waiting for long.
    if (now - period_start_ >= kPeriod) {
      if (4 * peak_now_ < peak_) {
        peak_ = peak_now_;
        probe_peak_ = std::min(probe_peak_, peak_);
      }
      peak_now_ = 0;
      period_start_ = now;
    }
    peak_now_ = std::max(peak_now_, in_flight);
    peak_ = std::max(peak_, in_flight);
    // At its peak the client may be stopped: nothing is worth waiting for.
    if (in_flight >= peak_) return commit_now(in_flight);
  }
  // A commit must start while the client can still send: one that starts when half of what
  // the client may have in flight (its window, and what the hub reads from it) is waiting
  // overlaps with the other half arriving, as a double buffer does, where one that waited
  // for the rest would find the client stopped. What arrives while that commit runs is the
  // other half: it waits for the next commit. Counting it as waiting too would start a
  // second commit right behind the first, each carrying half as much.
  const bool half_waiting =
      2 * (waiting - in_commit) > limit || (qos1 && 2 * (in_flight - in_commit) > peak_);
  if (!half_waiting) {
    probing_ = false;  // a new round: the last one's commit is done or under way
    return true;
  }
  if (!qos1) return commit_now(in_flight);
  // A client that never fills its window (one that paces its messages) shows only what it
  // had in flight when commits started, and would be held to that: each commit carrying what
  // arrives during the one before. Once per probe period a round waits until the whole peak
  // (or the limit) is in flight: a paced client goes past it and the peak grows; a client
  // whose window it is waits for one commit. While probes make the peak grow, the next round
  // probes again, so a paced client is soon seen with room for the whole delay.
  if (!probing_ && (now - last_probe_ >= kProbePeriod || peak_ > probe_peak_)) {
    probing_ = true;
    last_probe_ = now;
    probe_peak_ = peak_;
  }
  return probing_ ? true : commit_now(in_flight);
}

bool PublishWindow::commit_now(std::size_t in_flight) {
  in_commit_ = in_flight;
  probing_ = false;
  return false;
}

}  // namespace cairn::hub
