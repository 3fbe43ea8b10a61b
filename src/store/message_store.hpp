// MessageStore: the hub's durable message queues and small key-value tables, on SQLite (WAL).
//
// Model (docs/queue_format.md has the schema): a message body is stored once and referenced by
// one entry in each queue it was routed to; a queue is identified by (endpoint id, priority).
// Each entry has a per-queue sequence number, assigned at append and strictly increasing, and
// an absolute expiry time. Acknowledging an entry deletes it; the body goes when the last
// entry referring to it does.
//
// Durability contract: append() calls `done` only after the transaction holding the message
// has committed (group commit: every append waiting when the writer wakes goes into one
// transaction). With Options::sync = full the commit is fsynced and survives power loss; with
// normal it survives a crash of the process (kill -9) but not of the machine. A batch of acks
// (and expiry) alone is committed without an fsync in both modes: a power cut before the next
// fsynced commit may bring those entries back, to be delivered again, never lose a message.
//
// Failure policy (docs/failure_policy.md): a transient write failure (disk full, database
// locked by another process: errc::unavailable) fails the batch — the writers get
// errc::unavailable with the reason, nothing is half-written — and the store reloads its state
// and tries again with the next batch, so it recovers by itself when the cause goes. Any other
// failure (I/O error, a failed fsync, corruption) is fatal: after it nobody knows what the disk
// holds, so the store refuses every later write with errc::io_error and reports unhealthy, and
// with Options::exit_on_fatal it ends the process (exit code 1) for a supervisor to restart it
// on a clean reopen.
//
// Thread-safety: every public method is thread-safe. All SQLite work happens on one internal
// thread; callbacks run on that thread and must not block or throw (post the result elsewhere).
// Ownership: the store must outlive every callback it has been given; its destructor commits
// the acks already queued, runs the callbacks of the other work queued (with errc::cancelled
// for anything not done) and joins.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace cairn::store {

struct Options {
  std::string path;  // database file; created if missing (with its directory)

  enum class Sync { normal, full };
  // full: fsync on every group commit (power-loss safe, costs one fsync per batch).
  // normal: survives process crashes only; faster on slow disks.
  Sync sync = Sync::full;

  // Upper bound on stored message bytes (bodies). Appends beyond it fail with
  // errc::limit_exceeded and change nothing. 0 = unlimited.
  std::uint64_t max_bytes = 0;

  // Largest number of appends/acks committed in one transaction.
  std::size_t max_batch = 4096;

  // How long acks with nothing else to commit wait for other work to share their commit. A
  // consumer's acks arrive while its publisher's next messages are on their way: committed
  // together, the pages both touch are written once, and the appends never queue behind a
  // commit of deletions. Nothing waits on an ack but its deletion. 0 = commit acks at once.
  int ack_delay_ms = 5;

  // How long an append submitted with AppendRequest::can_wait may wait for other appends to
  // share its commit. Under a steady load that is not enough to fill a commit, fewer commits
  // carry more messages each: fewer fsyncs, fewer pages written twice, fewer thread wake-ups.
  // Nothing is held when any request in the batch cannot wait (anything but an ack or such an
  // append). 0 = commit every append at once.
  int append_delay_us = 5000;

  // How long a statement waits for a lock another connection holds before the batch fails as
  // transient (errc::unavailable). Only the store's own connections should touch the file, so
  // a wait is normally a checkpoint or WAL recovery holding a lock for a moment.
  int busy_timeout_ms = 5000;

  // End the process (exit code 1, after logging why) on a fatal write failure instead of
  // staying up read-only. Daemons set it; tests and tools that inspect a store do not.
  bool exit_on_fatal = false;

  // Test only: this many group commits succeed, then every later COMMIT fails as an I/O error
  // would (the batch is rolled back and the store turns unhealthy). -1 = off.
  std::int64_t fail_commit_after_for_test = -1;
};

// The most entries one expire() call deletes (one transaction).
inline constexpr std::uint64_t kMaxExpirePerCall = 10'000;

struct QueueKey {
  std::string endpoint;  // e.g. "$upstream" or "m2/input1"
  std::int32_t priority = 0;
  bool operator==(const QueueKey&) const = default;
};

struct Target {
  QueueKey queue;
  std::int64_t expires_at_ms = 0;  // absolute Unix ms; 0 = never expires
};

struct Entry {
  QueueKey queue;
  std::uint64_t seq = 0;
  std::int64_t enqueued_at_ms = 0;
  std::int64_t expires_at_ms = 0;
  std::string message;  // the bytes given to append()
};

struct QueueInfo {
  QueueKey queue;
  std::uint64_t length = 0;
  std::uint64_t oldest_seq = 0;  // 0 when empty
};

