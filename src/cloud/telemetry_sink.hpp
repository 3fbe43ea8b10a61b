// TelemetrySink: where device-to-cloud messages end up in cairn-cloud. In the cloud role every
// telemetry message a device or module sends is routed into the hub's durable `$upstream`
// queue; the sink is that endpoint's consumer. deliver() only collects; a handler posted to
// the io_context then, for everything collected since (up to the endpoint's window),
//   1. stores the messages in the cloud store in one transaction, so a burst costs one commit
//      (one fsync) rather than one per message — each once: a message whose non-empty
//      messageId was already stored for the same device and module (a re-send after a lost
//      acknowledgement) is dropped and counted as a duplicate;
//   2. appends one JSON line per stored message to the optional file sink (telemetry_to_json);
//   3. acknowledges them, which lets the hub delete them from its queue.
// Acknowledging outside deliver() also keeps the endpoint's pump, which calls deliver() in a
// loop, from being re-entered once per message.
//
// If the store fails, the batch is not acknowledged: it stays in the hub's queue and is
// delivered again to the next consumer (fail closed; the error is logged and counted). A file
// sink failure is logged and counted but does not hold messages back: the store is the record.
//
// Thread-safety: deliver() runs on the hub's io thread; counters are read there too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cloud/cloud_store.hpp"
#include "hub/endpoint.hpp"
#include "net/asio.hpp"

namespace cairn::cloud {

struct TelemetrySinkOptions {
  // JSON-lines file every stored message is appended to; "" = none. Parent directories are
  // created. Each line is flushed to the OS as written (not fsynced: the store is durable).
  std::string jsonl_path;
};

struct TelemetryCounters {
  std::uint64_t stored = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t store_failures = 0;  // messages left unacknowledged
  std::uint64_t file_failures = 0;
};

// The JSON form of a stored message, used by the file sink and GET /cairn/messages:
// {"seq", "deviceId", "moduleId", "messageId", "enqueuedTime", "properties": {app},
//  "systemProperties": {system}, "body"} where body is the text itself when it is valid UTF-8
// and the content type is JSON or text/*, else base64 with "bodyEncoding": "base64".
nlohmann::json telemetry_to_json(const TelemetryRecord& record);

class TelemetrySink final : public hub::Consumer,
                            public std::enable_shared_from_this<TelemetrySink> {
 public:
  // `store` must outlive the sink; `io` is the hub's io_context (acknowledgements are posted
  // to it).
  static Result<std::shared_ptr<TelemetrySink>> open(asio::io_context& io, CloudStore& store,
                                                     TelemetrySinkOptions options,
                                                     Clock clock = {});
  ~TelemetrySink() override;
  TelemetrySink(const TelemetrySink&) = delete;
  TelemetrySink& operator=(const TelemetrySink&) = delete;

  bool deliver(const std::string& input, const Message& m, bool dup,
               std::function<void()> on_ack) override;

  const TelemetryCounters& counters() const { return counters_; }

 private:
  TelemetrySink(asio::io_context& io, CloudStore& store, std::FILE* file, Clock clock);
  // Stores, writes and acknowledges everything collected since the last flush.
  void flush();
  void write_lines(std::span<const TelemetryRecord> records, const std::vector<bool>& stored);

  asio::io_context& io_;
  CloudStore& store_;
  std::FILE* file_;  // owned; null without a file sink
  Clock clock_;
  TelemetryCounters counters_;
  // Collected by deliver(), in delivery order; a flush is posted while they are non-empty.
  std::vector<TelemetryRecord> records_;
  std::vector<std::function<void()>> acks_;
};

}  // namespace cairn::cloud
