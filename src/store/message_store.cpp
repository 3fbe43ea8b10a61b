#include "store/message_store.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <iterator>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

#include <fmt/format.h>
#include <sqlite3.h>

#include "core/clock.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"
#include "store/detail/schema.hpp"
#include "store/detail/sqlite.hpp"
#include "store/failure.hpp"
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace cairn::store {
namespace {

using detail::Connection;
using detail::Query;
using detail::Sql;
using SteadyClock = std::chrono::steady_clock;

// The writer checkpoints once the WAL holds this many pages (SQLite's auto-checkpoint
// default). It does so itself, after the batch's callbacks have run, instead of letting COMMIT
// trigger it: checkpoint I/O then never delays a PUBACK, and a failed checkpoint (data already
// safe in the WAL) cannot be mistaken for a failed COMMIT.
constexpr int kCheckpointPages = 1000;
// After a checkpoint SQLite truncates the WAL file to this size, so one burst does not pin disk.
constexpr const char* kJournalSizeLimit = "PRAGMA journal_size_limit = 67108864";
// Some SQLite builds (Debian's among them) default to secure_delete = ON, which overwrites
// every freed page with zeros and so writes it to the WAL. A queue frees and reuses pages all
// the time, so that cost commits extra page writes. FAST still zeroes deleted rows within the
// pages a commit writes anyway, at no extra I/O.
constexpr const char* kSecureDelete = "PRAGMA secure_delete = FAST";

constexpr std::int64_t kMaxSqlInt = std::numeric_limits<std::int64_t>::max();

// Sequence numbers are uint64 in the API and int64 in SQLite; an ack or read "up to the end"
// (UINT64_MAX) must not wrap to -1.
std::int64_t to_sql(std::uint64_t v) noexcept {
  return v > static_cast<std::uint64_t>(kMaxSqlInt) ? kMaxSqlInt : static_cast<std::int64_t>(v);
}
std::uint64_t from_sql(std::int64_t v) noexcept {
  return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

struct QueueKeyHash {
  std::size_t operator()(const QueueKey& k) const noexcept {
    return std::hash<std::string_view>{}(k.endpoint) * 31u + std::hash<std::int32_t>{}(k.priority);
  }
};

struct QueueState {
  std::int64_t id = 0;
  std::uint64_t next_seq = 1;
  std::uint64_t saved_next_seq = 1;  // what queues.next_seq holds
  bool appended_here = false;        // queues() lists it even when empty
  bool newest_deleted = false;       // the current batch deleted entry next_seq - 1
  bool dirty = false;                // in dirty_: next_seq may need saving at the end of the batch
};

void complete_status(MessageStore::Done& done, std::optional<Error>& error) {
  if (!done) return;
  if (error) {
    done(std::move(*error));
  } else {
    done(Status{});
  }
}

// One queued request. The result is filled in while the batch runs and handed to the callback
// only after the batch has committed (or failed as a whole).
struct AppendOp {
  std::string message;
  std::vector<Target> targets;
  MessageStore::AppendDone done;
  std::vector<std::uint64_t> seqs;  // assigned at submission, one per target
  std::optional<Error> error;
  void complete() {
    if (!done) return;
    if (error) {
      done(std::move(*error));
    } else {
      done(std::move(seqs));
    }
  }
};

struct AckOp {
  QueueKey queue;
  std::uint64_t seq = 0;
  MessageStore::Done done;
  std::optional<Error> error;
  void complete() { complete_status(done, error); }
};

struct ReadOp {
  QueueKey queue;
  std::uint64_t after_seq = 0;
  std::size_t max = 0;
  MessageStore::ReadDone done;
  std::vector<Entry> entries;
  std::optional<Error> error;
  void complete() {
    if (!done) return;
    if (error) {
      done(std::move(*error));
    } else {
      done(std::move(entries));
    }
  }
};

struct ExpireOp {
  std::function<void(Result<std::uint64_t>)> done;
  std::uint64_t count = 0;
  std::optional<Error> error;
  void complete() {
    if (!done) return;
    if (error) {
      done(std::move(*error));
    } else {
      done(count);
    }
  }
};

struct QueuesOp {
  std::function<void(Result<std::vector<QueueInfo>>)> done;
  std::vector<QueueInfo> infos;
  std::optional<Error> error;
  void complete() {
    if (!done) return;
    if (error) {
      done(std::move(*error));
    } else {
      done(std::move(infos));
    }
  }
};

struct PutOp {
  std::string table;
  std::string key;
  std::string value;
  MessageStore::Done done;
  std::optional<Error> error;
  void complete() { complete_status(done, error); }
};

struct EraseOp {
  std::string table;
  std::string key;
  MessageStore::Done done;
  std::optional<Error> error;
  void complete() { complete_status(done, error); }
};

struct FlushOp {
  MessageStore::Done done;
  std::optional<Error> error;
  void complete() { complete_status(done, error); }
};

using Op = std::variant<AppendOp, AckOp, ReadOp, ExpireOp, QueuesOp, PutOp, EraseOp, FlushOp>;

void set_error(Op& op, const Error& error) {
  std::visit([&](auto& o) { o.error = error; }, op);
}

void complete(Op& op) {
  std::visit([](auto& o) { o.complete(); }, op);
}

}  // namespace

class MessageStore::Impl {
 public:
  explicit Impl(const Options& options) : options_(options) {}
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  Status open();
  void submit(Op op);
  std::vector<MessageStore::Placement> submit_all(
      std::vector<MessageStore::AppendRequest> requests);
  Stats stats() const;
  Status flush();
  Result<std::optional<std::string>> get(std::string_view table, std::string_view key) const;
  Result<std::vector<std::pair<std::string, std::string>>> list(std::string_view table) const;
  Status check_integrity() const;

 private:
  // Changes made by the running batch; folded into the committed figures only on COMMIT.
  struct Delta {
    std::int64_t bytes = 0;
    std::int64_t messages = 0;
    std::uint64_t appended = 0;
    std::uint64_t acked = 0;
    std::uint64_t expired = 0;
    std::uint64_t rejected_full = 0;
  };

  Status lock_file();
  Status open_writer();
  Status load_state();
  Status open_reader();

  void run();
  // Moves pending work into the batch, up to max_batch, with the time it must commit by.
  void take_pending_locked();
  // How long the batch may wait for more work to share its commit (Options::ack_delay_ms,
  // Options::append_delay_us); returns at once when it may not.
  void wait_for_more_locked(std::unique_lock<std::mutex>& lock);
  // Records that what was just added to pending_ must be committed by `commit_by`, and says
  // whether the writer has to be woken for it (it then counts as woken).
  bool must_wake_locked(SteadyClock::time_point commit_by);
  // Gives the append its sequence numbers and says whether it is expected to commit.
  MessageStore::Placement place_locked(AppendOp& op);
  // The batch is over (committed, failed or cancelled): its appends stop counting as unsettled
  // and submitters see the store's new size and health, before any callback runs (a callback
  // may submit more); then every request's callback runs, in order.
  void complete_batch();
  void run_batch();
  void run_unhealthy_batch(std::int64_t now);
  Status execute(Op& op, std::int64_t now);
  Status exec_append(AppendOp& op, std::int64_t now);
  Status exec_ack(AckOp& op);
  Status exec_read(const Connection& db, ReadOp& op, std::int64_t now, bool delete_expired);
  Status exec_expire(ExpireOp& op, std::int64_t now);
  Status exec_queues(const Connection& db, QueuesOp& op);
  Status exec_put(PutOp& op);
  Status exec_erase(EraseOp& op);
  Status release_body(std::int64_t msg_id);
  Result<QueueState*> queue_for_append(const QueueKey& key);
  // Entries up to `seq` of `q` were deleted in this batch: its next_seq may need saving.
  void deleted_through(QueueState& q, std::uint64_t seq);
  Status save_sequences();
  // With Options::Sync::full: fsync the commit only when the batch holds writes that are
  // reported durable (appends, key-value writes), not for acks and expiry alone.
  Status sync_for_batch();
  Status commit();
  void fail_batch(const Error& cause);
  void fail_batch_transiently(const Error& cause);
  void publish_batch();
  void maybe_checkpoint();
  Error sticky_error() const;
  static int on_wal_commit(void* self, sqlite3* db, const char* name, int pages);

  const Options options_;
  int lock_fd_ = -1;
  std::uint64_t max_message_bytes_ = 0;  // SQLITE_LIMIT_LENGTH: a larger blob cannot be bound

  // Owned by the writer thread once it runs (open() uses it before starting the thread).
  std::unique_ptr<Connection> writer_db_;

  mutable std::mutex read_mu_;
  std::unique_ptr<Connection> reader_db_;  // guarded by read_mu_

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Op> pending_;  // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  // The earliest time by which some pending request must be committed.
  SteadyClock::time_point pending_commit_by_ = SteadyClock::time_point::max();  // guarded by mu_
  // Until when the writer sleeps: max() while it waits for work (any submission wakes it), the
  // batch's commit time while it waits for more work to share the commit, min() while it runs
  // or has been woken (no submission needs to wake it).
  SteadyClock::time_point writer_sleeps_until_ = SteadyClock::time_point::min();  // guarded by mu_
  std::thread writer_;
  // ---- guarded by mu_: what submitters need to place an append (MessageStore::Placement) ----
  // The next sequence number of each queue. Never lowered, also when a failed batch makes the
  // writer reload its own view from the file.
  std::unordered_map<QueueKey, std::uint64_t, QueueKeyHash> next_seqs_;
  std::uint64_t unsettled_bytes_ = 0;  // bodies of appends submitted and not yet settled
  std::uint64_t settled_bytes_ = 0;    // committed_bytes_ as of the last settled batch
  bool accepting_ = true;              // healthy and not refusing writes, as of that batch

  mutable std::mutex stats_mu_;
  Stats stats_;  // guarded by stats_mu_

  // ---- writer thread only ----
  std::vector<Op> batch_;
  SteadyClock::time_point batch_commit_by_ = SteadyClock::time_point::max();
  std::unordered_map<QueueKey, QueueState, QueueKeyHash> queues_;  // node-based: stable pointers
  std::vector<QueueState*> dirty_;
  std::vector<std::int64_t> msg_ids_;                           // scratch
  std::vector<std::pair<std::int64_t, std::int64_t>> expired_;  // scratch: (seq, msg_id)
  Delta delta_;
  std::uint64_t committed_bytes_ = 0;
  std::uint64_t committed_messages_ = 0;
  std::int64_t commits_ok_ = 0;
  bool healthy_ = true;
  std::string failure_;
  bool needs_reload_ = false;    // a transient failure rolled back a batch: reload queues_
  int wal_pages_ = 0;            // set by the WAL hook during COMMIT, on this thread
  bool fsync_on_commit_ = true;  // the connection's synchronous setting (full: FULL)
  bool checkpoint_failing_ = false;
};

// ---------------------------------------------------------------------------------------------
// Open and close.

Status MessageStore::Impl::open() {
  if (options_.path.empty()) return make_error(errc::invalid_argument, "empty path");
  if (sqlite3_threadsafe() == 0) {
    // Two connections used from different threads need at least SQLite's multi-thread mode.
    return make_error(errc::internal, "SQLite was built without thread support");
  }
  if (options_.max_batch == 0) {
    return make_error(errc::invalid_argument, "max_batch must be at least 1");
  }
  const std::filesystem::path path(options_.path);
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return make_error(errc::io_error, fmt::format("create directory '{}': {}",
                                                    path.parent_path().string(), ec.message()));
    }
  }
  if (auto s = lock_file(); !s) return s;
  if (auto s = open_writer(); !s) return s;
  if (auto s = load_state(); !s) return s;
  if (auto s = open_reader(); !s) return s;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, queue] : queues_) next_seqs_.emplace(key, queue.next_seq);
    settled_bytes_ = committed_bytes_;
  }

  batch_.reserve(std::min<std::size_t>(options_.max_batch, 1024));
  pending_.reserve(batch_.capacity());
  writer_ = std::thread([this] { run(); });
  log::info("store", "opened path={} sync={} messages={} bytes={} queues={}", options_.path,
            options_.sync == Options::Sync::full ? "full" : "normal", committed_messages_,
            committed_bytes_, queues_.size());
  return {};
}

