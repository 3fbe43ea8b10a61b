#include "cloud/telemetry_sink.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "cloud/ids.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "twin/twin.hpp"

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

Result<std::shared_ptr<TelemetrySink>> TelemetrySink::open(asio::io_context& io, CloudStore& store,
                                                           TelemetrySinkOptions options,
                                                           Clock clock) {
  std::FILE* file = nullptr;
  if (!options.jsonl_path.empty()) {
    std::error_code ec;
    auto parent = std::filesystem::path(options.jsonl_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) {
      return make_error(errc::io_error, fmt::format("cannot create the directory '{}': {}",
                                                    parent.string(), ec.message()));
    }
    file = std::fopen(options.jsonl_path.c_str(), "ae");  // append, close-on-exec
    if (file == nullptr) {
      return make_error(errc::io_error, fmt::format("cannot open the telemetry file '{}': {}",
                                                    options.jsonl_path, std::strerror(errno)));
    }
  }
  return std::shared_ptr<TelemetrySink>(new TelemetrySink(io, store, file, std::move(clock)));
}

TelemetrySink::TelemetrySink(asio::io_context& io, CloudStore& store, std::FILE* file, Clock clock)
    : io_(io), store_(store), file_(file), clock_(std::move(clock)) {}

TelemetrySink::~TelemetrySink() {
  if (file_ != nullptr) (void)std::fclose(file_);  // each line was flushed when written
}

bool TelemetrySink::deliver(const std::string& /*input*/, const Message& m, bool /*dup*/,
                            std::function<void()> on_ack) {
  // Duplicates are recognised by message id whether or not the hub flagged the delivery as a
  // re-send: a device may itself re-send a message after a lost PUBACK.
  const std::int64_t now = clock_ ? clock_() : now_unix_ms();
  TelemetryRecord& r = records_.emplace_back();
  r.device_id = std::string(m.system.get(sysprop::kConnectionDeviceId).value_or(""));
  r.module_id = std::string(m.system.get(sysprop::kConnectionModuleId).value_or(""));
  r.message_id = std::string(m.system.get(sysprop::kMessageId).value_or(""));
  // The hub stamps enqueuedTime when it accepts the message; fall back to now.
  auto enqueued = m.system.get(sysprop::kEnqueuedTime);
  r.enqueued_time = enqueued && !enqueued->empty() ? std::string(*enqueued) : format_iso8601(now);
  r.stored_ms = now;
  r.system = m.system;
  r.app = m.app;
  r.body = m.body;
  acks_.push_back(std::move(on_ack));
  if (records_.size() == 1) {
    asio::post(io_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->flush();
    });
  }
  return true;
}

void TelemetrySink::flush() {
  std::vector<TelemetryRecord> records;
  std::vector<std::function<void()>> acks;
  records.swap(records_);
  acks.swap(acks_);
  auto stored = store_.insert_telemetry(std::span<TelemetryRecord>(records));
  if (!stored) {
    counters_.store_failures += records.size();
    log::error("cloud", "storing {} messages failed, left unacknowledged: {}", records.size(),
               stored.error().to_string());
    return;
  }
  for (std::size_t i = 0; i < records.size(); ++i) {
    if ((*stored)[i]) {
      ++counters_.stored;
      continue;
    }
    ++counters_.duplicates;
    log::debug("cloud", "duplicate message device={} module={} message_id={} dropped",
               records[i].device_id, records[i].module_id, records[i].message_id);
  }
  write_lines(records, *stored);
  for (auto& ack : acks) ack();
}

void TelemetrySink::write_lines(std::span<const TelemetryRecord> records,
                                const std::vector<bool>& stored) {
  if (file_ == nullptr) return;
  std::string lines;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (!stored[i]) continue;
    lines += twin::dump_json(telemetry_to_json(records[i]));
    lines.push_back('\n');
  }
  if (lines.empty()) return;
  if (std::fwrite(lines.data(), 1, lines.size(), file_) != lines.size() ||
      std::fflush(file_) != 0) {
    ++counters_.file_failures;
    log::warn("cloud", "writing the telemetry file failed: {}", std::strerror(errno));
    std::clearerr(file_);
  }
}

}  // namespace cairn::cloud
