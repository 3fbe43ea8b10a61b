// PublishWindow: when a client's publish may wait for others to share its commit. The
// simulations replay a client against a store that commits as the hub asks: at once for a
// publish that may not wait, otherwise once the oldest waiting one has waited the delay.
#include "hub/publish_window.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>

#include <gtest/gtest.h>

namespace cairn::hub {
namespace {

using Clock = PublishWindow::Clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr std::size_t kLimit = 128;  // mqtt.max_inflight_in

// QoS 1 publishes of one client, each deciding as the session does, with nothing else waiting.
struct Client {
  PublishWindow window;
  std::size_t in_flight = 0;
  Clock::time_point now = Clock::time_point{} + std::chrono::hours(1);

  bool publish() { return window.may_wait(true, ++in_flight, 0, kLimit, now); }
  void acknowledge(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      --in_flight;
      window.acknowledged();
    }
  }
  // A burst of n, all acknowledged: the window the hub learns is n.
  void learn(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) publish();
    acknowledge(n);
  }
};

TEST(PublishWindowTest, AClientWaitingForEachPubackIsNeverHeld) {
  Client c;
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(c.publish());
    c.acknowledge(1);
    c.now += milliseconds(3);
  }
}

TEST(PublishWindowTest, HalfOfTheWindowWaitsAndAFullWindowCommits) {
  Client c;
  c.learn(8);
  // The first round past half probes: it waits for the whole window...
  c.now += milliseconds(1);
  for (int i = 0; i < 7; ++i) EXPECT_TRUE(c.publish()) << i;
  EXPECT_FALSE(c.publish());  // ...which is full: the client may be stopped
  c.acknowledge(8);
  // Within the probe period, a round commits once more than half is waiting.
  c.now += milliseconds(1);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(c.publish()) << i;
  EXPECT_FALSE(c.publish());
  EXPECT_EQ(c.window.peak(), 8u);
}

TEST(PublishWindowTest, WhatArrivesDuringACommitWaitsForTheNext) {
  Client c;
  c.learn(8);
  c.now += milliseconds(1);
  for (int i = 0; i < 7; ++i) c.publish();  // the probe
  c.publish();
  c.acknowledge(8);
  c.now += milliseconds(1);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(c.publish());
  EXPECT_FALSE(c.publish());  // five in a commit that starts now
  // While it runs, the client sends the other half of its window: these wait for the next
  // commit instead of starting one of their own right behind it...
  EXPECT_TRUE(c.publish());
  EXPECT_TRUE(c.publish());
  // ...unless they fill the window.
  EXPECT_FALSE(c.publish());
  c.acknowledge(8);
  // The next round starts from nothing in a commit.
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(c.publish());
  EXPECT_FALSE(c.publish());
}

TEST(PublishWindowTest, AClientThatShrinksItsWindowIsSoonNotHeld) {
  Client c;
  c.learn(8);
  c.now += PublishWindow::kPeriod;
  EXPECT_TRUE(c.publish());  // the window of eight is still what the hub knows
  c.acknowledge(1);
  c.now += PublishWindow::kPeriod;
  // A period with one in flight at most: the window is one.
  EXPECT_FALSE(c.publish());
  EXPECT_EQ(c.window.peak(), 1u);
}

TEST(PublishWindowTest, QosZeroCommitsPastHalfOfTheInflightLimit) {
  PublishWindow w;
  const auto now = Clock::now();
  for (std::size_t waiting = 1; waiting <= 4; ++waiting) {
    EXPECT_TRUE(w.may_wait(false, 0, waiting, 8, now)) << waiting;
  }
  EXPECT_FALSE(w.may_wait(false, 0, 5, 8, now));
  EXPECT_FALSE(w.may_wait(false, 0, 8, 8, now));  // the hub stops reading: commit now
}

// A client sending at `per_ms` publishes a millisecond with room for `window` in flight,
// against a store whose commit takes `commit` and waits at most `delay` for company.
struct Replay {
  std::size_t window;
  double per_ms;
  microseconds commit{500};
  microseconds delay{5000};
  bool paced = true;        // false: the client sends as fast as its window lets it
  std::size_t backlog = 0;  // sent at once before the paced ones

