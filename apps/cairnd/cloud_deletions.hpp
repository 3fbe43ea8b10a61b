// CloudDeletions: the cloud identities of removed modules, deleted in the background and
// retried until the cloud confirms. The agent's removal never waits for the cloud, and a module
// removed while the device is offline loses its cloud identity once the cloud is reachable
// again. Pending deletions are kept in the store's key-value table kCloudDeletionsTable, so a
// restart carries them on.
//
// A module deployed again before its deletion went through is taken off the list (cancel). An
// attempt already under way when that happens may still delete the new identity; the module's
// cloud link then reconnects and the cloud registers it again (docs/agent.md "Identities").
//
// Thread-safety: add() and cancel() may be called from any thread; attempts run on a thread of
// its own (one HTTPS request at a time).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "core/backoff.hpp"
#include "core/result.hpp"
#include "store/message_store.hpp"

namespace cairn::cairnd {

// Key: the module id; value: the time of the removal (unix ms), for the log.
inline constexpr const char* kCloudDeletionsTable = "cloud-deletions";

class CloudDeletions {
 public:
  // `remove` makes one attempt for a module (blocking, bounded by its own timeout): success
  // means the cloud no longer has the identity.
  using Remove = std::function<Status(const std::string& module)>;

  // Backoff of the retries: kFirstRetry, doubled up to kMaxRetry.
  static constexpr std::chrono::milliseconds kFirstRetry{2'000};
  static constexpr std::chrono::milliseconds kMaxRetry{300'000};

  CloudDeletions(store::MessageStore& store, Remove remove);
  ~CloudDeletions();
  CloudDeletions(const CloudDeletions&) = delete;
  CloudDeletions& operator=(const CloudDeletions&) = delete;

  // Loads the deletions a previous run left pending and starts the thread.
  void start();
  // Delete this module's cloud identity (now, and again after failures).
  void add(const std::string& module);
  // The module is deployed again: its identity is wanted after all.
  void cancel(const std::string& module);
  std::size_t pending() const;

 private:
  struct Pending {
    Backoff backoff{kFirstRetry, kMaxRetry};
    std::chrono::steady_clock::time_point due;
    std::uint64_t generation = 0;  // add() again or cancel(): an attempt's outcome is stale
  };
  void run();
  void forget_stored(const std::string& module);

  store::MessageStore& store_;
  Remove remove_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Pending> pending_;  // guarded by mu_
  std::uint64_t generations_ = 0;           // guarded by mu_
  bool stopping_ = false;                   // guarded by mu_
  std::thread worker_;
};

}  // namespace cairn::cairnd
