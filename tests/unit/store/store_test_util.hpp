// Helpers shared by the store tests: a temporary directory and blocking wrappers around the
// store's callback API (the callbacks run on the store's writer thread; the wrappers wait on
// a future, so a test reads top to bottom).
#pragma once

#include <filesystem>
#include <future>
#include <string>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>

#include "store/message_store.hpp"
#include <stdlib.h>

namespace cairn::store::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-store-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline Options options_for(const TempDir& dir, Options::Sync sync = Options::Sync::normal) {
  Options o;
  o.path = dir.file("store/messages.db");
  o.sync = sync;
  return o;
}

inline std::unique_ptr<MessageStore> open_or_die(const Options& options) {
  auto store = MessageStore::open(options);
  if (!store) {
    ADD_FAILURE() << "open failed: " << store.error().to_string();
    return nullptr;
  }
  return std::move(*store);
}

inline Target target(std::string endpoint, std::int32_t priority = 0,
                     std::int64_t expires_at_ms = 0) {
  return Target{QueueKey{std::move(endpoint), priority}, expires_at_ms};
}

inline QueueKey queue(std::string endpoint, std::int32_t priority = 0) {
  return QueueKey{std::move(endpoint), priority};
}

inline Result<std::vector<std::uint64_t>> append_sync(MessageStore& store, std::string message,
                                                      std::vector<Target> targets) {
  std::promise<Result<std::vector<std::uint64_t>>> p;
  auto f = p.get_future();
  store.append(std::move(message), std::move(targets),
               [&p](Result<std::vector<std::uint64_t>> r) { p.set_value(std::move(r)); });
  return f.get();
}

// Appends to one queue and returns its sequence number (0 on failure, with a test failure).
inline std::uint64_t append_one(MessageStore& store, std::string message, Target t) {
  auto r = append_sync(store, std::move(message), {std::move(t)});
  if (!r) {
    ADD_FAILURE() << "append failed: " << r.error().to_string();
    return 0;
  }
  return r->at(0);
}

inline Status ack_sync(MessageStore& store, QueueKey q, std::uint64_t seq) {
  std::promise<Status> p;
  auto f = p.get_future();
  store.ack(std::move(q), seq, [&p](Status s) { p.set_value(std::move(s)); });
  return f.get();
}

inline Result<std::vector<Entry>> read_sync(MessageStore& store, QueueKey q,
                                            std::uint64_t after_seq = 0,
                                            std::size_t max = 1'000'000) {
  std::promise<Result<std::vector<Entry>>> p;
  auto f = p.get_future();
  store.read(std::move(q), after_seq, max,
             [&p](Result<std::vector<Entry>> r) { p.set_value(std::move(r)); });
  return f.get();
}

// Every message of a queue, oldest first (empty with a test failure if the read failed).
inline std::vector<std::string> messages_of(MessageStore& store, QueueKey q) {
  auto r = read_sync(store, std::move(q));
  if (!r) {
    ADD_FAILURE() << "read failed: " << r.error().to_string();
    return {};
  }
  std::vector<std::string> out;
  for (auto& e : *r) out.push_back(std::move(e.message));
  return out;
}

inline Result<std::uint64_t> expire_sync(MessageStore& store) {
  std::promise<Result<std::uint64_t>> p;
  auto f = p.get_future();
  store.expire([&p](Result<std::uint64_t> r) { p.set_value(std::move(r)); });
  return f.get();
}

inline Result<std::vector<QueueInfo>> queues_sync(MessageStore& store) {
  std::promise<Result<std::vector<QueueInfo>>> p;
  auto f = p.get_future();
  store.queues([&p](Result<std::vector<QueueInfo>> r) { p.set_value(std::move(r)); });
  return f.get();
}

inline Status put_sync(MessageStore& store, std::string table, std::string key, std::string value) {
  std::promise<Status> p;
  auto f = p.get_future();
  store.put(std::move(table), std::move(key), std::move(value),
            [&p](Status s) { p.set_value(std::move(s)); });
  return f.get();
}

inline Status erase_sync(MessageStore& store, std::string table, std::string key) {
  std::promise<Status> p;
  auto f = p.get_future();
  store.erase(std::move(table), std::move(key), [&p](Status s) { p.set_value(std::move(s)); });
  return f.get();
}

}  // namespace cairn::store::testing

namespace cairn::store::testing {

// Parks the store's writer thread inside a callback until release(), so that everything
// submitted meanwhile is pending at once: the next batches are then exactly predictable.
// The gate itself is a kv put, so it costs one commit.
class WriterGate {
 public:
  explicit WriterGate(MessageStore& store) {
    auto entered = entered_.get_future();
    auto released = released_.get_future().share();
    store.put("test-gate", "k", "v", [this, released](Status) {
      entered_.set_value();
      released.wait();
    });
    entered.wait();
  }
  ~WriterGate() { release(); }
  WriterGate(const WriterGate&) = delete;
  WriterGate& operator=(const WriterGate&) = delete;

  void release() {
    if (!done_) {
      done_ = true;
      released_.set_value();
    }
  }

 private:
  std::promise<void> entered_;
  std::promise<void> released_;
  bool done_ = false;
};

}  // namespace cairn::store::testing
