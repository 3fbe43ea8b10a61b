// TelemetrySink: where device-to-cloud messages end up in cairn-cloud. In the cloud role every
// telemetry message a device or module sends is routed into the hub's durable `$upstream`
// queue (queue.db, capped: a full queue withholds the sender's PUBACK); the sink is that
// endpoint's consumer and moves each message from there into the cloud store.
//
// deliver() (on the io thread) only hands the message to the sink's writer thread, which owns
// its own connection to the cloud store: a slow disk, an fsync or a database locked by another
// process delays the writer, never the io thread. The writer takes everything handed over
// since its last write and
//   1. stores it in one transaction (one commit, one fsync for a burst) — each message once: a
//      message whose non-empty messageId, or dedupe key (iothub::kDedupeKeyProperty, which
//      cairnd's cloud link adds), was already stored for the same device and module (a re-send
//      after a lost acknowledgement or a dropped link) is dropped and counted as a duplicate;
//   2. appends one JSON line per stored message to the optional file sink (telemetry_to_json;
//      at start the file first catches up with messages stored after its last line);
//   3. acknowledges the messages (on the io thread), which lets the hub delete them from its
//      queue. Nothing is acknowledged before it is stored (or dead-lettered).
//
// When a write fails (docs/failure_policy.md, store/failure.hpp):
//   - transient (disk full, database locked): the same messages are written again after a
//     back-off (first_retry doubling to max_retry), as long as it takes. Meanwhile nothing is
//     acknowledged, so the endpoint's window (mqtt.max_inflight_out messages) stops further
//     deliveries, queue.db grows up to its cap, and then publishers get no PUBACK;
//   - fatal (I/O error, corruption): with exit_on_fatal the process exits (code 1) for its
//     supervisor to restart it on a clean reopen — the messages wait in queue.db; without it,
//     retried like a transient failure;
//   - other: the batch is split and each message written on its own. A message that fails on
//     its own while others of the same attempt are stored is the cause: after
//     max_store_attempts such failures it is dead-lettered (handed to `dead_letter` with the
//     reason, then acknowledged) instead of blocking everything behind it. When every message
//     fails alike the store itself is broken, nothing is blamed, and all are retried.
// The writer never stops while the sink exists. A file sink failure is logged and counted but
// does not hold messages back: the store is the record.
//
// Thread-safety: deliver() and counters() may be called from any thread; acknowledgements and
// dead letters run on the io thread. The destructor stops and joins the writer: messages not
// stored by then stay unacknowledged in the hub's queue and are delivered again after a restart.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cloud/cloud_store.hpp"
#include "hub/endpoint.hpp"
#include "net/asio.hpp"

