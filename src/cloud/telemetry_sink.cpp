#include "cloud/telemetry_sink.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include <fmt/format.h>

#include "cloud/ids.hpp"
#include "core/backoff.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"
#include "mqtt/iothub_topics.hpp"
#include "store/failure.hpp"
#include "twin/twin.hpp"
#include <sys/stat.h>
#include <unistd.h>

namespace cairn::cloud {
namespace {

using nlohmann::json;

json properties_json(const Properties& props) {
  json out = json::object();
  for (const auto& [k, v] : props.entries()) out[k] = v;
  return out;
}

bool textual_content_type(std::string_view content_type) {
  const std::string ct = to_lower(content_type);
  return ct.starts_with("text/") || ct.find("json") != std::string::npos;
}

}  // namespace

json telemetry_to_json(const TelemetryRecord& r) {
  json out = json::object();
  out["seq"] = r.seq;
  out["deviceId"] = r.device_id;
  out["moduleId"] = r.module_id;
  out["messageId"] = r.message_id;
  if (!r.dedupe_key.empty()) out["dedupeKey"] = r.dedupe_key;
  out["enqueuedTime"] = r.enqueued_time;
  out["properties"] = properties_json(r.app);
  out["systemProperties"] = properties_json(r.system);
  auto content_type = r.system.get(sysprop::kContentType);
  if (content_type && textual_content_type(*content_type) && is_valid_utf8(r.body)) {
    out["body"] = r.body;
  } else {
    out["body"] = crypto::base64_encode(r.body);
    out["bodyEncoding"] = "base64";
  }
  return out;
}

Result<std::shared_ptr<TelemetrySink>> TelemetrySink::open(asio::io_context& io,
                                                           std::unique_ptr<CloudStore> store,
                                                           TelemetrySinkOptions options,
                                                           Clock clock) {
  if (!store) return make_error(errc::invalid_argument, "the telemetry sink needs a cloud store");
  if (options.max_store_attempts < 1) {
    return make_error(errc::invalid_argument, "max_store_attempts must be at least 1");
  }
  std::FILE* file = nullptr;
  if (!options.jsonl_path.empty()) {
    std::error_code ec;
    auto parent = std::filesystem::path(options.jsonl_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) {
      return make_error(errc::io_error, fmt::format("cannot create the directory '{}': {}",
                                                    parent.string(), ec.message()));
    }
    // Appends; read too, to find the last line at start (catch_up_file). Close-on-exec.
    file = std::fopen(options.jsonl_path.c_str(), "a+e");
    if (file == nullptr) {
      return make_error(errc::io_error, fmt::format("cannot open the telemetry file '{}': {}",
                                                    options.jsonl_path, std::strerror(errno)));
    }
  }
  std::shared_ptr<TelemetrySink> sink(
      new TelemetrySink(io, std::move(store), file, std::move(options), std::move(clock)));
  sink->writer_ = std::thread([raw = sink.get()] { raw->run(); });
  return sink;
}

TelemetrySink::TelemetrySink(asio::io_context& io, std::unique_ptr<CloudStore> store,
                             std::FILE* file, TelemetrySinkOptions options, Clock clock)
    : io_(io),
      store_(std::move(store)),
      file_(file),
      options_(std::move(options)),
      clock_(std::move(clock)) {}

TelemetrySink::~TelemetrySink() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (writer_.joinable()) writer_.join();
  if (file_ != nullptr) (void)std::fclose(file_);  // each line was flushed when written
}

TelemetryCounters TelemetrySink::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

