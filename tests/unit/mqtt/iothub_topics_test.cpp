#include "mqtt/iothub_topics.hpp"

#include <string>

#include <gtest/gtest.h>

namespace cairn::iothub {
namespace {

using Kind = InboundTopic::Kind;

std::string sys(const InboundTopic& t, std::string_view key) {
  auto v = t.system.get(key);
  return v ? std::string(*v) : "<absent>";
}
std::string app(const InboundTopic& t, std::string_view key) {
  auto v = t.app.get(key);
  return v ? std::string(*v) : "<absent>";
}

InboundTopic parse_ok(std::string_view topic) {
  auto r = parse_inbound_topic(topic);
  EXPECT_TRUE(r.ok()) << topic << ": " << (r.ok() ? "" : r.error().to_string());
  return r.ok() ? *r : InboundTopic{};
}

// ---- telemetry ----

TEST(ParseInboundTopic, ModuleOutputEventFromProtocolDoc) {
  constexpr std::string_view kTopic =
      "devices/dev1/modules/m1/messages/events/"
      "%24.on=alert&%24.ct=application%2Fjson&%24.ce=utf-8&myProp=x";
  // Without and with the trailing '/' the Node SDK adds after the bag.
  for (const std::string& topic : {std::string(kTopic), std::string(kTopic) + "/"}) {
    const InboundTopic t = parse_ok(topic);
    EXPECT_EQ(t.kind, Kind::telemetry);
    EXPECT_EQ(t.device_id, "dev1");
    EXPECT_EQ(t.module_id, "m1");
    EXPECT_EQ(sys(t, sysprop::kOutputName), "alert");
    EXPECT_EQ(sys(t, sysprop::kContentType), "application/json");
    EXPECT_EQ(sys(t, sysprop::kContentEncoding), "utf-8");
    EXPECT_EQ(t.system.size(), 3u);
    EXPECT_EQ(app(t, "myProp"), "x");
    EXPECT_EQ(t.app.size(), 1u);
    // Insertion order is the bag's order, so it re-encodes the same way.
    EXPECT_EQ(t.system.entries()[0].first, sysprop::kOutputName);
  }
}

TEST(ParseInboundTopic, ModuleEventWithoutBag) {
  for (const char* topic :
       {"devices/dev1/modules/m1/messages/events/", "devices/dev1/modules/m1/messages/events"}) {
    const InboundTopic t = parse_ok(topic);
    EXPECT_EQ(t.kind, Kind::telemetry);
    EXPECT_EQ(t.device_id, "dev1");
    EXPECT_EQ(t.module_id, "m1");
    EXPECT_TRUE(t.system.empty());
    EXPECT_TRUE(t.app.empty());
  }
}

TEST(ParseInboundTopic, OutputOnlyWithTrailingSlashAsNodeSdkSendsIt) {
  const InboundTopic t = parse_ok("devices/edge1/modules/filter/messages/events/%24.on=output1/");
  EXPECT_EQ(t.module_id, "filter");
  EXPECT_EQ(sys(t, sysprop::kOutputName), "output1");
  EXPECT_TRUE(t.app.empty());
}

TEST(ParseInboundTopic, LeafDeviceTelemetry) {
  for (const char* topic : {"devices/leaf1/messages/events", "devices/leaf1/messages/events/"}) {
    const InboundTopic t = parse_ok(topic);
    EXPECT_EQ(t.kind, Kind::telemetry);
    EXPECT_EQ(t.device_id, "leaf1");
    EXPECT_EQ(t.module_id, "");
  }
  const InboundTopic t =
      parse_ok("devices/leaf1/messages/events/%24.mid=42&%24.cid=c-7&temperature=21.5&alert");
  EXPECT_EQ(t.device_id, "leaf1");
  EXPECT_TRUE(t.module_id.empty());
  EXPECT_EQ(sys(t, sysprop::kMessageId), "42");
  EXPECT_EQ(sys(t, sysprop::kCorrelationId), "c-7");
  EXPECT_EQ(app(t, "temperature"), "21.5");
  EXPECT_EQ(app(t, "alert"), "");  // a key without '=' is an empty-valued property
}

TEST(ParseInboundTopic, EveryInboundSystemPropertyWireName) {
  const InboundTopic t = parse_ok(
      "devices/d/modules/m/messages/events/"
      "%24.mid=1&%24.cid=2&%24.to=%2Fdevices%2Fd&%24.uid=u&%24.ct=text%2Fplain&%24.ce=utf-8"
      "&%24.exp=2030-01-01T00%3A00%3A00Z&%24.schema=s1&%24.ctime=2024-05-01T10%3A00%3A00Z"
      "&%24.on=o&%24.ifid=urn%3Aif&%24.sub=comp1&iothub-operation=op&ack=full");
  EXPECT_EQ(sys(t, sysprop::kMessageId), "1");
  EXPECT_EQ(sys(t, sysprop::kCorrelationId), "2");
  EXPECT_EQ(sys(t, sysprop::kTo), "/devices/d");
  EXPECT_EQ(sys(t, sysprop::kUserId), "u");
  EXPECT_EQ(sys(t, sysprop::kContentType), "text/plain");
  EXPECT_EQ(sys(t, sysprop::kContentEncoding), "utf-8");
  EXPECT_EQ(sys(t, sysprop::kExpiryTime), "2030-01-01T00:00:00Z");
  EXPECT_EQ(sys(t, sysprop::kMessageSchema), "s1");
  EXPECT_EQ(sys(t, sysprop::kCreationTime), "2024-05-01T10:00:00Z");
  EXPECT_EQ(sys(t, sysprop::kOutputName), "o");
  EXPECT_EQ(sys(t, sysprop::kInterfaceId), "urn:if");
  EXPECT_EQ(sys(t, sysprop::kComponent), "comp1");
  EXPECT_EQ(sys(t, sysprop::kOperation), "op");
  EXPECT_EQ(sys(t, sysprop::kAck), "full");
  EXPECT_EQ(t.system.size(), 14u);
  EXPECT_TRUE(t.app.empty());
}

TEST(ParseInboundTopic, UnencodedDollarKeysAreAcceptedToo) {
  const InboundTopic t = parse_ok("devices/d/modules/m/messages/events/$.on=out&$.mid=9");
  EXPECT_EQ(sys(t, sysprop::kOutputName), "out");
  EXPECT_EQ(sys(t, sysprop::kMessageId), "9");
}

TEST(ParseInboundTopic, SenderIdentityCannotBeSetFromTheTopic) {
  const InboundTopic t =
      parse_ok("devices/d/modules/m/messages/events/%24.cdid=other&%24.cmid=spoof&k=v");
  EXPECT_FALSE(t.system.get(sysprop::kConnectionDeviceId));
  EXPECT_FALSE(t.system.get(sysprop::kConnectionModuleId));
  EXPECT_EQ(app(t, "k"), "v");
}

TEST(ParseInboundTopic, UnknownDollarKeysAreApplicationProperties) {
  const InboundTopic t = parse_ok("devices/d/messages/events/%24.foo=1&%24.MID=2");
  EXPECT_EQ(app(t, "$.foo"), "1");
  EXPECT_EQ(app(t, "$.MID"), "2");  // wire names are case-sensitive
  EXPECT_TRUE(t.system.empty());
}

// ---- twin and methods ----

TEST(ParseInboundTopic, TwinGetWithRid) {
  const InboundTopic t = parse_ok("$iothub/twin/GET/?$rid=f47ac10b-58cc-4372-a567-0e02b2c3d479");
  EXPECT_EQ(t.kind, Kind::twin_get);
  EXPECT_EQ(t.rid, "f47ac10b-58cc-4372-a567-0e02b2c3d479");
  EXPECT_TRUE(t.device_id.empty());
}

TEST(ParseInboundTopic, RidIsOpaqueAndVerbatim) {
  EXPECT_EQ(parse_ok("$iothub/twin/GET/?$rid=a%20b+c").rid, "a%20b+c");
  EXPECT_EQ(parse_ok("$iothub/twin/GET/?x=1&$rid=7").rid, "7");
}

TEST(ParseInboundTopic, TwinPatchReported) {
  InboundTopic t = parse_ok("$iothub/twin/PATCH/properties/reported/?$rid=42");
  EXPECT_EQ(t.kind, Kind::twin_patch_reported);
  EXPECT_EQ(t.rid, "42");
  t = parse_ok("$iothub/twin/PATCH/properties/reported/?$rid=43&$version=5");
  EXPECT_EQ(t.kind, Kind::twin_patch_reported);
  EXPECT_EQ(t.rid, "43");
  // Only GET needs a $rid; a patch without one is fire-and-forget.
  t = parse_ok("$iothub/twin/PATCH/properties/reported/");
  EXPECT_EQ(t.kind, Kind::twin_patch_reported);
  EXPECT_EQ(t.rid, "");
}

TEST(ParseInboundTopic, MethodResponse) {
  InboundTopic t = parse_ok("$iothub/methods/res/200/?$rid=1");
  EXPECT_EQ(t.kind, Kind::method_response);
  EXPECT_EQ(t.status, 200);
  EXPECT_EQ(t.rid, "1");
  t = parse_ok("$iothub/methods/res/-3/?$rid=0b2c6f1e-guid");
  EXPECT_EQ(t.status, -3);
  EXPECT_EQ(t.rid, "0b2c6f1e-guid");
}

TEST(ParseInboundTopic, RejectsTopicsOutsideTheSurface) {
  for (const char* topic : {
           "",
           "foo/bar",
           "devices",
           "devices/",
           "devices/dev1",
           "devices//messages/events",
           "devices/d/modules//messages/events",
           "devices/d/modules/m",
           "devices/d/messages/eventsX",
           "devices/d/messages/devicebound",
           "devices/d/modules/m/inputs/in1/",
           "devices/d/modules/m/messages/events/a=1/b=2/",
           "devices/d/modules/m/messages/events/a=1//",
           "devices/d/messages/events/%zz=1",
           "devices/d/messages/events/k=%4",
           "devices/d/messages/events/=v",
           "$iothub/twin/GET/",
           "$iothub/twin/GET/?$rid=",
           "$iothub/twin/GET/?foo=1",
           "$iothub/twin/GET",
           "$iothub/twin/GETX/?$rid=1",
           "$iothub/twin/GET/x?$rid=1",
           "$iothub/twin/PATCH/properties/desired/?$rid=1",
           "$iothub/twin/res/200/?$rid=1",
           "$iothub/methods/res/abc/?$rid=1",
           "$iothub/methods/res/200x/?$rid=1",
           "$iothub/methods/res/99999999999/?$rid=1",
           "$iothub/methods/res//?$rid=1",
           "$iothub/methods/res/200/?$rid=",
           "$iothub/methods/res/200/",
           "$iothub/methods/res/200",
           "$iothub/methods/POST/reboot/?$rid=1",
       }) {
    auto r = parse_inbound_topic(topic);
    EXPECT_FALSE(r.ok()) << "accepted '" << topic << "'";
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, errc::invalid_argument) << topic;
    }
  }
}