Status MessageStore::Impl::lock_file() {
  // The in-memory sequence counters and byte totals are only right if this is the only writer,
  // so a second open of the same file (this process or another) is refused outright rather than
  // left to interleave. flock, unlike SQLite's fcntl locks, is per open file description: it
  // also excludes a second open inside this process, and the kernel drops it if we die.
  lock_fd_ = ::open(options_.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) {
    return make_error(errc::io_error, fmt::format("open: {}", std::strerror(errno)));
  }
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      return make_error(errc::unavailable,
                        "already open by another store instance (this or another process)");
    }
    return make_error(errc::io_error, fmt::format("lock: {}", std::strerror(err)));
  }
  return {};
}

Status MessageStore::Impl::open_writer() {
  auto db = Connection::open(options_.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db) return std::move(db).error();
  writer_db_ = std::move(*db);
  Connection& w = *writer_db_;

  // The first statement reads the header: a file that is not a database fails here with
  // SQLITE_NOTADB (mapped to errc::corruption), before we write anything to it.
  auto mode = w.query_text("PRAGMA journal_mode = WAL", "enable WAL");
  if (!mode) return std::move(mode).error();
  if (*mode != "wal") {
    return make_error(errc::io_error, fmt::format("could not enable WAL (journal_mode={})", *mode));
  }
  const char* sync = options_.sync == Options::Sync::full ? "PRAGMA synchronous = FULL"
                                                          : "PRAGMA synchronous = NORMAL";
  if (auto s = w.exec(sync, "set synchronous"); !s) return s;
  if (auto s = w.exec(kJournalSizeLimit, "set journal_size_limit"); !s) return s;
  if (auto s = w.exec(kSecureDelete, "set secure_delete"); !s) return s;
  if (const int rc = sqlite3_busy_timeout(w.handle(), options_.busy_timeout_ms); rc != SQLITE_OK) {
    return w.error(rc, "set busy timeout");
  }
  if (auto s = detail::ensure_schema(w); !s) return s;
  if (auto s = w.prepare_all(); !s) return s;
  // Replaces SQLite's auto-checkpoint; see kCheckpointPages.
  (void)sqlite3_wal_hook(w.handle(), &Impl::on_wal_commit, this);  // returns the old hook's arg
  max_message_bytes_ =
      static_cast<std::uint64_t>(sqlite3_limit(w.handle(), SQLITE_LIMIT_LENGTH, -1));
  return {};
}

