// The IoT Hub MQTT topic surface lives in the mqtt library (mqtt/iothub_topics.hpp), shared with
// the module SDK; the hub keeps using the names in its own namespace.
#pragma once

#include "mqtt/iothub_topics.hpp"

namespace cairn::hub {

using iothub::classify_subscription;
using iothub::CloudTopic;
using iothub::decode_property_bag;
using iothub::encode_property_bag;
using iothub::InboundTopic;
using iothub::kCloudMethodsFilter;
using iothub::kCloudTopicFilters;
using iothub::method_request_topic;
using iothub::module_input_topic;
using iothub::parse_cloud_topic;
using iothub::parse_inbound_topic;
using iothub::SubscriptionKind;
using iothub::twin_desired_patch_topic;
using iothub::twin_response_topic;
using iothub::upstream_events_topic;

}  // namespace cairn::hub