// ---- property bags ----

TEST(PropertyBag, EncodesOutboundSystemThenApplication) {
  Properties system;
  system.set(std::string(sysprop::kMessageId), "m-1");
  system.set(std::string(sysprop::kOutputName), "out");     // inbound only: not sent back
  system.set(std::string(sysprop::kInterfaceId), "urn:x");  // inbound only
  system.set(std::string(sysprop::kEnqueuedTime), "2024");  // no wire name
  system.set(std::string(sysprop::kConnectionDeviceId), "TestEdgeDevice");
  system.set(std::string(sysprop::kConnectionModuleId), "SenderModule");
  system.set(std::string(sysprop::kContentType), "application/json");
  Properties app;
  app.set("temp", "21 C");
  app.set("empty", "");
  app.set("a&b", "c=d");
  EXPECT_EQ(encode_property_bag(system, app),
            "%24.mid=m-1&%24.cdid=TestEdgeDevice&%24.cmid=SenderModule"
            "&%24.ct=application%2Fjson&temp=21%20C&empty=&a%26b=c%3Dd");
  EXPECT_EQ(encode_property_bag({}, {}), "");
  EXPECT_EQ(encode_property_bag(Properties{}, app), "temp=21%20C&empty=&a%26b=c%3Dd");
}

TEST(PropertyBag, RoundTrips) {
  Properties system;
  system.set(std::string(sysprop::kMessageId), "id with spaces/and?marks");
  system.set(std::string(sysprop::kCorrelationId), "c");
  system.set(std::string(sysprop::kExpiryTime), "2030-01-01T00:00:00Z");
  system.set(std::string(sysprop::kAck), "full");
  system.set(std::string(sysprop::kConnectionModuleId), "m");
  Properties app;
  app.set("k=1", "v&2");
  app.set("unicode", "日本");
  app.set("plus", "a+b");
  Properties sys_back;
  Properties app_back;
  ASSERT_TRUE(decode_property_bag(encode_property_bag(system, app), sys_back, app_back).ok());
  EXPECT_EQ(sys_back, system);
  EXPECT_EQ(app_back, app);
}