Status MessageStore::Impl::load_state() {
  // Reading every queue's row and summing body sizes is O(messages) at start-up; it buys an
  // append path that never has to ask SQLite how full the store is.
  Connection& w = *writer_db_;
  {
    Query q(w, Sql::kLoadTotals);
    const int rc = q.step();
    if (rc != SQLITE_ROW) return q.error(rc, "load totals");
    committed_messages_ = from_sql(q.column_int(0));
    committed_bytes_ = from_sql(q.column_int(1));
  }
  Query q(w, Sql::kLoadQueues);
  for (;;) {
    const int rc = q.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return q.error(rc, "load queues");
    QueueState state;
    state.id = q.column_int(0);
    // queues.next_seq is saved when a batch deletes a queue's newest entry (save_sequences);
    // while entries are there, max(seq) + 1 is the next one. One index probe per queue.
    state.saved_next_seq = from_sql(q.column_int(3));
    state.next_seq =
        std::max(state.saved_next_seq, from_sql(q.column_int(4)) + 1);  // NULL max -> 0
    QueueKey key{std::string(q.column_text(1)), static_cast<std::int32_t>(q.column_int(2))};
    queues_.emplace(std::move(key), state);
  }
  std::lock_guard lock(stats_mu_);
  stats_.stored_bytes = committed_bytes_;
  stats_.stored_messages = committed_messages_;
  return {};
}

Status MessageStore::Impl::open_reader() {
  auto db = Connection::open(options_.path, SQLITE_OPEN_READONLY);
  if (!db) return std::move(db).error();
  if (const int rc = sqlite3_busy_timeout((*db)->handle(), options_.busy_timeout_ms);
      rc != SQLITE_OK) {
    return (*db)->error(rc, "set reader busy timeout");
  }
  if (auto s = (*db)->prepare_all(); !s) return s;
  std::lock_guard lock(read_mu_);
  reader_db_ = std::move(*db);
  return {};
}

MessageStore::Impl::~Impl() {
  if (writer_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    writer_.join();
  }
  {
    std::lock_guard lock(read_mu_);
    reader_db_.reset();
  }
  writer_db_.reset();  // the last close checkpoints the WAL into the database file
  if (lock_fd_ >= 0) {
    // Closing drops the flock; an error here cannot lose data (nothing was written through it).
    (void)::close(lock_fd_);
  }
}

// ---------------------------------------------------------------------------------------------
// Submission and the writer loop.

void MessageStore::Impl::submit(Op op) {
  // Acks may wait for other work to share their commit (Options::ack_delay_ms); nothing else
  // submitted alone may.
  const auto commit_by = std::holds_alternative<AckOp>(op) && options_.ack_delay_ms > 0
                             ? SteadyClock::now() + std::chrono::milliseconds(options_.ack_delay_ms)
                             : SteadyClock::time_point::min();
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (auto* append = std::get_if<AppendOp>(&op)) place_locked(*append);
    pending_.push_back(std::move(op));
    wake = must_wake_locked(commit_by);
  }
  if (wake) cv_.notify_one();
}

std::vector<MessageStore::Placement> MessageStore::Impl::submit_all(
    std::vector<MessageStore::AppendRequest> requests) {
  std::vector<MessageStore::Placement> placements;
  if (requests.empty()) return placements;
  placements.reserve(requests.size());
  const bool all_can_wait =
      options_.append_delay_us > 0 &&
      std::all_of(requests.begin(), requests.end(),
                  [](const MessageStore::AppendRequest& r) { return r.can_wait; });
  const auto commit_by =
      all_can_wait ? SteadyClock::now() + std::chrono::microseconds(options_.append_delay_us)
                   : SteadyClock::time_point::min();
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    for (auto& r : requests) {
      AppendOp op{std::move(r.message), std::move(r.targets), std::move(r.done), {}, {}};
      placements.push_back(place_locked(op));
      pending_.emplace_back(std::move(op));
    }
    wake = must_wake_locked(commit_by);
  }
  if (wake) cv_.notify_one();
  return placements;
}