bool TelemetrySink::deliver(const std::string& /*input*/, const Message& m,
                            hub::QueuePosition /*at*/, bool /*dup*/, std::function<void()> on_ack) {
  // Duplicates are recognised by message id or dedupe key whether or not the hub flagged the
  // delivery as a re-send: a device may itself re-send a message after a lost PUBACK.
  const std::int64_t now = clock_ ? clock_() : now_unix_ms();
  Item item;
  TelemetryRecord& r = item.record;
  r.device_id = std::string(m.system.get(sysprop::kConnectionDeviceId).value_or(""));
  r.module_id = std::string(m.system.get(sysprop::kConnectionModuleId).value_or(""));
  r.message_id = std::string(m.system.get(sysprop::kMessageId).value_or(""));
  // The hub stamps enqueuedTime when it accepts the message; fall back to now.
  auto enqueued = m.system.get(sysprop::kEnqueuedTime);
  r.enqueued_time = enqueued && !enqueued->empty() ? std::string(*enqueued) : format_iso8601(now);
  r.stored_ms = now;
  r.system = m.system;
  r.app = m.app;
  // The dedupe key is the cloud link's, not an application property of the module: it is kept
  // beside the message. A key longer than any cairnd makes stays a property, unused.
  if (auto key = r.app.get(iothub::kDedupeKeyProperty);
      key && !key->empty() && key->size() <= iothub::kMaxDedupeKeyBytes) {
    r.dedupe_key = std::string(*key);
    r.app.erase(iothub::kDedupeKeyProperty);
  }
  r.body = m.body;
  item.ack = std::move(on_ack);
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    // The endpoint hands over at most its window (mqtt.max_inflight_out) before an
    // acknowledgement: that bounds this queue.
    wake = pending_.empty();
    pending_.push_back(std::move(item));
    ++counters_.waiting;
  }
  if (wake) cv_.notify_one();
  return true;
}

void TelemetrySink::record_connection(const TwinKey& who, bool connected, std::int64_t at_ms) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    // One record per connect or disconnect: bounded by the hub's connection limit and rate.
    wake = pending_connections_.empty();
    pending_connections_.push_back(ConnectionRecord{who, connected, at_ms});
  }
  if (wake) cv_.notify_one();
}

void TelemetrySink::write_connections(std::vector<ConnectionRecord>& records) {
  for (const auto& r : records) {
    auto s = store_->set_connection_state(r.who, r.connected, r.at_ms);
    if (s) continue;
    {
      std::lock_guard lock(mu_);
      ++counters_.connection_record_failures;
    }
    log::warn("cloud", "recording client={} connected={} failed: {}", r.who.client_id(),
              r.connected, s.error().to_string());
  }
  records.clear();
}

namespace {

// The seq of the file's last complete line; nullopt when the file holds no complete line or the
// line cannot be read. A torn last line (no newline: the process stopped mid-write) is cut off.
Result<std::optional<std::int64_t>> last_line_seq(std::FILE* file) {
  const int fd = ::fileno(file);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error(errc::io_error, std::strerror(errno));
  auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0) return std::optional<std::int64_t>{};
  // Reads ever larger tails until one holds a whole line; a line is one message, so the
  // largest message bounds it (kMaxTail is far above any message the hub accepts).
  constexpr std::size_t kMaxTail = std::size_t{64} << 20;
  std::string tail;
  for (std::size_t want = 64 * 1024;; want *= 2) {
    const std::size_t n = std::min(want, size);
    tail.resize(n);
    if (::pread(fd, tail.data(), n, static_cast<off_t>(size - n)) != static_cast<ssize_t>(n)) {
      return make_error(errc::io_error, std::strerror(errno));
    }
    const auto end = tail.rfind('\n');
    if (end != std::string::npos && end + 1 < n) {  // a torn line after the last newline
      if (::ftruncate(fd, static_cast<off_t>(size - n + end + 1)) != 0) {
        return make_error(errc::io_error, std::strerror(errno));
      }
      log::warn("cloud", "telemetry file: cut a torn last line of {} bytes", n - end - 1);
      size -= n - end - 1;
      tail.resize(end + 1);
    }
    if (end == std::string::npos) {
      if (n == size || n >= kMaxTail) return std::optional<std::int64_t>{};
      continue;
    }
    const auto start = tail.rfind('\n', end == 0 ? 0 : end - 1);
    if (start == std::string::npos && n < size && n < kMaxTail) continue;
    const auto from = start == std::string::npos ? 0 : start + 1;
    auto line = json::parse(std::string_view(tail).substr(from, end - from), nullptr, false);
    if (line.is_discarded() || !line.contains("seq") || !line["seq"].is_number_integer()) {
      return std::optional<std::int64_t>{};
    }
    return std::optional<std::int64_t>{line["seq"].get<std::int64_t>()};
  }
}

}  // namespace

