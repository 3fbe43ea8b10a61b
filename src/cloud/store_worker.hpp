// StoreWorker: the thread that does cairn-cloud's database work off the io thread.
//
// Everything cairn-cloud reads from or writes to cloud.db for a client — CONNECT
// authentication and module auto-registration, twin GETs and reported patches, the REST API —
// runs here, on the worker's own SQLite connection, one job at a time in the order submitted.
// The io thread only queues work and gets the answer back through asio (StoreRunner::on_io),
// so a slow fsync or a database locked by another process (`BEGIN IMMEDIATE` held for
// seconds) delays the clients that need the database right now, never keep-alives, telemetry
// PUBACKs or TLS handshakes. (The telemetry sink has a writer thread and connection of its
// own, telemetry_sink.hpp.)
//
// Every job is bounded:
//   - at most StoreWorkerOptions::max_queued jobs wait; a job beyond is refused at once
//     (errc::unavailable: HTTP 503, CONNACK "server unavailable");
//   - a job that has not started within its `limit` is refused at that moment and never runs;
//   - a started job runs with SQLite's busy timeout set to what is left of its `limit`, so a
//     lock held by someone else fails it (errc::unavailable) instead of holding the thread:
//     a refused write has changed nothing;
//   - an exception thrown by a job is caught, logged with the job's description, and refuses
//     the job (errc::internal); the worker goes on with the next one.
// Each job is either run or refused, exactly once.
//
// Thread-safety: submit() and runner() on the io thread; the job runs on the worker thread;
// refusals run on the io thread. The destructor refuses nothing more: it stops and joins the
// worker after the job in progress (queued jobs are dropped with the io_context's handlers).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cloud/sqlite_cloud_store.hpp"
#include "core/result.hpp"
#include "net/asio.hpp"

namespace cairn::cloud {

// How an object that serves the io thread gets its store work done elsewhere. Empty (the
// default, and what unit tests use): the work runs inline on the caller's thread.
struct StoreRunner {
  using Work = std::function<void()>;
  using Refused = std::function<void(const Error&)>;
  // Runs `work` where the store lives, or calls `refused` (on the io thread) when it will not
  // run. `what` names the work in logs ("GET /devices/d", "authenticate d/m").
  std::function<void(std::string what, Work work, Refused refused)> run;
  // Runs a function on the io thread (replies, the hub's hooks).
  std::function<void(std::function<void()>)> on_io;

  explicit operator bool() const { return static_cast<bool>(run); }
  void store(std::string what, Work work, Refused refused) const {
    if (run) return run(std::move(what), std::move(work), std::move(refused));
    work();
  }
  void io(std::function<void()> f) const {
    if (on_io) return on_io(std::move(f));
    f();
  }
};

struct StoreWorkerOptions {
  // Jobs waiting for the worker (not counting the one running). Each holds one request (a REST
  // body is at most the HTTP server's body limit). cairn-cloud: --max-store-queue.
  std::size_t max_queued = 1000;
};

class StoreWorker {
 public:
  // The worker owns `store` (a connection of its own) and uses it on its thread only.
  static Result<std::unique_ptr<StoreWorker>> start(asio::io_context& io,
                                                    std::unique_ptr<SqliteCloudStore> store,
                                                    StoreWorkerOptions options = {});
  ~StoreWorker();
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // The store jobs use (on the worker thread only).
  SqliteCloudStore& store() { return *store_; }

  // Queues `work`, to start within `limit` (see above). `refused` runs on the io thread, or at
  // once when the queue is full.
  void submit(std::string what, std::chrono::milliseconds limit, StoreRunner::Work work,
              StoreRunner::Refused refused);

  // A runner whose jobs must start within `limit`.
  StoreRunner runner(std::chrono::milliseconds limit);

  struct Counters {
    std::uint64_t queued = 0;            // waiting now
    std::uint64_t refused_full = 0;      // refused: max_queued were waiting
    std::uint64_t refused_timeout = 0;   // refused: not started within their limit
    std::uint64_t failed_exception = 0;  // threw
  };
  Counters counters() const;
  const StoreWorkerOptions& options() const { return options_; }

 private:
  struct Job;
  StoreWorker(asio::io_context& io, std::unique_ptr<SqliteCloudStore> store,
              StoreWorkerOptions options);
  void run();
  void execute(Job& job);

  asio::io_context& io_;
  std::unique_ptr<SqliteCloudStore> store_;  // worker thread only
  const StoreWorkerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;  // guarded by mu_
  bool stopping_ = false;                   // guarded by mu_
  Counters counters_;                       // guarded by mu_
  std::thread thread_;
};

}  // namespace cairn::cloud