bool MessageStore::Impl::must_wake_locked(SteadyClock::time_point commit_by) {
  pending_commit_by_ = std::min(pending_commit_by_, commit_by);
  // A writer that is waiting for more work is woken when this cannot wait as long, or when
  // its batch would be full; one that runs takes pending_ when it is done. Once woken it
  // counts as running, so the submissions that follow ride along without a futex call.
  const bool wake = pending_commit_by_ < writer_sleeps_until_ ||
                    (writer_sleeps_until_ != SteadyClock::time_point::min() &&
                     pending_.size() >= options_.max_batch);
  if (wake) writer_sleeps_until_ = SteadyClock::time_point::min();
  return wake;
}

MessageStore::Placement MessageStore::Impl::place_locked(AppendOp& op) {
  const std::uint64_t size = op.message.size();
  unsettled_bytes_ += size;
  // Bad input is refused now, whatever the store holds, and gets no sequence number: it
  // changes nothing. Its callback still runs with the batch it joins.
  if (op.targets.empty()) {
    op.error = make_error(errc::invalid_argument, "append: no target queue");
    return {};
  }
  for (std::size_t i = 0; i < op.targets.size(); ++i) {
    for (std::size_t j = i + 1; j < op.targets.size(); ++j) {
      if (op.targets[i].queue == op.targets[j].queue) {
        op.error =
            make_error(errc::invalid_argument,
                       fmt::format("append: queue '{}' priority {} named twice",
                                   op.targets[i].queue.endpoint, op.targets[i].queue.priority));
        return {};
      }
    }
  }
  if (size > max_message_bytes_) {
    // Refused here: SQLite would fail the bind with SQLITE_TOOBIG and poison the whole batch.
    op.error = make_error(errc::limit_exceeded,
                          fmt::format("append: message of {} bytes exceeds the store's limit {}",
                                      size, max_message_bytes_));
    return {};
  }
  op.seqs.reserve(op.targets.size());
  for (const Target& target : op.targets) {
    auto [it, inserted] = next_seqs_.try_emplace(target.queue, 1);
    op.seqs.push_back(it->second++);
  }
  // exec_append's size cap, against the committed bytes plus every append not yet settled
  // (this one included; acks not yet committed do not count as freed): never more optimistic.
  bool expected = accepting_;
  if (expected && options_.max_bytes != 0) {
    const std::uint64_t used = settled_bytes_ + unsettled_bytes_;
    expected = used <= options_.max_bytes;
  }
  return MessageStore::Placement{op.seqs, expected};
}

void MessageStore::Impl::complete_batch() {
  std::uint64_t settled = 0;
  for (const Op& op : batch_) {
    if (const auto* append = std::get_if<AppendOp>(&op)) settled += append->message.size();
  }
  bool accepting = false;
  {
    std::lock_guard lock(stats_mu_);
    accepting = stats_.healthy && !stats_.refusing;
  }
  {
    std::lock_guard lock(mu_);
    unsettled_bytes_ -= std::min(unsettled_bytes_, settled);
    settled_bytes_ = committed_bytes_;
    accepting_ = accepting;
  }
  for (Op& op : batch_) complete(op);
}

void MessageStore::Impl::take_pending_locked() {
  // Work left behind by a full batch keeps the earliest time: at worst it commits sooner.
  batch_commit_by_ = std::min(batch_commit_by_, pending_commit_by_);
  if (batch_.empty() && pending_.size() <= options_.max_batch) {
    // Swapping hands the (empty, already sized) batch buffer back to producers: no allocation
    // per batch once both vectors have grown to the working size.
    batch_.swap(pending_);
    pending_commit_by_ = SteadyClock::time_point::max();
    return;
  }
  const std::size_t room = options_.max_batch - std::min(options_.max_batch, batch_.size());
  const auto end = pending_.begin() + static_cast<std::ptrdiff_t>(std::min(room, pending_.size()));
  std::move(pending_.begin(), end, std::back_inserter(batch_));
  pending_.erase(pending_.begin(), end);
  if (pending_.empty()) pending_commit_by_ = SteadyClock::time_point::max();
}

void MessageStore::Impl::wait_for_more_locked(std::unique_lock<std::mutex>& lock) {
  // A batch that must commit at once (min()) skips the clock read.
  while (!stopping_ && batch_.size() < options_.max_batch &&
         batch_commit_by_ != SteadyClock::time_point::min() &&
         SteadyClock::now() < batch_commit_by_) {
    writer_sleeps_until_ = batch_commit_by_;
    cv_.wait_until(lock, batch_commit_by_, [this] {
      return stopping_ || writer_sleeps_until_ == SteadyClock::time_point::min();
    });
    writer_sleeps_until_ = SteadyClock::time_point::min();
    take_pending_locked();
  }
}

void MessageStore::Impl::run() {
  name_this_thread("store-writer");
  for (;;) {
    bool stopping = false;
    {
      std::unique_lock lock(mu_);
      if (pending_.empty() && !stopping_) {
        writer_sleeps_until_ = SteadyClock::time_point::max();
        cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
        writer_sleeps_until_ = SteadyClock::time_point::min();
      }
      take_pending_locked();
      // Should the store close while the batch waits, its acks are still committed below, as
      // they would have been without the wait; only what comes after is refused.
      wait_for_more_locked(lock);
      stopping = stopping_;
    }
    batch_commit_by_ = SteadyClock::time_point::max();
    if (stopping) {
      // Callbacks of cancelled work may submit more (a chained request); loop until dry.
      if (batch_.empty()) return;
      // Acks are still committed: cancelled, their entries would all be delivered again after
      // the restart. Everything else not yet done is cancelled.
      const auto acks_end = std::stable_partition(batch_.begin(), batch_.end(), [](const Op& op) {
        return std::holds_alternative<AckOp>(op);
      });
      if (acks_end != batch_.begin()) {
        std::vector<Op> rest(std::make_move_iterator(acks_end),
                             std::make_move_iterator(batch_.end()));
        batch_.erase(acks_end, batch_.end());
        run_batch();
        batch_ = std::move(rest);
      }
      const Error cancelled = make_error(errc::cancelled, "store: shutting down");
      for (Op& op : batch_) set_error(op, cancelled);
      complete_batch();
      batch_.clear();
      continue;
    }
    run_batch();
    batch_.clear();
    maybe_checkpoint();
  }
}