void TelemetrySink::catch_up_file() {
  if (file_ == nullptr) return;
  auto last = last_line_seq(file_);
  if (!last) {
    log::warn("cloud", "telemetry file '{}': cannot read its end ({}); not catching up",
              options_.jsonl_path, last.error().message);
    return;
  }
  if (!*last) return;
  TelemetryQuery query;
  query.after_seq = **last;
  query.limit = 1000;
  std::uint64_t written = 0;
  for (;;) {
    auto records = store_->list_telemetry(query);
    if (!records) {
      log::warn("cloud", "telemetry file: reading stored messages to catch up failed: {}",
                records.error().to_string());
      return;
    }
    if (records->empty()) break;
    std::string lines;
    for (const auto& r : *records) {
      lines += twin::dump_json(telemetry_to_json(r));
      lines.push_back('\n');
    }
    if (std::fwrite(lines.data(), 1, lines.size(), file_) != lines.size() ||
        std::fflush(file_) != 0) {
      log::warn("cloud", "writing the telemetry file failed: {}", std::strerror(errno));
      std::clearerr(file_);
      return;
    }
    written += records->size();
    query.after_seq = records->back().seq;
  }
  if (written > 0) {
    log::info("cloud", "telemetry file caught up with {} messages stored after its last line",
              written);
  }
}

void TelemetrySink::run() {
  name_this_thread("telemetry-sink");
  catch_up_file();
  Backoff backoff(options_.first_retry, options_.max_retry);
  std::vector<ConnectionRecord> connections;
  // While batch_ waits: when to retry it. A flag beside a plain time point rather than an
  // optional, which GCC 12 at -O3 reports as maybe-uninitialized (-Werror in release builds).
  bool retry_set = false;
  std::chrono::steady_clock::time_point retry_at{};
  for (;;) {
    bool write = false;
    {
      std::unique_lock lock(mu_);
      if (!batch_.empty()) {
        // Messages whose write failed: wait out the back-off; whatever arrives meanwhile is
        // written with them. When the store works and only some messages fail, new messages
        // do not wait behind them. Connection records are written as they come.
        if (!retry_set) {
          retry_at = std::chrono::steady_clock::now() + backoff.next();
          retry_set = true;
        }
        cv_.wait_until(lock, retry_at, [this] {
          return stopping_ || (retry_on_arrival_ && !pending_.empty()) ||
                 !pending_connections_.empty();
        });
        write = std::chrono::steady_clock::now() >= retry_at ||
                (retry_on_arrival_ && !pending_.empty());
      } else {
        cv_.wait(lock, [this] {
          return stopping_ || !pending_.empty() || !pending_connections_.empty();
        });
        write = !pending_.empty();
      }
      // Unstored messages stay unacknowledged in the hub's queue: delivered again next start.
      if (stopping_) return;
      connections.swap(pending_connections_);
      if (write) {
        for (Item& item : pending_) batch_.push_back(std::move(item));
        pending_.clear();
      }
    }
    write_connections(connections);
    if (!write) continue;
    retry_set = false;
    write_batch();
    if (batch_.empty()) backoff.reset();
  }
}

void TelemetrySink::write_batch() {
  std::vector<TelemetryRecord> records;
  records.reserve(batch_.size());
  for (Item& item : batch_) records.push_back(std::move(item.record));
  auto stored = store_->insert_telemetry(std::span<TelemetryRecord>(records));
  for (std::size_t i = 0; i < batch_.size(); ++i) batch_[i].record = std::move(records[i]);
  if (stored) {
    std::vector<Item> done;
    done.swap(batch_);
    finish(done, *stored);
    return;
  }
  if (store::classify_failure(stored.error()) == store::Failure::other) {
    write_one_by_one();
  } else {
    retry_on_arrival_ = false;
    on_failure(stored.error(), batch_.size());
  }
}

