#include "cloud_deletions.hpp"

#include "core/clock.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"

namespace cairn::cairnd {

CloudDeletions::CloudDeletions(store::MessageStore& store, Remove remove)
    : store_(store), remove_(std::move(remove)) {}

CloudDeletions::~CloudDeletions() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void CloudDeletions::start() {
  auto rows = store_.list(kCloudDeletionsTable);
  if (!rows) {
    log::error("agent", "cannot read the pending cloud identity deletions: {}",
               rows.error().to_string());
  } else {
    std::lock_guard lock(mu_);
    for (const auto& [module, removed_at] : *rows) {
      pending_[module].generation = ++generations_;
      log::info("agent", "module {}: its cloud identity is still to be deleted (removed at {})",
                module, removed_at);
    }
  }
  worker_ = std::thread([this] { run(); });
}

void CloudDeletions::add(const std::string& module) {
  store_.put(kCloudDeletionsTable, module, std::to_string(now_unix_ms()), [module](Status s) {
    if (!s) {
      log::warn("agent",
                "module {}: the pending deletion of its cloud identity is not stored "
                "(a restart before it succeeds forgets it): {}",
                module, s.error().to_string());
    }
  });
  {
    std::lock_guard lock(mu_);
    Pending& p = pending_[module];
    p.backoff.reset();
    p.due = std::chrono::steady_clock::now();
    p.generation = ++generations_;
  }
  cv_.notify_all();
}

void CloudDeletions::cancel(const std::string& module) {
  {
    std::lock_guard lock(mu_);
    if (pending_.erase(module) == 0) return;
  }
  log::info("agent", "module {} is deployed again: its cloud identity is kept", module);
  forget_stored(module);
}

std::size_t CloudDeletions::pending() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

void CloudDeletions::forget_stored(const std::string& module) {
  store_.erase(kCloudDeletionsTable, module, [module](Status s) {
    if (!s) {
      log::warn("agent", "module {}: cannot clear its pending cloud deletion: {}", module,
                s.error().to_string());
    }
  });
}

void CloudDeletions::run() {
  name_this_thread("cloud-deletes");
  std::unique_lock lock(mu_);
  while (!stopping_) {
    // The deletion due first.
    auto next = pending_.end();
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (next == pending_.end() || it->second.due < next->second.due) next = it;
    }
    if (next == pending_.end()) {
      cv_.wait(lock);
      continue;
    }
    if (next->second.due > std::chrono::steady_clock::now()) {
      cv_.wait_until(lock, next->second.due);
      continue;
    }
    const std::string module = next->first;
    const std::uint64_t generation = next->second.generation;
    lock.unlock();
    const Status s = remove_(module);
    lock.lock();
    auto it = pending_.find(module);
    if (it == pending_.end() || it->second.generation != generation) continue;  // cancelled
    if (s) {
      pending_.erase(it);
      forget_stored(module);
      continue;
    }
    const auto delay = it->second.backoff.next();
    it->second.due = std::chrono::steady_clock::now() + delay;
    log::warn("agent", "module {}: its cloud identity was not deleted ({}); retrying in {} s",
              module, s.error().message, delay.count() / 1000);
  }
}

}  // namespace cairn::cairnd