TEST(PropertyBag, DecodeDetails) {
  Properties system;
  Properties app;
  ASSERT_TRUE(decode_property_bag("a=1&&b=2&", system, app).ok());
  EXPECT_EQ(app.size(), 2u);
  ASSERT_TRUE(decode_property_bag("p=a+b&q=x%2By", system, app).ok());
  EXPECT_EQ(*app.get("p"), "a+b");  // '+' is not a space in topic bags
  EXPECT_EQ(*app.get("q"), "x+y");
  ASSERT_TRUE(decode_property_bag("", system, app).ok());
  EXPECT_FALSE(decode_property_bag("%GG=1", system, app).ok());
  EXPECT_FALSE(decode_property_bag("k=%", system, app).ok());
  EXPECT_FALSE(decode_property_bag("=v", system, app).ok());
}

// ---- outbound topics ----

TEST(OutboundTopics, ModuleInputFromProtocolDoc) {
  Message m;
  m.body = "{}";
  m.system.set(std::string(sysprop::kConnectionDeviceId), "TestEdgeDevice");
  m.system.set(std::string(sysprop::kConnectionModuleId), "SenderModule");
  m.system.set(std::string(sysprop::kInputName), "TestInput");  // carried by the topic itself
  EXPECT_EQ(module_input_topic("TestEdgeDevice", "TestModule", "TestInput", m),
            "devices/TestEdgeDevice/modules/TestModule/inputs/TestInput/"
            "%24.cdid=TestEdgeDevice&%24.cmid=SenderModule");
}

