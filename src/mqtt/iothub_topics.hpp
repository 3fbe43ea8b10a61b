// The IoT Hub MQTT topic surface: parsing the topics a module or
// device publishes to, building the topics the hub publishes, and the property-bag encoding
// with the `$.xx` system-property wire names. Both sides use it: the hub (cairnd, cairn-cloud)
// and the clients (the module SDK, the upstream link), so it lives below both.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/message.hpp"
#include "core/result.hpp"

namespace cairn::iothub {

// What an inbound PUBLISH topic asks for.
struct InboundTopic {
  enum class Kind {
    telemetry,            // devices/{d}[/modules/{m}]/messages/events[/{bag}][/]
    twin_get,             // $iothub/twin/GET/?$rid={rid}
    twin_patch_reported,  // $iothub/twin/PATCH/properties/reported/?$rid={rid}[&...]
    method_response,      // $iothub/methods/res/{status}/?$rid={rid}
  };
  Kind kind = Kind::telemetry;
  std::string device_id;  // telemetry only
  std::string module_id;  // telemetry only; empty for a leaf device
  // telemetry: system properties (internal names, e.g. outputName from $.on) and application
  // properties decoded from the bag.
  Properties system;
  Properties app;
  std::string rid;  // twin and method responses: the opaque $rid, verbatim
  int status = 0;   // method_response only
};

// Parses a topic name a client published to. errc::invalid_argument for anything outside the
// surface above, for a bag that does not decode, and for twin GETs without a $rid.
Result<InboundTopic> parse_inbound_topic(std::string_view topic);

// Property bag: "k=v&k2=v2", URL-encoded; `$.xx` keys map to system properties
// ($.mid messageId, $.cid correlationId, $.to to, $.uid userId, $.ct contentType,
// $.ce contentEncoding, $.exp absolute-expiry-time, $.schema messageSchema, $.ctime
// creationTime, $.on outputName (inbound only), $.ifid iothub-interface-id, $.sub dt-subject,
// iothub-operation, ack; outbound also $.cdid connectionDeviceId and $.cmid connectionModuleId).
// A key without '=' is a property with an empty value.
Status decode_property_bag(std::string_view bag, Properties& system, Properties& app);
// Encodes system properties that have a wire name (outbound direction) then application
// properties. Returns "" when there is nothing to encode.
std::string encode_property_bag(const Properties& system, const Properties& app);

// devices/{d}/modules/{m}/inputs/{input}/{bag}  (the bag may be empty: ".../inputs/{input}/")
std::string module_input_topic(std::string_view device_id, std::string_view module_id,
                               std::string_view input, const Message& m);
// The application property in which cairnd's cloud link carries its dedupe key: the same
// for every send of one message, including a re-send after a dropped link or a restart of
// cairnd, and different for every other message the device sent (docs/protocol.md, "Dedupe
// key"). cairn-cloud stores a message once per (device, module, key); IoT Hub passes it on to
// its consumers as an ordinary application property. The module's own messageId ($.mid) is
// left as it is.
inline constexpr std::string_view kDedupeKeyProperty = "cairn-dedupe-key";
// The longest dedupe key cairn-cloud de-duplicates on; a longer value stays an ordinary
// application property. cairnd's keys are at most kMaxDedupeKeyBytes long.
inline constexpr std::size_t kMaxDedupeKeyBytes = 80;

// devices/{d}[/modules/{m}]/messages/events/{bag}: how the cloud link sends `m` upstream, as
// its sender (the connection device/module ids, `default_device` when absent). The sender
// ids and enqueue time are the cloud's to stamp and are not in the bag. A non-empty
// `dedupe_key` goes last in the bag as kDedupeKeyProperty, replacing a module's own property
// of that name.
std::string upstream_events_topic(const Message& m, std::string_view default_device,
                                  std::string_view dedupe_key = {});
// devices/{d}/modules/{m}/messages/events/{bag}/ with "$.on={output}" first in the bag, then the
// message's system properties (outbound wire names) and application properties: what a module
// publishes to send on an output. The trailing '/' is the Node SDK's form.
std::string module_output_topic(std::string_view device_id, std::string_view module_id,
                                std::string_view output, const Message& m);

// A delivery to a module input, devices/{d}/modules/{m}/inputs/{input}/{bag}, parsed on the
// module side: the input name and the decoded bag (including $.cdid/$.cmid, the sender).
struct ModuleInputTopic {
  std::string device_id;
  std::string module_id;
  std::string input;
  Properties system;
  Properties app;
};
// errc::invalid_argument for any other topic, an empty input name or a bag that does not decode.
Result<ModuleInputTopic> parse_module_input_topic(std::string_view topic);

// $iothub/twin/GET/?$rid={rid} and $iothub/twin/PATCH/properties/reported/?$rid={rid}: the
// twin requests a client sends.
std::string twin_get_topic(std::string_view rid);
std::string twin_patch_reported_topic(std::string_view rid);
// $iothub/methods/res/{status}/?$rid={rid}: a client's answer to a method request.
std::string method_response_topic(int status, std::string_view rid);

// $iothub/twin/res/{status}/?$rid={rid}
std::string twin_response_topic(int status, std::string_view rid);
// $iothub/twin/PATCH/properties/desired/?$version={version}
std::string twin_desired_patch_topic(long long version);
// $iothub/methods/POST/{method}/?$rid={rid}
std::string method_request_topic(std::string_view method, std::string_view rid);

// What the cloud publishes to a device or module: the device side of the same surface, used
// where cairn is the client (the upstream link, the benchmarks).
struct CloudTopic {
  enum class Kind {
    twin_response,   // $iothub/twin/res/{status}/?$rid={rid}[&$version=...]
    desired_patch,   // $iothub/twin/PATCH/properties/desired/?$version={version}
    method_request,  // $iothub/methods/POST/{method}/?$rid={rid}
  };
  Kind kind = Kind::twin_response;
  int status = 0;           // twin_response
  std::string rid;          // twin_response and method_request, verbatim ("" when absent)
  std::string method_name;  // method_request
  long long version = -1;   // desired_patch: the topic's $version, -1 when absent or not a number
};
// errc::invalid_argument for any other topic and for a status that is not an integer.
Result<CloudTopic> parse_cloud_topic(std::string_view topic);

// The filters a device subscribes to for twin responses and desired patches, and the one for
// method requests (subscribed only by a client that serves methods: IoT Hub answers a call to
// a device without it 404 DeviceNotOnline).
inline constexpr std::string_view kCloudTopicFilters[] = {
    "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"};
inline constexpr std::string_view kCloudMethodsFilter = "$iothub/methods/POST/#";

// What a SUBSCRIBE topic filter means to the hub (edgeHub SessionStateParser rules).
struct SubscriptionKind {
  enum class Kind { module_messages, c2d, twin_response, desired_updates, methods, unsupported };
  Kind kind = Kind::unsupported;
  std::string device_id;  // module_messages / c2d: from the filter
  std::string module_id;  // module_messages
};
SubscriptionKind classify_subscription(std::string_view filter);

}  // namespace cairn::iothub
