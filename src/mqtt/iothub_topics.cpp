#include "mqtt/iothub_topics.hpp"

#include <charconv>
#include <optional>
#include <string>

#include "core/crypto.hpp"

namespace cairn::iothub {
namespace {

using namespace std::string_view_literals;

constexpr std::string_view kDevicesPrefix = "devices/";
constexpr std::string_view kModulesSegment = "modules/";
constexpr std::string_view kEventsSegment = "messages/events";
constexpr std::string_view kTwinPrefix = "$iothub/twin/";
constexpr std::string_view kTwinGet = "GET/";
constexpr std::string_view kTwinPatchReported = "PATCH/properties/reported/";
constexpr std::string_view kTwinDesiredPrefix = "$iothub/twin/PATCH/properties/desired/";
constexpr std::string_view kTwinResponseFilter = "$iothub/twin/res/#";
constexpr std::string_view kTwinResponsePrefix = "$iothub/twin/res/";
constexpr std::string_view kMethodResponsePrefix = "$iothub/methods/res/";
constexpr std::string_view kMethodRequestPrefix = "$iothub/methods/POST/";
constexpr std::string_view kC2dSuffix = "messages/devicebound/#";
constexpr std::string_view kRidKey = "$rid";

struct WireName {
  std::string_view wire;
  std::string_view internal;
  bool outbound;  // edgeHub never sends $.on or $.ifid back to a client
};

// docs/protocol.md §3.4 (edgeHub SystemProperties.cs).
constexpr WireName kWireNames[] = {
    {"$.mid", sysprop::kMessageId, true},
    {"$.cid", sysprop::kCorrelationId, true},
    {"$.to", sysprop::kTo, true},
    {"$.uid", sysprop::kUserId, true},
    {"$.ct", sysprop::kContentType, true},
    {"$.ce", sysprop::kContentEncoding, true},
    {"$.exp", sysprop::kExpiryTime, true},
    {"$.schema", sysprop::kMessageSchema, true},
    {"$.ctime", sysprop::kCreationTime, true},
    {"$.on", sysprop::kOutputName, false},
    {"$.ifid", sysprop::kInterfaceId, false},
    {"$.sub", sysprop::kComponent, true},
    {"iothub-operation", sysprop::kOperation, true},
    {"ack", sysprop::kAck, true},
    {"$.cdid", sysprop::kConnectionDeviceId, true},
    {"$.cmid", sysprop::kConnectionModuleId, true},
};

const WireName* find_by_wire(std::string_view wire) noexcept {
  for (const auto& w : kWireNames) {
    if (w.wire == wire) return &w;
  }
  return nullptr;
}

const WireName* find_outbound_by_internal(std::string_view internal) noexcept {
  for (const auto& w : kWireNames) {
    if (w.outbound && iequals(w.internal, internal)) return &w;
  }
  return nullptr;
}

Error bad_topic(std::string_view what, std::string_view topic) {
  return make_error(errc::invalid_argument, std::string(what) + ": '" + std::string(topic) + "'");
}

// Takes the next '/'-terminated segment off `rest`. False if there is no '/' or the segment is
// empty (ids are never empty).
bool take_segment(std::string_view& rest, std::string_view& segment) noexcept {
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  segment = rest.substr(0, slash);
  rest.remove_prefix(slash + 1);
  return true;
}

// `query` is "" or "?k=v&k2=v2". Values are returned verbatim: $rid is opaque and echoed back
// byte for byte.
std::optional<std::string_view> query_value(std::string_view query, std::string_view key) {
  if (query.empty() || query.front() != '?') return std::nullopt;
  query.remove_prefix(1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == key) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
  }
  return std::nullopt;
}

Result<InboundTopic> parse_telemetry(std::string_view topic) {
  std::string_view rest = topic.substr(kDevicesPrefix.size());
  InboundTopic t;
  std::string_view segment;
  if (!take_segment(rest, segment)) return bad_topic("telemetry topic without a device id", topic);
  t.device_id.assign(segment);
  if (rest.starts_with(kModulesSegment)) {
    rest.remove_prefix(kModulesSegment.size());
    if (!take_segment(rest, segment)) {
      return bad_topic("telemetry topic without a module id", topic);
    }
    t.module_id.assign(segment);
  }
  if (!rest.starts_with(kEventsSegment)) return bad_topic("not a telemetry topic", topic);
  rest.remove_prefix(kEventsSegment.size());
  if (!rest.empty()) {
    if (rest.front() != '/') return bad_topic("not a telemetry topic", topic);
    rest.remove_prefix(1);
    // The Node SDK ends an output event's bag with '/'; the templates accept both forms.
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    if (rest.find('/') != std::string_view::npos) {
      return bad_topic("telemetry property bag contains '/'", topic);
    }
    CAIRN_TRY(decode_property_bag(rest, t.system, t.app));
    // The sender's identity comes from its authenticated connection, never from the topic.
    t.system.erase(sysprop::kConnectionDeviceId);
    t.system.erase(sysprop::kConnectionModuleId);
  }
  return t;
}

Result<InboundTopic> parse_twin(std::string_view topic) {
  std::string_view rest = topic.substr(kTwinPrefix.size());
  InboundTopic t;
  if (rest.starts_with(kTwinGet)) {
    t.kind = InboundTopic::Kind::twin_get;
    rest.remove_prefix(kTwinGet.size());
  } else if (rest.starts_with(kTwinPatchReported)) {
    t.kind = InboundTopic::Kind::twin_patch_reported;
    rest.remove_prefix(kTwinPatchReported.size());
  } else {
    return bad_topic("invalid twin request topic", topic);
  }
  if (!rest.empty() && rest.front() != '?') return bad_topic("invalid twin request topic", topic);
  auto rid = query_value(rest, kRidKey);
  // edgeHub answers a GET only through its $rid; a reported patch may go without one.
  if (t.kind == InboundTopic::Kind::twin_get && (!rid || rid->empty())) {
    return bad_topic("twin GET without a $rid", topic);
  }
  if (rid) t.rid.assign(*rid);
  return t;
}

Result<InboundTopic> parse_method_response(std::string_view topic) {
  std::string_view rest = topic.substr(kMethodResponsePrefix.size());
  std::string_view status;
  if (!take_segment(rest, status)) return bad_topic("method response without a status", topic);
  InboundTopic t;
  t.kind = InboundTopic::Kind::method_response;
  const auto [end, ec] = std::from_chars(status.data(), status.data() + status.size(), t.status);
  if (ec != std::errc{} || end != status.data() + status.size()) {
    return bad_topic("method response status is not an integer", topic);
  }
  auto rid = query_value(rest, kRidKey);
  if (!rid || rid->empty()) return bad_topic("method response without a $rid", topic);
  t.rid.assign(*rid);
  return t;
}

void append_pair(std::string& out, std::string_view key, std::string_view value) {
  if (!out.empty()) out.push_back('&');
  out += crypto::url_encode(key);
  out.push_back('=');
  out += crypto::url_encode(value);
}

}  // namespace

