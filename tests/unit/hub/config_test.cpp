#include "hub/config.hpp"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "hub/edgehub_config.hpp"

namespace cairn::hub {
namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(HubConfig, MissingFileGivesDefaults) {
  auto c = load_config("/h", "/nonexistent/config.toml");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->mqtt.tls_port, 8883);
  EXPECT_EQ(c->mqtt.plain_port, 0);
  EXPECT_EQ(c->mgmt_socket(), "/h/run/mgmt.sock");
  EXPECT_EQ(c->mqtt.max_delivery_attempts, 10u);
  EXPECT_EQ(c->mqtt.connect_timeout_secs, 10u);
  EXPECT_EQ(c->mqtt.max_connect_bytes, 8192u);
  EXPECT_EQ(c->mqtt.max_unauthenticated_connections, 100u);
  EXPECT_EQ(c->mqtt.max_unauthenticated_per_address, 16u);
  EXPECT_EQ(c->mqtt.max_subscriptions, 50u);
  EXPECT_EQ(c->mqtt.max_topic_filter_bytes, 1024u);
  EXPECT_EQ(c->mqtt.max_properties, 128u);
  EXPECT_EQ(c->mqtt.max_property_bytes, 32768u);
}

TEST(HubConfig, ReadsTheClientLimits) {
  auto c = load_config("/h", write_temp("limits.toml", R"([mqtt]
max_connect_bytes = 2048
max_unauthenticated_connections = 5
max_unauthenticated_per_address = 2
max_subscriptions = 3
max_topic_filter_bytes = 64
max_properties = 4
max_property_bytes = 100
)"));
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->mqtt.max_connect_bytes, 2048u);
  EXPECT_EQ(c->mqtt.max_unauthenticated_connections, 5u);
  EXPECT_EQ(c->mqtt.max_unauthenticated_per_address, 2u);
  EXPECT_EQ(c->mqtt.max_subscriptions, 3u);
  EXPECT_EQ(c->mqtt.max_topic_filter_bytes, 64u);
  EXPECT_EQ(c->mqtt.max_properties, 4u);
  EXPECT_EQ(c->mqtt.max_property_bytes, 100u);
  // A CONNECT needs room for its credentials; a peer needs at least one slot.
  EXPECT_FALSE(load_config("/h", write_temp("l1.toml", "[mqtt]\nmax_connect_bytes = 100\n")).ok());
  EXPECT_FALSE(
      load_config("/h", write_temp("l2.toml", "[mqtt]\nmax_unauthenticated_per_address = 0\n"))
          .ok());
  EXPECT_FALSE(
      load_config("/h", write_temp("l3.toml", "[mqtt]\nmax_topic_filter_bytes = 0\n")).ok());
}

TEST(HubConfig, ReadsEverySection) {
  auto path = write_temp("ok.toml", R"(device_id = "d1"
hostname = "gw"
[mqtt]
tls_port = 0
plain_port = 1883
max_inflight_in = 128
max_delivery_attempts = 3
[store]
fsync = false
max_bytes = 1000
append_delay_us = 0
)");
  auto c = load_config("/h", path);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->device_id, "d1");
  EXPECT_EQ(c->hostname, "gw");
  EXPECT_EQ(c->mqtt.tls_port, 0);
  EXPECT_EQ(c->mqtt.plain_port, 1883);
  EXPECT_EQ(c->mqtt.max_inflight_in, 128u);
  EXPECT_EQ(c->mqtt.max_delivery_attempts, 3u);
  EXPECT_FALSE(c->store.fsync);
  EXPECT_EQ(c->store.max_bytes, 1000u);
  EXPECT_EQ(c->store.append_delay_us, 0u);
}

TEST(HubConfig, UnknownKeyNamesFileLineAndKey) {
  auto path = write_temp("typo.toml", "device_id = \"d\"\n[mqtt]\ntls_prot = 1\n");
  auto c = load_config("/h", path);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find(path + ":3: 'mqtt.tls_prot' is not a known setting"),
            std::string::npos)
      << c.error().message;
}

