#include "cloud/store_worker.hpp"

#include <atomic>
#include <future>
#include <optional>
#include <stdexcept>

#include <gtest/gtest.h>

#include "cloud/registry.hpp"
#include "cloud_test_util.hpp"

namespace cairn::cloud {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

class StoreWorkerTest : public ::testing::Test {
 protected:
  void start(std::size_t max_queued) {
    auto store = testing::open_store(dir_.file("data/cloud.db"));
    ASSERT_NE(store, nullptr);
    auto w = StoreWorker::start(io_, std::move(store), StoreWorkerOptions{max_queued});
    ASSERT_TRUE(w.ok()) << w.error().to_string();
    worker_ = std::move(*w);
  }

  // Submits a job that holds the worker until release() (and waits until it holds it).
  void hold_worker() {
    std::promise<void> started;
    auto running = started.get_future();
    worker_->submit(
        "holder", 1h,
        [&started, gate = gate_.get_future().share()] {
          started.set_value();
          gate.wait();
        },
        [](const Error& e) { ADD_FAILURE() << "holder refused: " << e.to_string(); });
    running.wait();
  }
  void release() { gate_.set_value(); }

  TempDir dir_;
  asio::io_context io_;
  std::promise<void> gate_;
  std::unique_ptr<StoreWorker> worker_;
};

TEST_F(StoreWorkerTest, AFullQueueRefusesAtOnceAndTheQueuedJobsStillRun) {
  start(2);
  hold_worker();
  int ran = 0;
  std::optional<Error> refusal;
  for (int i = 0; i < 3; ++i) {
    worker_->submit(
        "job", 1h, [&ran] { ++ran; }, [&refusal](const Error& e) { refusal = e; });
  }
  // The third found two waiting: refused before submit() returned, without the io thread.
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->code, errc::unavailable);
  EXPECT_NE(refusal->message.find("--max-store-queue"), std::string::npos) << refusal->message;
  EXPECT_EQ(worker_->counters().refused_full, 1u);
  EXPECT_EQ(worker_->counters().queued, 2u);
  release();
  io_.run();  // returns once every job has run and handed its timer back
  EXPECT_EQ(ran, 2);
  EXPECT_EQ(worker_->counters().queued, 0u);
}

TEST_F(StoreWorkerTest, AJobNotStartedWithinItsLimitIsRefusedAndNeverRuns) {
  start(10);
  hold_worker();
  std::atomic<bool> ran = false;
  std::optional<Error> refusal;
  worker_->submit(
      "late", 1ms, [&ran] { ran = true; }, [&refusal](const Error& e) { refusal = e; });
  while (!refusal) io_.run_one();
  EXPECT_EQ(refusal->code, errc::unavailable);
  release();
  io_.run();
  EXPECT_FALSE(ran);
  EXPECT_EQ(worker_->counters().refused_timeout, 1u);
}

TEST_F(StoreWorkerTest, AnExceptionRefusesItsJobAndTheWorkerGoesOn) {
  start(10);
  std::optional<Error> refusal;
  bool next_ran = false;
  worker_->submit(
      "thrower", 1h, [] { throw std::runtime_error("boom"); },
      [&refusal](const Error& e) { refusal = e; });
  worker_->submit(
      "next", 1h, [&next_ran] { next_ran = true; },
      [](const Error& e) { ADD_FAILURE() << e.to_string(); });
  io_.run();
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->code, errc::internal);
  EXPECT_NE(refusal->message.find("thrower"), std::string::npos);
  EXPECT_TRUE(next_ran);
  EXPECT_EQ(worker_->counters().failed_exception, 1u);
}

TEST_F(StoreWorkerTest, AWriteBlockedByAnotherConnectionsLockFailsWithinItsLimit) {
  start(10);
  auto other = testing::open_store(dir_.file("data/cloud.db"));
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->exec_for_test("BEGIN IMMEDIATE").ok());
  std::optional<Status> written;
  std::optional<bool> read_ok;
  std::promise<void> done;
  worker_->submit(
      "write under a lock", 50ms,
      [this, &written, &read_ok, &done] {
        Registry registry(worker_->store());
        read_ok = registry.list_devices(10).ok();  // WAL: readers are not blocked
        DeviceSpec spec;
        spec.device_id = "d";
        auto d = registry.create_device(spec);
        written = d ? Status{} : Status(d.error());
        done.set_value();
      },
      [](const Error& e) { ADD_FAILURE() << e.to_string(); });
  // The job's limit passes while it runs (its timer then has nothing to do): wait for the job
  // itself, then let the io side release it.
  done.get_future().wait();
  io_.run();
  ASSERT_TRUE(written.has_value());
  EXPECT_TRUE(*read_ok);
  ASSERT_FALSE(written->ok());
  EXPECT_EQ(written->error().code, errc::unavailable) << written->error().to_string();
  ASSERT_TRUE(other->exec_for_test("ROLLBACK").ok());
  EXPECT_FALSE(*other->find_device("d"));  // the refused write changed nothing
}

}  // namespace
}  // namespace cairn::cloud