Result<InboundTopic> parse_inbound_topic(std::string_view topic) {
  if (topic.starts_with(kDevicesPrefix)) return parse_telemetry(topic);
  if (topic.starts_with(kTwinPrefix)) return parse_twin(topic);
  if (topic.starts_with(kMethodResponsePrefix)) return parse_method_response(topic);
  return bad_topic("topic is not part of the IoT Hub surface", topic);
}

Status decode_property_bag(std::string_view bag, Properties& system, Properties& app) {
  // Collected first and added in one linear pass each: the bag comes from the client.
  std::vector<Properties::Entry> system_entries, app_entries;
  while (!bag.empty()) {
    const auto amp = bag.find('&');
    const std::string_view pair = bag.substr(0, amp);
    bag = amp == std::string_view::npos ? std::string_view{} : bag.substr(amp + 1);
    if (pair.empty()) continue;  // "a=1&&b=2" or a trailing '&': nothing to carry
    const auto eq = pair.find('=');
    auto key = crypto::url_decode(pair.substr(0, eq));
    if (!key) return make_error(errc::invalid_argument, "property bag key: " + key.error().message);
    if (key->empty()) return make_error(errc::invalid_argument, "property bag has an empty key");
    std::string value;
    if (eq != std::string_view::npos) {
      auto v = crypto::url_decode(pair.substr(eq + 1));
      if (!v) {
        return make_error(errc::invalid_argument,
                          "property bag value of '" + *key + "': " + v.error().message);
      }
      value = std::move(*v);
    }
    if (const WireName* w = find_by_wire(*key)) {
      system_entries.emplace_back(std::string(w->internal), std::move(value));
    } else {
      app_entries.emplace_back(std::move(*key), std::move(value));
    }
  }
  if (!system_entries.empty()) system.set_all(std::move(system_entries));
  if (!app_entries.empty()) app.set_all(std::move(app_entries));
  return {};
}