void MessageStore::Impl::run_batch() {
  const std::int64_t now = now_unix_ms();
  if (!healthy_) {
    run_unhealthy_batch(now);
    return;
  }
  if (needs_reload_) {
    // The rolled-back batch may have created queue rows and advanced sequences in memory
    // only: start again from what the database holds.
    queues_.clear();
    if (auto s = load_state(); !s) {
      if (classify_failure(s.error()) == Failure::transient) {
        fail_batch_transiently(s.error());
      } else {
        fail_batch(s.error());
      }
      complete_batch();
      return;
    }
    needs_reload_ = false;
  }
  const bool needs_transaction = std::any_of(batch_.begin(), batch_.end(), [](const Op& op) {
    return !std::holds_alternative<FlushOp>(op);
  });
  if (needs_transaction) {
    delta_ = {};
    Status s = sync_for_batch();
    if (s) s = Query(*writer_db_, Sql::kBegin).run("BEGIN IMMEDIATE");
    for (auto it = batch_.begin(); s && it != batch_.end(); ++it) s = execute(*it, now);
    if (s) s = save_sequences();
    if (s) s = commit();
    for (QueueState* q : dirty_) q->dirty = q->newest_deleted = false;
    dirty_.clear();
    if (s) {
      publish_batch();
    } else if (classify_failure(s.error()) == Failure::transient) {
      fail_batch_transiently(s.error());
    } else {
      fail_batch(s.error());
    }
  }
  if (!healthy_) {
    for (Op& op : batch_) {
      if (auto* f = std::get_if<FlushOp>(&op)) f->error = sticky_error();
    }
  }
  complete_batch();
}

void MessageStore::Impl::run_unhealthy_batch(std::int64_t now) {
  // Writes fail without touching SQLite: after a failed COMMIT or fsync we no longer know what
  // the disk holds (fsyncgate), so the only safe answer is "not stored". Reads go through the
  // read connection, which sees exactly what was committed, and delete nothing.
  for (Op& op : batch_) {
    std::visit(Overloaded{
                   [&](ReadOp& o) {
                     std::lock_guard lock(read_mu_);
                     if (auto s = exec_read(*reader_db_, o, now, false); !s) {
                       o.error = std::move(s).error();
                     }
                   },
                   [&](QueuesOp& o) {
                     std::lock_guard lock(read_mu_);
                     if (auto s = exec_queues(*reader_db_, o); !s) o.error = std::move(s).error();
                   },
                   [&](auto& o) { o.error = sticky_error(); },
               },
               op);
  }
  complete_batch();
}

Status MessageStore::Impl::execute(Op& op, std::int64_t now) {
  return std::visit(Overloaded{
                        [&](AppendOp& o) { return exec_append(o, now); },
                        [&](AckOp& o) { return exec_ack(o); },
                        [&](ReadOp& o) { return exec_read(*writer_db_, o, now, true); },
                        [&](ExpireOp& o) { return exec_expire(o, now); },
                        [&](QueuesOp& o) { return exec_queues(*writer_db_, o); },
                        [&](PutOp& o) { return exec_put(o); },
                        [&](EraseOp& o) { return exec_erase(o); },
                        [](FlushOp&) { return Status{}; },
                    },
                    op);
}

Status MessageStore::Impl::sync_for_batch() {
  if (options_.sync != Options::Sync::full) return {};
  // Appends and key-value writes are reported durable, so their commit is fsynced. A batch
  // of deletions only (acks, expiry) is not: committed to the WAL it survives a crash of the
  // process at once, and the next fsynced commit makes it power-cut safe as well (the WAL is
  // written and synced in order). A power cut before that can only bring acknowledged entries
  // back for another delivery, which the contract allows for any ack; it saves an fsync per
  // batch of acknowledgements, which otherwise delays the next batch of appends.
  const bool needs_fsync = std::any_of(batch_.begin(), batch_.end(), [](const Op& op) {
    return std::holds_alternative<AppendOp>(op) || std::holds_alternative<PutOp>(op) ||
           std::holds_alternative<EraseOp>(op);
  });
  if (needs_fsync == fsync_on_commit_) return {};
  // Fails the batch if it cannot be set: appends must never commit without their fsync.
  CAIRN_TRY(
      writer_db_->exec(needs_fsync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                       "set synchronous for the batch"));
  fsync_on_commit_ = needs_fsync;
  return {};
}

Status MessageStore::Impl::commit() {
  if (options_.fail_commit_after_for_test >= 0 &&
      commits_ok_ >= options_.fail_commit_after_for_test) {
    // Leaves the transaction open, exactly like a COMMIT that failed with SQLITE_IOERR/FULL,
    // so fail_batch's rollback path is what gets exercised.
    return make_error(errc::io_error, "COMMIT: fault injected by fail_commit_after_for_test");
  }
  return Query(*writer_db_, Sql::kCommit).run("COMMIT");
}

void MessageStore::Impl::fail_batch(const Error& cause) {
  // Some errors (IOERR, FULL, NOMEM) make SQLite roll back on its own; ROLLBACK without a
  // transaction would itself fail, so ask first.
  if (sqlite3_get_autocommit(writer_db_->handle()) == 0) {
    if (auto r = Query(*writer_db_, Sql::kRollback).run("ROLLBACK"); !r) {
      log::error("store", "rollback after a failed batch also failed: {}", r.error().to_string());
    }
  }
  healthy_ = false;
  failure_ = cause.to_string();
  log::error("store", "write batch failed; refusing all writes until the store is reopened: {}",
             failure_);
  {
    std::lock_guard lock(stats_mu_);
    stats_.healthy = false;
  }
  // Every request in the batch fails, reads included: a read may have returned entries
  // appended earlier in this same, now rolled back, transaction.
  const Error error = make_error(errc::io_error, fmt::format("store: write failed: {}", failure_));
  for (Op& op : batch_) set_error(op, error);
  if (options_.exit_on_fatal) {
    exit_for_clean_reopen("the message store at " + options_.path, failure_);
  }
}

void MessageStore::Impl::fail_batch_transiently(const Error& cause) {
  if (sqlite3_get_autocommit(writer_db_->handle()) == 0) {
    if (auto r = Query(*writer_db_, Sql::kRollback).run("ROLLBACK"); !r) {
      // Without a rollback the transaction state is unknown: that is not transient.
      fail_batch(r.error());
      return;
    }
  }
  needs_reload_ = true;
  const std::string reason = cause.to_string();
  std::uint64_t refused = 0;
  for (const Op& op : batch_) refused += std::holds_alternative<AppendOp>(op) ? 1 : 0;
  bool first = false;
  {
    std::lock_guard lock(stats_mu_);
    first = !stats_.refusing;
    stats_.refusing = true;
    stats_.refusal_reason = reason;
    ++stats_.transient_failures_total;
    stats_.refused_writes_total += refused;
  }
  if (first) {
    log::warn("store", "cannot write right now, refusing new messages until it can: {}", reason);
  }
  const Error error =
      make_error(errc::unavailable, fmt::format("store: cannot write right now ({}); nothing was "
                                                "stored, retry later",
                                                reason));
  for (Op& op : batch_) set_error(op, error);
}