void TelemetrySink::write_one_by_one() {
  std::vector<Item> done;
  std::vector<bool> done_stored;
  std::vector<Item> kept;
  std::vector<std::pair<std::size_t, Error>> failed;  // index into kept, why
  retry_on_arrival_ = true;
  std::size_t i = 0;
  for (; i < batch_.size(); ++i) {
    Item& item = batch_[i];
    auto stored = store_->insert_telemetry(item.record);
    if (stored) {
      done_stored.push_back(*stored);
      done.push_back(std::move(item));
      continue;
    }
    if (store::classify_failure(stored.error()) != store::Failure::other) {
      // The store itself fails now: keep this and the rest for the next attempt.
      retry_on_arrival_ = false;
      on_failure(stored.error(), batch_.size() - i);
      break;
    }
    failed.emplace_back(kept.size(), std::move(stored).error());
    kept.push_back(std::move(item));
  }
  for (; i < batch_.size(); ++i) kept.push_back(std::move(batch_[i]));
  batch_.clear();
  const bool others_stored = !done.empty();
  finish(done, done_stored);
  if (!failed.empty() && !others_stored) {
    // Every message failed alike: maybe the store is broken, not the messages. Blame none.
    on_failure(failed.front().second, kept.size());
  }
  std::vector<bool> drop(kept.size(), false);
  if (others_stored) {
    for (auto& [index, error] : failed) {
      Item& item = kept[index];
      ++item.failures;
      log::warn("cloud", "message device={} module={} message_id={} not stored ({} of {}): {}",
                item.record.device_id, item.record.module_id, item.record.message_id, item.failures,
                options_.max_store_attempts, error.to_string());
      if (item.failures >= options_.max_store_attempts) {
        dead_letter(item, fmt::format("the cloud store refused it {} times: {}", item.failures,
                                      error.to_string()));
        drop[index] = true;
      }
    }
  }
  for (std::size_t k = 0; k < kept.size(); ++k) {
    if (!drop[k]) batch_.push_back(std::move(kept[k]));
  }
}

void TelemetrySink::on_failure(const Error& error, std::size_t messages) {
  const std::string reason = error.to_string();
  bool first = false;
  {
    std::lock_guard lock(mu_);
    ++counters_.store_failures;
    first = !counters_.failing;
    counters_.failing = true;
    counters_.last_failure = reason;
  }
  const bool fatal = store::classify_failure(error) == store::Failure::fatal;
  if (fatal && options_.exit_on_fatal) store::exit_for_clean_reopen("the cloud store", reason);
  if (first) {
    log::error("cloud",
               "storing {} messages failed; retrying with back-off, nothing is acknowledged "
               "until it is stored: {}",
               messages, reason);
  } else {
    log::debug("cloud", "storing {} messages failed again: {}", messages, reason);
  }
}

void TelemetrySink::finish(std::vector<Item>& items, const std::vector<bool>& stored) {
  if (items.empty()) return;
  std::uint64_t n_stored = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (stored[i]) {
      ++n_stored;
      continue;
    }
    log::debug("cloud", "duplicate message device={} module={} message_id={} dedupe_key={} dropped",
               items[i].record.device_id, items[i].record.module_id, items[i].record.message_id,
               items[i].record.dedupe_key);
  }
  bool recovered = false;
  {
    std::lock_guard lock(mu_);
    counters_.stored += n_stored;
    counters_.duplicates += items.size() - n_stored;
    counters_.waiting -= std::min<std::uint64_t>(counters_.waiting, items.size());
    recovered = counters_.failing;
    counters_.failing = false;
    counters_.last_failure.clear();
  }
  if (recovered) log::info("cloud", "storing messages works again");
  write_lines(items, stored);
  std::vector<std::function<void()>> acks;
  acks.reserve(items.size());
  for (Item& item : items) acks.push_back(std::move(item.ack));
  asio::post(io_, [acks = std::move(acks)] {
    for (const auto& ack : acks) {
      if (ack) ack();
    }
  });
}

void TelemetrySink::dead_letter(Item& item, const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    ++counters_.dead_lettered;
    counters_.waiting -= std::min<std::uint64_t>(counters_.waiting, 1);
  }
  const TelemetryRecord& r = item.record;
  log::error("cloud", "message device={} module={} message_id={} dead-lettered: {}", r.device_id,
             r.module_id, r.message_id, reason);
  Message m;
  m.body = r.body;
  m.system = r.system;
  m.app = r.app;
  asio::post(io_, [fn = options_.dead_letter, m = std::move(m), reason, ack = std::move(item.ack)] {
    if (fn) fn(m, reason);
    if (ack) ack();
  });
}

void TelemetrySink::write_lines(const std::vector<Item>& items, const std::vector<bool>& stored) {
  if (file_ == nullptr) return;
  std::string lines;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!stored[i]) continue;
    lines += twin::dump_json(telemetry_to_json(items[i].record));
    lines.push_back('\n');
  }
  if (lines.empty()) return;
  if (std::fwrite(lines.data(), 1, lines.size(), file_) != lines.size() ||
      std::fflush(file_) != 0) {
    {
      std::lock_guard lock(mu_);
      ++counters_.file_failures;
    }
    log::warn("cloud", "writing the telemetry file failed: {}", std::strerror(errno));
    std::clearerr(file_);
  }
}

}  // namespace cairn::cloud