std::string encode_property_bag(const Properties& system, const Properties& app) {
  std::string out;
  for (const auto& [key, value] : system.entries()) {
    if (const WireName* w = find_outbound_by_internal(key)) append_pair(out, w->wire, value);
  }
  for (const auto& [key, value] : app.entries()) append_pair(out, key, value);
  return out;
}

std::string upstream_events_topic(const Message& m, std::string_view default_device,
                                  std::string_view dedupe_key) {
  std::string device(m.system.get(sysprop::kConnectionDeviceId).value_or(default_device));
  std::string module(m.system.get(sysprop::kConnectionModuleId).value_or(""));
  Properties system = m.system;
  system.erase(sysprop::kConnectionDeviceId);
  system.erase(sysprop::kConnectionModuleId);
  system.erase(sysprop::kEnqueuedTime);
  std::string bag;
  if (dedupe_key.empty()) {
    bag = encode_property_bag(system, m.app);
  } else {
    // The key is the link's, not the module's: a module property of that name must not reach
    // the cloud as the key (it would make the cloud drop other messages as its duplicates).
    Properties app = m.app;
    app.erase(kDedupeKeyProperty);
    bag = encode_property_bag(system, app);
    append_pair(bag, kDedupeKeyProperty, dedupe_key);
  }
  return "devices/" + device + (module.empty() ? "" : "/modules/" + module) + "/messages/events/" +
         bag;
}

std::string module_input_topic(std::string_view device_id, std::string_view module_id,
                               std::string_view input, const Message& m) {
  const std::string bag = encode_property_bag(m.system, m.app);
  std::string out;
  out.reserve(kDevicesPrefix.size() + device_id.size() + module_id.size() + input.size() +
              bag.size() + 20);
  out.append(kDevicesPrefix).append(device_id).append("/modules/"sv).append(module_id);
  out.append("/inputs/"sv).append(input).append("/"sv).append(bag);
  return out;
}

std::string module_output_topic(std::string_view device_id, std::string_view module_id,
                                std::string_view output, const Message& m) {
  std::string bag;
  append_pair(bag, "$.on", output);
  const std::string rest = encode_property_bag(m.system, m.app);
  if (!rest.empty()) bag.append("&"sv).append(rest);
  std::string out;
  out.reserve(kDevicesPrefix.size() + device_id.size() + module_id.size() + bag.size() + 32);
  out.append(kDevicesPrefix).append(device_id).append("/modules/"sv).append(module_id);
  out.append("/messages/events/"sv).append(bag).append("/"sv);
  return out;
}

Result<ModuleInputTopic> parse_module_input_topic(std::string_view topic) {
  if (!topic.starts_with(kDevicesPrefix)) return bad_topic("not a module input topic", topic);
  std::string_view rest = topic.substr(kDevicesPrefix.size());
  ModuleInputTopic t;
  std::string_view segment;
  if (!take_segment(rest, segment)) return bad_topic("input topic without a device id", topic);
  t.device_id.assign(segment);
  if (!rest.starts_with(kModulesSegment)) return bad_topic("not a module input topic", topic);
  rest.remove_prefix(kModulesSegment.size());
  if (!take_segment(rest, segment)) return bad_topic("input topic without a module id", topic);
  t.module_id.assign(segment);
  constexpr std::string_view kInputsSegment = "inputs/";
  if (!rest.starts_with(kInputsSegment)) return bad_topic("not a module input topic", topic);
  rest.remove_prefix(kInputsSegment.size());
  const auto slash = rest.find('/');
  segment = rest.substr(0, slash);
  if (segment.empty()) return bad_topic("input topic without an input name", topic);
  t.input.assign(segment);
  rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    return bad_topic("input property bag contains '/'", topic);
  }
  CAIRN_TRY(decode_property_bag(rest, t.system, t.app));
  return t;
}

std::string twin_get_topic(std::string_view rid) {
  std::string out = "$iothub/twin/GET/?$rid=";
  out += rid;
  return out;
}

std::string twin_patch_reported_topic(std::string_view rid) {
  std::string out = "$iothub/twin/PATCH/properties/reported/?$rid=";
  out += rid;
  return out;
}

std::string method_response_topic(int status, std::string_view rid) {
  std::string out(kMethodResponsePrefix);
  out += std::to_string(status);
  out += "/?$rid=";
  out += rid;
  return out;
}

