// cairn::Message: one routed message — body plus system and application properties — as the
// hub receives it from a module and hands it to routes, queues and endpoints.
//
// System properties use the IoT Hub internal names (messageId, correlationId, contentType,
// contentEncoding, outputName, connectionDeviceId, connectionModuleId, enqueuedTime, ...); the
// MQTT `$.xx` wire names are mapped in the hub. Property lookups are case-insensitive, as in
// IoT Hub; insertion order is kept so a property bag round-trips unchanged.
//
// Thread-safety: a plain value. Share one immutable copy between endpoints through
// std::shared_ptr<const Message>.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.hpp"

namespace cairn {

// An ordered property bag with case-insensitive keys.
class Properties {
 public:
  using Entry = std::pair<std::string, std::string>;

  // Returns the value of the first key equal to `key` ignoring ASCII case.
  std::optional<std::string_view> get(std::string_view key) const;
  // Replaces the value of an existing key (ignoring case) or appends a new entry.
  void set(std::string key, std::string value);
  // set() for each of `more` in order, in time linear in the size of both bags (a bag from a
  // client may be large; set() alone is quadratic).
  void set_all(std::vector<Entry> more);
  bool erase(std::string_view key);

  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }
  bool operator==(const Properties&) const = default;

 private:
  std::vector<Entry> entries_;
};

// Names of the system properties the hub sets or reads.
namespace sysprop {
inline constexpr std::string_view kMessageId = "messageId";
inline constexpr std::string_view kCorrelationId = "correlationId";
inline constexpr std::string_view kTo = "to";
inline constexpr std::string_view kUserId = "userId";
inline constexpr std::string_view kContentType = "contentType";
inline constexpr std::string_view kContentEncoding = "contentEncoding";
inline constexpr std::string_view kExpiryTime = "absolute-expiry-time";
inline constexpr std::string_view kMessageSchema = "messageSchema";
inline constexpr std::string_view kCreationTime = "creationTime";
inline constexpr std::string_view kOutputName = "outputName";
inline constexpr std::string_view kInputName = "inputName";
inline constexpr std::string_view kInterfaceId = "iothub-interface-id";
inline constexpr std::string_view kComponent = "dt-subject";
inline constexpr std::string_view kOperation = "iothub-operation";
inline constexpr std::string_view kAck = "ack";
inline constexpr std::string_view kConnectionDeviceId = "connectionDeviceId";
inline constexpr std::string_view kConnectionModuleId = "connectionModuleId";
inline constexpr std::string_view kEnqueuedTime = "enqueuedTime";
inline constexpr std::string_view kMessageType = "messageType";
}  // namespace sysprop

struct Message {
  std::string body;
  Properties system;
  Properties app;

  bool operator==(const Message&) const = default;
};

// Compact binary form used by the durable store. Versioned; decode rejects anything it did
// not write (errc::corruption) instead of guessing.
std::string encode_message(const Message& m);
Result<Message> decode_message(std::string_view bytes);

// Case-insensitive ASCII comparison helpers used across the hub.
bool iequals(std::string_view a, std::string_view b) noexcept;
std::string to_lower(std::string_view s);

}  // namespace cairn