TEST(OutboundTopics, ModuleInputWithEmptyBagKeepsTrailingSlash) {
  EXPECT_EQ(module_input_topic("d", "m", "in1", Message{}), "devices/d/modules/m/inputs/in1/");
}

TEST(OutboundTopics, ModuleInputIsSegmentedAsTheNodeSdkExpects) {
  Message m;
  m.app.set("k", "a/b");
  const std::string topic = module_input_topic("d", "m", "in1", m);
  // Node takes the input name from segment 5 and the bag from segment 6: no raw '/' in the bag.
  EXPECT_EQ(topic, "devices/d/modules/m/inputs/in1/k=a%2Fb");
}

TEST(ParseCloudTopic, ReadsWhatTheHubsOwnTopicBuildersWrite) {
  auto res = parse_cloud_topic(twin_response_topic(204, "a%20b") + "&$version=5");
  ASSERT_TRUE(res.ok()) << res.error().to_string();
  EXPECT_EQ(res->kind, CloudTopic::Kind::twin_response);
  EXPECT_EQ(res->status, 204);
  EXPECT_EQ(res->rid, "a%20b");

  auto desired = parse_cloud_topic(twin_desired_patch_topic(7));
  ASSERT_TRUE(desired.ok());
  EXPECT_EQ(desired->kind, CloudTopic::Kind::desired_patch);

  auto method = parse_cloud_topic(method_request_topic("reboot", "0b2c6f1e"));
  ASSERT_TRUE(method.ok());
  EXPECT_EQ(method->kind, CloudTopic::Kind::method_request);
  EXPECT_EQ(method->method_name, "reboot");
  EXPECT_EQ(method->rid, "0b2c6f1e");
}

TEST(ParseCloudTopic, RefusesOtherTopicsAndBadStatuses) {
  for (const char* topic :
       {"$iothub/twin/res/2x0/?$rid=1", "$iothub/twin/res/?$rid=1", "$iothub/methods/POST//?$rid=1",
        "$iothub/twin/GET/?$rid=1", "devices/d/messages/devicebound/x"}) {
    auto t = parse_cloud_topic(topic);
    ASSERT_FALSE(t.ok()) << topic;
    EXPECT_EQ(t.error().code, errc::invalid_argument) << topic;
  }
}