struct Stats {
  std::uint64_t stored_bytes = 0;         // message bodies, each counted once whatever its fan-out
  std::uint64_t stored_messages = 0;      // bodies (not entries)
  std::uint64_t appended_total = 0;       // successful append() calls
  std::uint64_t acked_total = 0;          // entries removed by ack()
  std::uint64_t expired_total = 0;        // entries dropped because their TTL passed
  std::uint64_t rejected_full_total = 0;  // appends refused by max_bytes
  std::uint64_t commits_total = 0;        // transactions (group commits)
  bool healthy = true;                    // false after a fatal (sticky) write failure
  // A transient failure (disk full, locked) made the last batch fail; writes are refused with
  // its reason until a batch commits again.
  bool refusing = false;
  std::string refusal_reason;                  // why, while refusing
  std::uint64_t transient_failures_total = 0;  // batches failed transiently
  std::uint64_t refused_writes_total = 0;      // appends refused by those failures
};

class MessageStore {
 public:
  // Appended: one sequence number per target, in the order of `targets`.
  using AppendDone = std::function<void(Result<std::vector<std::uint64_t>>)>;
  using ReadDone = std::function<void(Result<std::vector<Entry>>)>;
  using Done = std::function<void(Status)>;

  static Result<std::unique_ptr<MessageStore>> open(const Options& options);
  ~MessageStore();
  MessageStore(const MessageStore&) = delete;
  MessageStore& operator=(const MessageStore&) = delete;

  // Stores `message` once and appends a reference to it to every target queue, atomically.
  // REQUIRES: targets is not empty and names each queue at most once.
  void append(std::string message, std::vector<Target> targets, AppendDone done);

  struct AppendRequest {
    std::string message;
    std::vector<Target> targets;
    AppendDone done;
    // Nobody is held up until this append commits (a publisher with room to send more before
    // it needs the PUBACK): the store may hold it up to Options::append_delay_us.
    bool can_wait = false;
  };
  // Where append_all placed a request, known before its commit: the sequence number its entry
  // in each target gets if it commits (in the order of `targets`), and whether the store expects
  // it to — it accepts writes, and the message fits the store's limits with everything not yet
  // committed counted in. Sequence numbers are assigned at submission, in submission order, and
  // never twice in this process: an append that fails leaves a gap, so an entry handed to a
  // consumer before its commit cannot be mistaken for a later one. Not a promise of anything
  // else: only `done` says the entry is on disk.
  struct Placement {
    std::vector<std::uint64_t> seqs;  // empty for bad input (refused, and given no number)
    bool expected = false;
  };
  // append() for each request, in order, handed over at once: they go into the same group
  // commit (up to max_batch) and cost the caller one lock and the writer one wake-up. Returns
  // each request's placement.
  std::vector<Placement> append_all(std::vector<AppendRequest> requests);

  // Removes entry `seq` of `queue` (and every earlier entry of that queue). Idempotent. The
  // removal is committed with the next group commit; `done` (optional) runs after it.
  void ack(QueueKey queue, std::uint64_t seq, Done done = nullptr);

  // Up to `max` unexpired entries of `queue` with seq > after_seq, oldest first. Expired entries
  // met on the way are deleted and counted in Stats::expired_total.
  void read(QueueKey queue, std::uint64_t after_seq, std::size_t max, ReadDone done);

  // Deletes expired entries now, at most kMaxExpirePerCall (the hub calls this periodically,
  // and again at once while a call reaches the limit); done gets the count.
  void expire(std::function<void(Result<std::uint64_t>)> done);

  // All non-empty queues (and queues that were ever appended to in this process).
  void queues(std::function<void(Result<std::vector<QueueInfo>>)> done);

  Stats stats() const;

  // Small durable key-value tables for sessions, identities, twins and agent state.
  // Writes go through the same group commit; `done` runs after the commit.
  void put(std::string table, std::string key, std::string value, Done done);
  void erase(std::string table, std::string key, Done done);
  // Synchronous reads, safe from any thread (they use their own read connection). Use at
  // start-up and on rare control paths, not per message.
  Result<std::optional<std::string>> get(std::string_view table, std::string_view key) const;
  Result<std::vector<std::pair<std::string, std::string>>> list(std::string_view table) const;

  // Blocks until everything submitted so far has been committed (tests, shutdown). Returns
  // errc::io_error once the store is unhealthy.
  // REQUIRES: not called from a store callback (that would wait for itself).
  Status flush();
  // flush() without blocking: `done` runs (on the store thread) once everything submitted
  // before it has been committed, or failed.
  void when_committed(Done done);

  // Full consistency check on the read connection: SQLite's integrity_check plus the store's
  // own invariants (every entry has a body, refs match the entries, bytes match the bodies).
  // O(size of the database): for tests, `cairn check`-style diagnostics and after a crash,
  // never on a hot path. Errors: corruption (with the first problem found), io_error.
  Status check_integrity() const;

 private:
  class Impl;
  explicit MessageStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::store