void MessageStore::Impl::publish_batch() {
  ++commits_ok_;
  bool recovered = false;
  committed_bytes_ = from_sql(static_cast<std::int64_t>(committed_bytes_) + delta_.bytes);
  committed_messages_ = from_sql(static_cast<std::int64_t>(committed_messages_) + delta_.messages);
  std::lock_guard lock(stats_mu_);
  stats_.stored_bytes = committed_bytes_;
  stats_.stored_messages = committed_messages_;
  stats_.appended_total += delta_.appended;
  stats_.acked_total += delta_.acked;
  stats_.expired_total += delta_.expired;
  stats_.rejected_full_total += delta_.rejected_full;
  ++stats_.commits_total;
  // Only a batch that wrote proves the cause is gone: a read-only one commits without
  // writing a byte even on a full disk.
  const bool wrote = std::any_of(batch_.begin(), batch_.end(), [](const Op& op) {
    return std::holds_alternative<AppendOp>(op) || std::holds_alternative<PutOp>(op);
  });
  if (stats_.refusing && wrote) {
    recovered = true;
    stats_.refusing = false;
    stats_.refusal_reason.clear();
  }
  if (recovered) log::info("store", "writes succeed again; accepting new messages");
}

Error MessageStore::Impl::sticky_error() const {
  return make_error(errc::io_error,
                    fmt::format("store: unhealthy after an earlier write failure: {}", failure_));
}

int MessageStore::Impl::on_wal_commit(void* self, sqlite3* /*db*/, const char* /*name*/,
                                      int pages) {
  static_cast<Impl*>(self)->wal_pages_ = pages;
  return SQLITE_OK;
}

void MessageStore::Impl::maybe_checkpoint() {
  if (!healthy_ || wal_pages_ < kCheckpointPages) return;
  wal_pages_ = 0;
  int log_frames = 0;
  int checkpointed = 0;
  // PASSIVE never waits for readers: whatever a reader still needs stays in the WAL and is
  // copied by a later checkpoint. Not sticky on failure: the committed data is in the WAL.
  const int rc = sqlite3_wal_checkpoint_v2(writer_db_->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                           &log_frames, &checkpointed);
  if (rc != SQLITE_OK) {
    if (!checkpoint_failing_) {
      log::warn("store", "WAL checkpoint failed (the WAL keeps growing until one succeeds): {}",
                writer_db_->error(rc, "checkpoint").to_string());
    }
    checkpoint_failing_ = true;
    return;
  }
  if (checkpoint_failing_) log::info("store", "WAL checkpoint succeeded again");
  checkpoint_failing_ = false;
}

// ---------------------------------------------------------------------------------------------
// Operations inside the batch transaction. A returned error is an SQLite failure and aborts the
// whole batch; a per-request refusal (full, bad argument) is stored in op.error instead.

Status MessageStore::Impl::exec_append(AppendOp& op, std::int64_t now) {
  if (op.error) return {};  // bad input, refused at submission (place_locked)
  const std::uint64_t size = op.message.size();
  if (options_.max_bytes != 0) {
    // Committed bytes plus what this batch has added and freed so far: two appends in one
    // batch cannot both squeeze into the same free space.
    const std::uint64_t used = from_sql(static_cast<std::int64_t>(committed_bytes_) + delta_.bytes);
    if (size > options_.max_bytes || used > options_.max_bytes - size) {
      op.error = make_error(errc::limit_exceeded,
                            fmt::format("store full: {} of {} bytes used, message is {} bytes",
                                        used, options_.max_bytes, size));
      ++delta_.rejected_full;
      return {};
    }
  }
  {
    Query q(*writer_db_, Sql::kInsertMessage);
    q.bind_int(1, static_cast<std::int64_t>(op.targets.size()));
    q.bind_int(2, to_sql(size));
    q.bind_blob(3, op.message);
    if (auto s = q.run("insert message"); !s) return s;
  }
  const std::int64_t msg_id = sqlite3_last_insert_rowid(writer_db_->handle());
  for (std::size_t i = 0; i < op.targets.size(); ++i) {
    const Target& target = op.targets[i];
    const std::uint64_t seq = op.seqs[i];  // assigned at submission (place_locked)
    auto queue = queue_for_append(target.queue);
    if (!queue) return std::move(queue).error();
    QueueState& state = **queue;
    Query q(*writer_db_, Sql::kInsertEntry);
    q.bind_int(1, state.id);
    q.bind_int(2, to_sql(seq));
    q.bind_int(3, msg_id);
    q.bind_int(4, now);
    q.bind_int(5, target.expires_at_ms);
    if (auto s = q.run("insert entry"); !s) return s;
    // Past any gap a failed append left (its number is not given again).
    state.next_seq = std::max(state.next_seq, seq + 1);
    state.appended_here = true;
    state.newest_deleted = false;  // the newest entry is this one, and it is there
  }
  delta_.bytes += static_cast<std::int64_t>(size);
  ++delta_.messages;
  ++delta_.appended;
  return {};
}

Result<QueueState*> MessageStore::Impl::queue_for_append(const QueueKey& key) {
  if (auto it = queues_.find(key); it != queues_.end()) return &it->second;
  {
    Query q(*writer_db_, Sql::kInsertQueue);
    q.bind_text(1, key.endpoint);
    q.bind_int(2, key.priority);
    if (auto s = q.run("insert queue"); !s) return std::move(s).error();
  }
  // If this batch rolls back the row is gone but the map keeps it. Harmless: a failed batch
  // makes the store read-only, and reads of a missing queue id find nothing.
  QueueState state;
  state.id = sqlite3_last_insert_rowid(writer_db_->handle());
  return &queues_.emplace(key, state).first->second;
}

void MessageStore::Impl::deleted_through(QueueState& q, std::uint64_t seq) {
  if (seq < q.next_seq - 1) return;  // a newer entry is still there (next_seq >= 1)
  q.newest_deleted = true;
  if (!q.dirty) {
    q.dirty = true;
    dirty_.push_back(&q);
  }
}