TEST(OutboundTopics, TwinAndMethodTopics) {
  EXPECT_EQ(twin_response_topic(200, "f47ac10b"), "$iothub/twin/res/200/?$rid=f47ac10b");
  EXPECT_EQ(twin_response_topic(204, "7"), "$iothub/twin/res/204/?$rid=7");
  EXPECT_EQ(twin_response_topic(400, "a%20b"), "$iothub/twin/res/400/?$rid=a%20b");
  EXPECT_EQ(twin_desired_patch_topic(7), "$iothub/twin/PATCH/properties/desired/?$version=7");
  EXPECT_EQ(twin_desired_patch_topic(1234567890123LL),
            "$iothub/twin/PATCH/properties/desired/?$version=1234567890123");
  EXPECT_EQ(method_request_topic("reboot", "0b2c6f1e"),
            "$iothub/methods/POST/reboot/?$rid=0b2c6f1e");
}

TEST(OutboundTopics, ResponsesMatchTheSubscriptionsClientsMake) {
  // What a client echoes back parses to what the hub sent.
  const InboundTopic t = parse_ok("$iothub/methods/res/200/?$rid=0b2c6f1e");
  EXPECT_EQ(method_request_topic("reboot", t.rid), "$iothub/methods/POST/reboot/?$rid=0b2c6f1e");
}

// ---- subscriptions ----

TEST(ClassifySubscription, EdgeHubSessionStateParserRules) {
  using SK = SubscriptionKind::Kind;
  struct Case {
    const char* filter;
    SK kind;
    const char* device;
    const char* module;
  };
  const Case cases[] = {
      {"$iothub/methods/POST/#", SK::methods, "", ""},
      {"$iothub/methods/POST/reboot/#", SK::methods, "", ""},
      {"$iothub/twin/PATCH/properties/desired/#", SK::desired_updates, "", ""},
      {"$iothub/twin/PATCH/properties/desired/?$version=1", SK::desired_updates, "", ""},
      {"devices/leaf1/messages/devicebound/#", SK::c2d, "leaf1", ""},
      {"something/messages/devicebound/#", SK::c2d, "", ""},
      {"$iothub/twin/res/#", SK::twin_response, "", ""},
      {"devices/edge1/modules/filter/#", SK::module_messages, "edge1", "filter"},
      {"devices/e/modules/m/inputs/#", SK::module_messages, "e", "m/inputs"},
      {"devices/e/modules//#", SK::unsupported, "", ""},
      {"devices//modules/m/#", SK::unsupported, "", ""},
      {"devices/e/modules/m", SK::unsupported, "", ""},
      {"devices/e/modules/m/+", SK::unsupported, "", ""},
      {"$iothub/twin/res/200", SK::unsupported, "", ""},
      {"$iothub/twin/#", SK::unsupported, "", ""},
      {"$iothub/methods/#", SK::unsupported, "", ""},
      {"#", SK::unsupported, "", ""},
      {"devices/leaf1/messages/events/#", SK::unsupported, "", ""},
      {"", SK::unsupported, "", ""},
  };
  for (const auto& c : cases) {
    const SubscriptionKind s = classify_subscription(c.filter);
    EXPECT_EQ(s.kind, c.kind) << c.filter;
    EXPECT_EQ(s.device_id, c.device) << c.filter;
    EXPECT_EQ(s.module_id, c.module) << c.filter;
  }
}

// ---- the module (client) side

TEST(ModuleOutputTopic, OutputFirstThenSystemThenAppProperties) {
  Message m;
  m.system.set(std::string(sysprop::kContentType), "application/json");
  m.system.set(std::string(sysprop::kMessageId), "id 1");
  m.app.set("anomaly", "true");
  const std::string topic = module_output_topic("edge1", "sensor", "temperatureOutput", m);
  EXPECT_EQ(topic,
            "devices/edge1/modules/sensor/messages/events/"
            "%24.on=temperatureOutput&%24.ct=application%2Fjson&%24.mid=id%201&anomaly=true/");
  // The hub's parser reads back what the module wrote.
  auto parsed = parse_inbound_topic(topic);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(sys(*parsed, sysprop::kOutputName), "temperatureOutput");
  EXPECT_EQ(sys(*parsed, sysprop::kMessageId), "id 1");
  EXPECT_EQ(app(*parsed, "anomaly"), "true");
}