TEST(HubConfig, WrongTypesAndRangesAreRejected) {
  EXPECT_FALSE(load_config("/h", write_temp("t1.toml", "[mqtt]\ntls_port = \"x\"\n")).ok());
  EXPECT_FALSE(load_config("/h", write_temp("t2.toml", "[mqtt]\ntls_port = 70000\n")).ok());
  EXPECT_FALSE(load_config("/h", write_temp("t3.toml", "device_id = \"a/b\"\n")).ok());
  EXPECT_FALSE(load_config("/h", write_temp("t4.toml", "device_id = \n")).ok());
  EXPECT_FALSE(load_config("/h", write_temp("t5.toml", "[mqtt]\nmax_inflight_in = 0\n")).ok());
  auto long_delay =
      load_config("/h", write_temp("t6.toml", "[store]\nappend_delay_us = 60000001\n"));
  ASSERT_FALSE(long_delay.ok());
  EXPECT_NE(long_delay.error().message.find("store.append_delay_us must be at most 60000000"),
            std::string::npos)
      << long_delay.error().message;
  EXPECT_FALSE(load_config("/h", write_temp("t7.toml", "[store]\nappend_delay_us = -1\n")).ok());
}

TEST(HubConfig, AgentDockerUri) {
  auto c =
      load_config("/h", write_temp("a1.toml", "[agent]\ndocker_uri = \"unix:///run/x.sock\"\n"));
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->agent.docker_uri, "unix:///run/x.sock");
  EXPECT_TRUE(load_config("/h", write_temp("a2.toml", "[agent]\ndocker_uri = \"none\"\n")).ok());
  EXPECT_EQ(load_config("/h", "/nonexistent/config.toml")->agent.docker_uri, "");
  // Only unix sockets: a tcp:// engine is refused with the key named, as is an unknown key.
  auto tcp = load_config("/h", write_temp("a3.toml", "[agent]\ndocker_uri = \"tcp://h:2375\"\n"));
  ASSERT_FALSE(tcp.ok());
  EXPECT_NE(tcp.error().message.find("agent.docker_uri"), std::string::npos);
  EXPECT_FALSE(load_config("/h", write_temp("a4.toml", "[agent]\ndocker = \"/x\"\n")).ok());
}

TEST(EdgeHubDesired, ParsesRoutesAndStoreAndForward) {
  auto j = nlohmann::json::parse(R"js({"schemaVersion":"1.1",
    "routes":{"a":"FROM /messages/* INTO $upstream",
              "b":{"route":"FROM /messages/modules/m/* INTO BrokeredEndpoint(\"/modules/n/inputs/i\")","priority":1,"timeToLiveSecs":5}},
    "storeAndForwardConfiguration":{"timeToLiveSecs":-1,"storeLimits":{"maxSizeBytes":100}}})js");
  auto c = parse_edgehub_desired(j);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->routes.size(), 2u);
  EXPECT_EQ(c->ttl_secs, -1);
  EXPECT_EQ(c->max_store_bytes, 100u);
}

TEST(EdgeHubDesired, BadInputIsRejectedWithContext) {
  EXPECT_FALSE(parse_edgehub_desired(nlohmann::json::parse(R"({"routes":{}})")).ok());
  auto bad_route = parse_edgehub_desired(
      nlohmann::json::parse(R"({"schemaVersion":"1.1","routes":{"r1":"FROM /messages INTO"}})"));
  ASSERT_FALSE(bad_route.ok());
  EXPECT_NE(bad_route.error().message.find("r1"), std::string::npos) << bad_route.error().message;
  EXPECT_FALSE(
      parse_edgehub_desired(
          nlohmann::json::parse(
              R"({"schemaVersion":"1.1","storeAndForwardConfiguration":{"timeToLiveSecs":"x"}})"))
          .ok());
}

TEST(EdgeHubDesired, ManifestFileShapes) {
  auto good = write_temp(
      "m.json",
      R"({"content":{"modulesContent":{"$edgeHub":{"properties.desired":{"schemaVersion":"1.0"}}}}})");
  ASSERT_TRUE(read_edgehub_desired(good).ok());
  auto not_json = write_temp("bad.json", "{");
  auto r = read_edgehub_desired(not_json);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(not_json), std::string::npos);
  EXPECT_FALSE(read_edgehub_desired(write_temp("nohub.json", R"({"modulesContent":{}})")).ok());
  EXPECT_FALSE(read_edgehub_desired("/nonexistent.json").ok());
}

}  // namespace
}  // namespace cairn::hub