Status MessageStore::Impl::save_sequences() {
  // At open a queue's next_seq is max(queues.next_seq, max(seq) + 1): the column only has to be
  // right once the newest entry is gone. Without that a queue acked to empty would restart at
  // seq 1 after a restart, and a consumer's checkpoint would skip new messages. Writing it only
  // then spares most commits a page (the queues table's) in the WAL.
  for (QueueState* q : dirty_) {
    if (!q->newest_deleted || q->next_seq == q->saved_next_seq) continue;
    Query u(*writer_db_, Sql::kSaveNextSeq);
    u.bind_int(1, q->id);
    u.bind_int(2, to_sql(q->next_seq));
    if (auto s = u.run("save next_seq"); !s) return s;
    q->saved_next_seq = q->next_seq;  // reloaded from the file if the batch rolls back
  }
  return {};
}

Status MessageStore::Impl::exec_ack(AckOp& op) {
  const auto it = queues_.find(op.queue);
  if (it == queues_.end() || op.seq == 0) return {};  // nothing there: idempotent success
  msg_ids_.clear();
  {
    Query q(*writer_db_, Sql::kSelectAcked);
    q.bind_int(1, it->second.id);
    q.bind_int(2, to_sql(op.seq));
    for (;;) {
      const int rc = q.step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return q.error(rc, "read acked entries");
      msg_ids_.push_back(q.column_int(0));
    }
  }
  if (msg_ids_.empty()) return {};  // acked before, or nothing at or below op.seq
  {
    Query d(*writer_db_, Sql::kDeleteAcked);
    d.bind_int(1, it->second.id);
    d.bind_int(2, to_sql(op.seq));
    if (auto s = d.run("delete acked entries"); !s) return s;
  }
  deleted_through(it->second, op.seq);
  delta_.acked += msg_ids_.size();
  for (const std::int64_t id : msg_ids_) {
    if (auto s = release_body(id); !s) return s;
  }
  return {};
}

Status MessageStore::Impl::release_body(std::int64_t msg_id) {
  std::int64_t refs = 0;
  std::int64_t bytes = 0;
  {
    Query q(*writer_db_, Sql::kMessageRefs);
    q.bind_int(1, msg_id);
    const int rc = q.step();
    if (rc == SQLITE_DONE) {
      // An entry without a body: report it, but dropping the entry is still the right outcome.
      log::warn("store", "entry referred to missing message id={}", msg_id);
      return {};
    }
    if (rc != SQLITE_ROW) return q.error(rc, "read message references");
    refs = q.column_int(0);
    bytes = q.column_int(1);
  }
  if (refs > 1) {
    Query u(*writer_db_, Sql::kReleaseRef);
    u.bind_int(1, msg_id);
    return u.run("release message");
  }
  Query d(*writer_db_, Sql::kDeleteMessage);
  d.bind_int(1, msg_id);
  if (auto s = d.run("delete message"); !s) return s;
  delta_.bytes -= bytes;
  --delta_.messages;
  return {};
}

Status MessageStore::Impl::exec_read(const Connection& db, ReadOp& op, std::int64_t now,
                                     bool delete_expired) {
  const auto it = queues_.find(op.queue);
  if (it == queues_.end() || op.max == 0) return {};
  const std::int64_t queue_id = it->second.id;
  expired_.clear();
  op.entries.reserve(std::min<std::size_t>(op.max, 64));
  {
    Query q(db, Sql::kReadEntries);
    q.bind_int(1, queue_id);
    q.bind_int(2, to_sql(op.after_seq));
    q.bind_int(3, now);
    while (op.entries.size() < op.max) {
      const int rc = q.step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return q.error(rc, "read entries");
      const std::int64_t seq = q.column_int(0);
      const std::int64_t expires = q.column_int(3);
      if (expires != 0 && expires <= now) {
        // Deleted after the SELECT is reset: changing a table under an active cursor on it
        // is undefined in SQLite.
        expired_.emplace_back(seq, q.column_int(1));
        continue;
      }
      if (q.column_int(5) != 0) {
        log::warn("store", "queue={} priority={} seq={} has no message body", op.queue.endpoint,
                  op.queue.priority, seq);
        op.error = make_error(errc::corruption,
                              fmt::format("queue '{}' priority {} entry {} has no message body",
                                          op.queue.endpoint, op.queue.priority, seq));
        op.entries.clear();
        break;
      }
      Entry& entry = op.entries.emplace_back();
      entry.queue = op.queue;
      entry.seq = from_sql(seq);
      entry.enqueued_at_ms = q.column_int(2);
      entry.expires_at_ms = expires;
      entry.message.assign(q.column_blob(4));
    }
  }
  if (!delete_expired) return {};
  for (const auto& [seq, msg_id] : expired_) {
    {
      Query d(*writer_db_, Sql::kDeleteEntry);
      d.bind_int(1, queue_id);
      d.bind_int(2, seq);
      if (auto s = d.run("delete expired entry"); !s) return s;
    }
    deleted_through(it->second, from_sql(seq));
    if (auto s = release_body(msg_id); !s) return s;
  }
  delta_.expired += expired_.size();
  return {};
}

Status MessageStore::Impl::exec_expire(ExpireOp& op, std::int64_t now) {
  // Through the partial index on expires_ms, at most kMaxExpirePerCall entries: a backlog of
  // expired entries is worked off over several calls, each a short transaction.
  msg_ids_.clear();
  {
    Query q(*writer_db_, Sql::kDeleteExpired);
    q.bind_int(1, now);
    q.bind_int(2, static_cast<std::int64_t>(kMaxExpirePerCall));
    for (;;) {
      const int rc = q.step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return q.error(rc, "delete expired entries");
      msg_ids_.push_back(q.column_int(0));
    }
  }
  if (!msg_ids_.empty()) {
    // Which queues lost their newest entry is not worth finding out for a periodic call:
    // save every queue's next_seq that the file does not hold yet.
    for (auto& [key, queue] : queues_) deleted_through(queue, queue.next_seq - 1);
  }
  op.count = msg_ids_.size();
  delta_.expired += op.count;
  for (const std::int64_t id : msg_ids_) {
    if (auto s = release_body(id); !s) return s;
  }
  return {};
}