TEST(UpstreamEventsTopic, TheDedupeKeyGoesLastAndReplacesTheModulesOwn) {
  Message m;
  m.system.set("connectionDeviceId", "edge1");
  m.system.set("connectionModuleId", "sensor");
  m.system.set("enqueuedTime", "2026-12-03T07:26:08.123Z");
  m.system.set("messageId", "own-1");
  m.app.set("cairn-dedupe-key", "forged");
  m.app.set("alert", "high");
  const std::string topic = upstream_events_topic(m, "edge1", "0a1b.0.7.20261203072608123");
  EXPECT_EQ(topic,
            "devices/edge1/modules/sensor/messages/events/%24.mid=own-1&alert=high&"
            "cairn-dedupe-key=0a1b.0.7.20261203072608123");
  // What the cloud reads back: the module's message id unchanged, the link's key.
  auto parsed = parse_ok(topic);
  EXPECT_EQ(sys(parsed, "messageId"), "own-1");
  EXPECT_EQ(app(parsed, kDedupeKeyProperty), "0a1b.0.7.20261203072608123");
  // Without a key the bag is the message's own.
  EXPECT_EQ(upstream_events_topic(m, "edge1"),
            "devices/edge1/modules/sensor/messages/events/%24.mid=own-1&"
            "cairn-dedupe-key=forged&alert=high");
  Message bare;
  EXPECT_EQ(upstream_events_topic(bare, "edge1", "k"),
            "devices/edge1/messages/events/cairn-dedupe-key=k");
}

TEST(ModuleInputTopic, ParsesWhatTheHubSends) {
  Message m;
  m.system.set(std::string(sysprop::kConnectionDeviceId), "edge1");
  m.system.set(std::string(sysprop::kConnectionModuleId), "sensor");
  m.system.set(std::string(sysprop::kCorrelationId), "c/1");
  m.app.set("k", "v&w");
  auto t = parse_module_input_topic(module_input_topic("edge1", "filter", "input1", m));
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->device_id, "edge1");
  EXPECT_EQ(t->module_id, "filter");
  EXPECT_EQ(t->input, "input1");
  EXPECT_EQ(t->system.get(sysprop::kConnectionModuleId), std::optional<std::string_view>("sensor"));
  EXPECT_EQ(t->system.get(sysprop::kCorrelationId), std::optional<std::string_view>("c/1"));
  EXPECT_EQ(t->app.get("k"), std::optional<std::string_view>("v&w"));
}

TEST(ModuleInputTopic, BareInputAndRefusals) {
  auto bare = parse_module_input_topic("devices/d/modules/m/inputs/in");
  ASSERT_TRUE(bare) << bare.error().message;
  EXPECT_EQ(bare->input, "in");
  EXPECT_TRUE(bare->system.empty() && bare->app.empty());
  for (const char* bad : {"devices/d/modules/m/inputs/", "devices/d/modules/m/outputs/x/",
                          "devices/d/inputs/x/", "devices/d/modules/m/inputs/in/a=1/b=2",
                          "devices/d/modules/m/inputs/in/%zz=1", "$iothub/twin/res/200/?$rid=1"}) {
    auto t = parse_module_input_topic(bad);
    EXPECT_FALSE(t) << bad;
    if (!t) {
      EXPECT_EQ(t.error().code, errc::invalid_argument);
    }
  }
}

TEST(ClientRequestTopics, TwinAndMethodAnswersParseOnTheHubSide) {
  auto get = parse_inbound_topic(twin_get_topic("7"));
  ASSERT_TRUE(get);
  EXPECT_EQ(get->kind, Kind::twin_get);
  EXPECT_EQ(get->rid, "7");
  auto patch = parse_inbound_topic(twin_patch_reported_topic("8"));
  ASSERT_TRUE(patch);
  EXPECT_EQ(patch->kind, Kind::twin_patch_reported);
  EXPECT_EQ(patch->rid, "8");
  auto res = parse_inbound_topic(method_response_topic(413, "abc"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->kind, Kind::method_response);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(res->rid, "abc");
}

TEST(CloudTopicVersion, DesiredPatchCarriesItsVersion) {
  auto t = parse_cloud_topic(twin_desired_patch_topic(42));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, CloudTopic::Kind::desired_patch);
  EXPECT_EQ(t->version, 42);
  auto none = parse_cloud_topic("$iothub/twin/PATCH/properties/desired/?$version=x");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->version, -1);
}

}  // namespace
}  // namespace cairn::iothub