  struct Result {
    std::size_t commits = 0;
    std::size_t messages = 0;
    // Commits asked for with the client stopped at its window and no commit running: the
    // client waits for all of this one.
    std::size_t held_at_full_window = 0;
    std::size_t peak = 0;
  };

  Result run(milliseconds length) const {
    PublishWindow w;
    const Clock::time_point start = Clock::time_point{} + std::chrono::hours(1);
    const auto step = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double, std::micro>(paced ? 1000.0 / per_ms : 5.0));
    std::size_t in_flight = 0;  // sent, not acknowledged
    std::size_t committing = 0, pending = 0;
    bool commit_asked = false;
    Clock::time_point commit_ends = Clock::time_point::max(), oldest_pending{};
    Clock::time_point next_send = start;
    Result r;
    std::size_t backlog_left = backlog;
    for (Clock::time_point now = start; now < start + length; now += microseconds(5)) {
      if (now >= commit_ends) {  // the PUBACKs of the commit go out
        for (std::size_t i = 0; i < committing; ++i) w.acknowledged();
        in_flight -= committing;
        committing = 0;
        commit_ends = Clock::time_point::max();
      }
      while ((backlog_left > 0 || now >= next_send) && in_flight < window) {
        ++in_flight;
        if (pending++ == 0) oldest_pending = now;
        if (!w.may_wait(true, in_flight, 0, kLimit, now)) {
          commit_asked = true;
          if (in_flight == window && committing == 0) ++r.held_at_full_window;
        }
        ++r.messages;
        if (backlog_left > 0) {
          --backlog_left;
        } else {
          next_send += step;
        }
      }
      if (!paced) next_send = std::max(next_send, now);
      if (committing == 0 && pending > 0 && (commit_asked || now - oldest_pending >= delay)) {
        committing = pending;
        pending = 0;
        commit_asked = false;
        commit_ends = now + commit;
        ++r.commits;
      }
    }
    r.peak = w.peak();
    return r;
  }
};

TEST(PublishWindowTest, APacedClientIsSeenToHaveRoomForTheDelay) {
  // 11 publishes a millisecond with room for 100, never a burst: the client only ever shows
  // what it has in flight when a commit starts (without the probes, about twice what arrives
  // during one commit). The probes let it show what arrives during the whole delay, so a
  // commit carries at least half of that.
  const auto r = Replay{.window = 100, .per_ms = 11}.run(milliseconds(4000));
  EXPECT_GE(r.peak, 55u);           // 5 ms of messages
  EXPECT_LE(r.commits, 4000u / 2);  // at most one commit every 2 ms on average
  EXPECT_GE(r.messages, 43'900u);   // and the client kept its pace
  // Each probe that makes the peak grow is followed by another: it is learnt within 100 ms.
  const auto first_100_ms = Replay{.window = 100, .per_ms = 11}.run(milliseconds(100));
  EXPECT_GE(first_100_ms.peak, 55u);
}

TEST(PublishWindowTest, AClientWhoseWindowWasSeenHasCommitsCarryHalfOfIt) {
  // The same client after a backlog sent at once (as after a reconnect): the hub has seen its
  // window of 100, so each commit carries 50, 4.5 ms of messages.
  const auto r = Replay{.window = 100, .per_ms = 11, .backlog = 100}.run(milliseconds(4000));
  EXPECT_EQ(r.peak, 100u);
  EXPECT_LE(r.commits, 4000u / 4);  // at most one commit every 4 ms on average
  EXPECT_GE(r.messages, 44'000u);
}

TEST(PublishWindowTest, AClientAtItsWindowWaitsForOneCommitAProbePeriod) {
  // A client that fills its window of 16 as fast as PUBACKs let it: its commits start at
  // half of it, and only a probe's round lets the window fill before one starts.
  const auto r = Replay{.window = 16, .per_ms = 0, .paced = false}.run(milliseconds(2000));
  EXPECT_EQ(r.peak, 16u);
  EXPECT_GT(r.commits, 2000u);
  EXPECT_GE(r.held_at_full_window, 1u);  // the probes
  EXPECT_LE(r.held_at_full_window, 2000u / 100 + 1);
}

}  // namespace
}  // namespace cairn::hub