Status MessageStore::Impl::exec_queues(const Connection& db, QueuesOp& op) {
  Query q(db, Sql::kQueueInfo);
  for (;;) {
    const int rc = q.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return q.error(rc, "list queues");
    QueueInfo info;
    info.queue.endpoint.assign(q.column_text(0));
    info.queue.priority = static_cast<std::int32_t>(q.column_int(1));
    info.length = from_sql(q.column_int(2));
    info.oldest_seq = from_sql(q.column_int(3));
    if (info.length == 0) {
      const auto it = queues_.find(info.queue);
      if (it == queues_.end() || !it->second.appended_here) continue;
    }
    op.infos.push_back(std::move(info));
  }
  return {};
}

Status MessageStore::Impl::exec_put(PutOp& op) {
  Query q(*writer_db_, Sql::kPutKv);
  q.bind_text(1, op.table);
  q.bind_text(2, op.key);
  q.bind_blob(3, op.value);
  return q.run("put kv");
}

Status MessageStore::Impl::exec_erase(EraseOp& op) {
  Query q(*writer_db_, Sql::kEraseKv);
  q.bind_text(1, op.table);
  q.bind_text(2, op.key);
  return q.run("erase kv");
}

// ---------------------------------------------------------------------------------------------
// Synchronous calls.

Stats MessageStore::Impl::stats() const {
  std::lock_guard lock(stats_mu_);
  return stats_;
}

Status MessageStore::Impl::flush() {
  if (std::this_thread::get_id() == writer_.get_id()) {
    return make_error(errc::internal, "store: flush() from a store callback would deadlock");
  }
  std::promise<Status> done;
  auto result = done.get_future();
  submit(FlushOp{[&done](Status s) { done.set_value(std::move(s)); }, {}});
  return result.get();
}

Result<std::optional<std::string>> MessageStore::Impl::get(std::string_view table,
                                                           std::string_view key) const {
  std::lock_guard lock(read_mu_);
  Query q(*reader_db_, Sql::kGetKv);
  q.bind_text(1, table);
  q.bind_text(2, key);
  const int rc = q.step();
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return q.error(rc, "get kv");
  return std::optional<std::string>(std::string(q.column_blob(0)));
}

Result<std::vector<std::pair<std::string, std::string>>> MessageStore::Impl::list(
    std::string_view table) const {
  std::lock_guard lock(read_mu_);
  Query q(*reader_db_, Sql::kListKv);
  q.bind_text(1, table);
  std::vector<std::pair<std::string, std::string>> rows;
  for (;;) {
    const int rc = q.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return q.error(rc, "list kv");
    rows.emplace_back(std::string(q.column_text(0)), std::string(q.column_blob(1)));
  }
  return rows;
}

Status MessageStore::Impl::check_integrity() const {
  std::lock_guard lock(read_mu_);
  {
    Query q(*reader_db_, Sql::kIntegrityCheck);
    const int rc = q.step();
    if (rc != SQLITE_ROW) return q.error(rc, "integrity_check");
    if (q.column_text(0) != "ok") {
      return make_error(errc::corruption, fmt::format("integrity_check: {}", q.column_text(0)));
    }
  }
  struct Check {
    Sql sql;
    const char* problem;
  };
  static constexpr Check kChecks[] = {
      {Sql::kCheckDangling, "entries refer to a missing message body"},
      {Sql::kCheckRefs, "message bodies have a reference count that does not match their entries"},
      {Sql::kCheckBytes, "message bodies have a recorded size that does not match their data"},
  };
  for (const Check& check : kChecks) {
    Query q(*reader_db_, check.sql);
    const int rc = q.step();
    if (rc != SQLITE_ROW) return q.error(rc, "consistency check");
    if (const std::int64_t n = q.column_int(0); n != 0) {
      return make_error(errc::corruption, fmt::format("{} {}", n, check.problem));
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Public API.

Result<std::unique_ptr<MessageStore>> MessageStore::open(const Options& options) {
  auto impl = std::make_unique<Impl>(options);
  if (auto s = impl->open(); !s) {
    Error error = std::move(s).error();
    error.message = fmt::format("store open '{}': {}", options.path, error.message);
    log::warn("store", "{}", error.to_string());
    return error;
  }
  return std::unique_ptr<MessageStore>(new MessageStore(std::move(impl)));
}

MessageStore::MessageStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MessageStore::~MessageStore() = default;

void MessageStore::append(std::string message, std::vector<Target> targets, AppendDone done) {
  impl_->submit(AppendOp{std::move(message), std::move(targets), std::move(done), {}, {}});
}

std::vector<MessageStore::Placement> MessageStore::append_all(std::vector<AppendRequest> requests) {
  return impl_->submit_all(std::move(requests));
}

void MessageStore::ack(QueueKey queue, std::uint64_t seq, Done done) {
  impl_->submit(AckOp{std::move(queue), seq, std::move(done), {}});
}

void MessageStore::read(QueueKey queue, std::uint64_t after_seq, std::size_t max, ReadDone done) {
  impl_->submit(ReadOp{std::move(queue), after_seq, max, std::move(done), {}, {}});
}

void MessageStore::expire(std::function<void(Result<std::uint64_t>)> done) {
  impl_->submit(ExpireOp{std::move(done), 0, {}});
}

void MessageStore::queues(std::function<void(Result<std::vector<QueueInfo>>)> done) {
  impl_->submit(QueuesOp{std::move(done), {}, {}});
}

Stats MessageStore::stats() const { return impl_->stats(); }

void MessageStore::put(std::string table, std::string key, std::string value, Done done) {
  impl_->submit(PutOp{std::move(table), std::move(key), std::move(value), std::move(done), {}});
}

void MessageStore::erase(std::string table, std::string key, Done done) {
  impl_->submit(EraseOp{std::move(table), std::move(key), std::move(done), {}});
}

Result<std::optional<std::string>> MessageStore::get(std::string_view table,
                                                     std::string_view key) const {
  return impl_->get(table, key);
}

Result<std::vector<std::pair<std::string, std::string>>> MessageStore::list(
    std::string_view table) const {
  return impl_->list(table);
}

Status MessageStore::flush() { return impl_->flush(); }

void MessageStore::when_committed(Done done) { impl_->submit(FlushOp{std::move(done), {}}); }

Status MessageStore::check_integrity() const { return impl_->check_integrity(); }

}  // namespace cairn::store