namespace cairn::cloud {

// Takes a message the cloud store cannot take, with the reason (cairn-cloud: the hub's
// dead-letter table). Runs on the io thread.
using DeadLetterFn = std::function<void(const Message& message, const std::string& reason)>;

struct TelemetrySinkOptions {
  // JSON-lines file every stored message is appended to; "" = none. Parent directories are
  // created. Each line is flushed to the OS as written (not fsynced: the store is durable).
  std::string jsonl_path;
  // Back-off between attempts to write messages whose write failed.
  std::chrono::milliseconds first_retry{100};
  std::chrono::milliseconds max_retry{10'000};
  // A message that fails on its own this many times while others are stored is dead-lettered.
  int max_store_attempts = 3;
  // End the process on a fatal store failure (cairn-cloud sets it; tests do not).
  bool exit_on_fatal = false;
  // Where dead-lettered messages go; without one they are logged (with their ids) and dropped.
  DeadLetterFn dead_letter;
};

struct TelemetryCounters {
  std::uint64_t stored = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t store_failures = 0;  // failed write attempts (each retried)
  std::uint64_t dead_lettered = 0;   // messages the store refused for good
  std::uint64_t file_failures = 0;
  std::uint64_t connection_record_failures = 0;  // record_connection() writes that failed
  std::uint64_t waiting = 0;  // handed to the writer, not yet stored or dead-lettered
  bool failing = false;       // the last write attempt failed
  std::string last_failure;   // its reason, while failing
};

// The JSON form of a stored message, used by the file sink and GET /cairn/messages:
// {"seq", "deviceId", "moduleId", "messageId", ["dedupeKey",] "enqueuedTime", "properties": {app},
//  "systemProperties": {system}, "body"} where body is the text itself when it is valid UTF-8
// and the content type is JSON or text/*, else base64 with "bodyEncoding": "base64".
nlohmann::json telemetry_to_json(const TelemetryRecord& record);

class TelemetrySink final : public hub::Consumer,
                            public std::enable_shared_from_this<TelemetrySink> {
 public:
  // `store` is used only by the sink's writer thread (open a connection of its own for it);
  // `io` is the hub's io_context (acknowledgements and dead letters are posted to it).
  static Result<std::shared_ptr<TelemetrySink>> open(asio::io_context& io,
                                                     std::unique_ptr<CloudStore> store,
                                                     TelemetrySinkOptions options,
                                                     Clock clock = {});
  ~TelemetrySink() override;
  TelemetrySink(const TelemetrySink&) = delete;
  TelemetrySink& operator=(const TelemetrySink&) = delete;

  bool deliver(const std::string& input, const Message& m, hub::QueuePosition at, bool dup,
               std::function<void()> on_ack) override;

  TelemetryCounters counters() const;

  // Writes a client's connection state on the writer thread, in the order recorded, ahead of
  // telemetry waiting there (ConnectionTracker's RecordFn). Best effort: a failure is logged
  // and counted, not retried (the next connect or disconnect writes it again).
  void record_connection(const TwinKey& who, bool connected, std::int64_t at_ms);

 private:
  struct Item {
    TelemetryRecord record;
    std::function<void()> ack;
    int failures = 0;  // failed alone while others were stored
  };

  TelemetrySink(asio::io_context& io, std::unique_ptr<CloudStore> store, std::FILE* file,
                TelemetrySinkOptions options, Clock clock);
  struct ConnectionRecord {
    TwinKey who;
    bool connected = false;
    std::int64_t at_ms = 0;
  };

  void run();
  // Brings the file up to the store before the first write: a stop between a commit and the
  // write of its lines (kill -9) leaves the file behind the store, and the re-sent messages are
  // duplicates that write no line. Appends the stored messages after the file's last line and
  // cuts a torn last line. An empty file starts with what arrives from now on.
  void catch_up_file();
  void write_connections(std::vector<ConnectionRecord>& records);
  // Writes `batch_`; what is left in it afterwards is retried after a back-off.
  void write_batch();
  // Writes each message of a batch that failed as a whole on its own.
  void write_one_by_one();
  void on_failure(const Error& error, std::size_t messages);
  void finish(std::vector<Item>& items, const std::vector<bool>& stored);
  void dead_letter(Item& item, const std::string& reason);
  void write_lines(const std::vector<Item>& items, const std::vector<bool>& stored);

  asio::io_context& io_;
  std::unique_ptr<CloudStore> store_;  // writer thread only
  std::FILE* file_;                    // owned; null without a file sink; writer thread only
  const TelemetrySinkOptions options_;
  Clock clock_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> pending_;                          // guarded by mu_: handed over by deliver()
  std::vector<ConnectionRecord> pending_connections_;  // guarded by mu_
  bool stopping_ = false;                              // guarded by mu_
  TelemetryCounters counters_;                         // guarded by mu_

  std::vector<Item> batch_;  // writer thread only
  // The last failure was a message's own, not the store's: new messages are written at once
  // instead of waiting out the back-off behind it. Writer thread only.
  bool retry_on_arrival_ = false;
  std::thread writer_;
};

}  // namespace cairn::cloud