Result<CloudTopic> parse_cloud_topic(std::string_view topic) {
  CloudTopic t;
  std::string_view rest;
  if (topic.starts_with(kTwinResponsePrefix)) {
    rest = topic.substr(kTwinResponsePrefix.size());
    std::string_view status;
    if (!take_segment(rest, status)) return bad_topic("twin response without a status", topic);
    const auto [end, ec] = std::from_chars(status.data(), status.data() + status.size(), t.status);
    if (ec != std::errc{} || end != status.data() + status.size()) {
      return bad_topic("twin response status is not an integer", topic);
    }
  } else if (topic.starts_with(kTwinDesiredPrefix)) {
    t.kind = CloudTopic::Kind::desired_patch;
    if (auto v = query_value(topic.substr(kTwinDesiredPrefix.size()), "$version")) {
      long long version = 0;
      const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), version);
      if (ec == std::errc{} && end == v->data() + v->size()) t.version = version;
    }
    return t;
  } else if (topic.starts_with(kMethodRequestPrefix)) {
    t.kind = CloudTopic::Kind::method_request;
    rest = topic.substr(kMethodRequestPrefix.size());
    std::string_view name;
    if (!take_segment(rest, name)) return bad_topic("method request without a name", topic);
    t.method_name.assign(name);
  } else {
    return bad_topic("not a topic the cloud sends to devices", topic);
  }
  if (auto rid = query_value(rest, kRidKey)) t.rid.assign(*rid);
  return t;
}

std::string twin_response_topic(int status, std::string_view rid) {
  std::string out = "$iothub/twin/res/";
  out += std::to_string(status);
  out += "/?$rid=";
  out += rid;
  return out;
}

std::string twin_desired_patch_topic(long long version) {
  std::string out(kTwinDesiredPrefix);
  out += "?$version=";
  out += std::to_string(version);
  return out;
}

std::string method_request_topic(std::string_view method, std::string_view rid) {
  std::string out(kMethodRequestPrefix);
  out += method;
  out += "/?$rid=";
  out += rid;
  return out;
}

SubscriptionKind classify_subscription(std::string_view filter) {
  using Kind = SubscriptionKind::Kind;
  SubscriptionKind s;
  // Checked in edgeHub's SessionStateParser order.
  if (filter.starts_with(kMethodRequestPrefix)) {
    s.kind = Kind::methods;
    return s;
  }
  if (filter.starts_with(kTwinDesiredPrefix)) {
    s.kind = Kind::desired_updates;
    return s;
  }
  if (filter.ends_with(kC2dSuffix)) {
    s.kind = Kind::c2d;
    // The device id is only meaningful in the canonical shape; otherwise it stays empty and the
    // caller's identity check refuses it.
    constexpr std::string_view kC2dTail = "/messages/devicebound/#";
    if (filter.starts_with(kDevicesPrefix) &&
        filter.size() > kDevicesPrefix.size() + kC2dTail.size() && filter.ends_with(kC2dTail)) {
      s.device_id.assign(filter.substr(kDevicesPrefix.size(),
                                       filter.size() - kDevicesPrefix.size() - kC2dTail.size()));
    }
    return s;
  }
  if (filter == kTwinResponseFilter) {
    s.kind = Kind::twin_response;
    return s;
  }
  // ^devices/.+/modules/.+/#$ with greedy groups: the device id runs to the last "/modules/"
  // that leaves a non-empty module id.
  constexpr std::string_view kModulesInfix = "/modules/";
  constexpr std::string_view kHashTail = "/#";
  if (filter.starts_with(kDevicesPrefix) && filter.ends_with(kHashTail) &&
      filter.size() >= kDevicesPrefix.size() + kHashTail.size()) {
    const std::string_view middle = filter.substr(
        kDevicesPrefix.size(), filter.size() - kDevicesPrefix.size() - kHashTail.size());
    for (auto pos = middle.rfind(kModulesInfix); pos != std::string_view::npos && pos > 0;
         pos = middle.rfind(kModulesInfix, pos - 1)) {
      const std::string_view module = middle.substr(pos + kModulesInfix.size());
      if (module.empty()) continue;
      s.kind = Kind::module_messages;
      s.device_id.assign(middle.substr(0, pos));
      s.module_id.assign(module);
      return s;
    }
  }
  return s;
}

}  // namespace cairn::iothub
