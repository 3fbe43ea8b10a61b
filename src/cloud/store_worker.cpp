#include "cloud/store_worker.hpp"

#include <algorithm>
#include <atomic>
#include <exception>

#include <fmt/format.h>

#include "core/log.hpp"
#include "core/thread_name.hpp"

namespace cairn::cloud {

struct StoreWorker::Job {
  enum State { queued, running, refused_state };
  std::string what;
  std::chrono::steady_clock::time_point deadline;
  std::chrono::milliseconds limit{};
  StoreRunner::Work work;
  StoreRunner::Refused refused;
  std::atomic<int> state{queued};
  std::shared_ptr<asio::steady_timer> timer;  // io thread only
};

Result<std::unique_ptr<StoreWorker>> StoreWorker::start(asio::io_context& io,
                                                        std::unique_ptr<SqliteCloudStore> store,
                                                        StoreWorkerOptions options) {
  if (!store) return make_error(errc::invalid_argument, "the store worker needs a cloud store");
  if (options.max_queued == 0) {
    return make_error(errc::invalid_argument, "the store queue must hold at least one job");
  }
  std::unique_ptr<StoreWorker> worker(new StoreWorker(io, std::move(store), options));
  worker->thread_ = std::thread([raw = worker.get()] { raw->run(); });
  return worker;
}

StoreWorker::StoreWorker(asio::io_context& io, std::unique_ptr<SqliteCloudStore> store,
                         StoreWorkerOptions options)
    : io_(io), store_(std::move(store)), options_(options) {}

StoreWorker::~StoreWorker() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

StoreWorker::Counters StoreWorker::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

StoreRunner StoreWorker::runner(std::chrono::milliseconds limit) {
  StoreRunner r;
  r.run = [this, limit](std::string what, StoreRunner::Work work, StoreRunner::Refused refused) {
    submit(std::move(what), limit, std::move(work), std::move(refused));
  };
  r.on_io = [&io = io_](std::function<void()> f) { asio::post(io, std::move(f)); };
  return r;
}

void StoreWorker::submit(std::string what, std::chrono::milliseconds limit, StoreRunner::Work work,
                         StoreRunner::Refused refused) {
  auto job = std::make_shared<Job>();
  job->what = std::move(what);
  job->limit = limit;
  job->deadline = std::chrono::steady_clock::now() + limit;
  job->work = std::move(work);
  job->refused = std::move(refused);
  std::size_t waiting = 0;
  {
    std::lock_guard lock(mu_);
    waiting = queue_.size();
    if (waiting >= options_.max_queued) {
      ++counters_.refused_full;
    } else {
      queue_.push_back(job);
      counters_.queued = queue_.size();
    }
  }
  if (waiting >= options_.max_queued) {
    log::warn("cloud", "{} refused: {} store jobs are waiting (--max-store-queue)", job->what,
              waiting);
    job->refused(make_error(errc::unavailable,
                            fmt::format("cairn-cloud is busy: {} requests are waiting for its "
                                        "database (--max-store-queue); retry later",
                                        waiting)));
    return;
  }
  cv_.notify_one();
  // Refuses the job if it has not started by its deadline. A started job is bounded by its
  // busy timeout instead, and answers for itself.
  job->timer = std::make_shared<asio::steady_timer>(io_, limit);
  job->timer->async_wait([this, job](net::error_code ec) {
    if (ec) return;  // cancelled: the job ran
    int expected = Job::queued;
    if (!job->state.compare_exchange_strong(expected, Job::refused_state)) return;
    {
      std::lock_guard lock(mu_);
      ++counters_.refused_timeout;
    }
    log::warn("cloud", "{} refused: the database did not take it within {} ms", job->what,
              job->limit.count());
    job->refused(make_error(
        errc::unavailable,
        fmt::format("cairn-cloud's database did not answer within {} ms (it may be locked by "
                    "another process); retry later",
                    job->limit.count())));
  });
}

void StoreWorker::run() {
  name_this_thread("store-worker");
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      counters_.queued = queue_.size();
    }
    execute(*job);
    // The job's captures (replies holding connections) and its timer belong to the io thread:
    // they are released there.
    asio::post(io_, [job = std::move(job)] {
      if (job->timer) job->timer->cancel();
    });
  }
}

void StoreWorker::execute(Job& job) {
  int expected = Job::queued;
  if (!job.state.compare_exchange_strong(expected, Job::running)) return;  // refused: too late
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      job.deadline - std::chrono::steady_clock::now());
  // A lock held elsewhere fails the job when its time is up rather than hold the worker.
  if (auto s = store_->set_busy_timeout(std::max(left, std::chrono::milliseconds(0))); !s) {
    log::warn("cloud", "setting the busy timeout for {} failed: {}", job.what,
              s.error().to_string());
  }
  std::string failure;
  try {
    job.work();
    return;
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  {
    std::lock_guard lock(mu_);
    ++counters_.failed_exception;
  }
  log::error("cloud", "{} failed with an exception: {}", job.what, failure);
  asio::post(io_, [refused = job.refused, what = job.what] {
    refused(make_error(errc::internal, fmt::format("{} failed inside cairn-cloud", what)));
  });
}

}  // namespace cairn::cloud
