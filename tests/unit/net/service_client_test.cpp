#include "net/service_client.hpp"

#include <gtest/gtest.h>

namespace cairn::net {
namespace {

TEST(ConnectionString, SplitsFieldsAtTheFirstEqualsAndTrimsBlanks) {
  auto fields = parse_connection_string(
      " HostName=hub.example;SharedAccessKeyName=iothubowner; SharedAccessKey=a2V5==\n");
  EXPECT_EQ(fields.size(), 3u);
  EXPECT_EQ(fields["HostName"], "hub.example");
  EXPECT_EQ(fields["SharedAccessKeyName"], "iothubowner");
  EXPECT_EQ(fields["SharedAccessKey"], "a2V5==");
  EXPECT_TRUE(parse_connection_string("").empty());
  EXPECT_TRUE(parse_connection_string("no-equals;;").empty());
}

TEST(ServiceClient, TakesTheHostPolicyAndKey) {
  auto c = ServiceClient::from_connection_string(
      "HostName=127.0.0.2;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->host, "127.0.0.2");
  EXPECT_EQ(c->policy, "iothubowner");
  EXPECT_EQ(c->key, "a2V5");
  EXPECT_EQ(c->server.host, "127.0.0.2");
  EXPECT_EQ(c->server.port, 443);
}

TEST(ServiceClient, NamesTheMissingField) {
  auto c = ServiceClient::from_connection_string("HostName=h;SharedAccessKey=a2V5");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, errc::invalid_argument);
  EXPECT_NE(c.error().message.find("SharedAccessKeyName"), std::string::npos);
}

TEST(ServiceClient, AnUnreachableServerIsAnError) {
  auto c = ServiceClient::from_connection_string(
      "HostName=127.0.0.1;SharedAccessKeyName=p;SharedAccessKey=a2V5");
  ASSERT_TRUE(c.ok());
  c->server.port = 1;  // nothing listens there
  auto r = c->request("GET", "/devices", {}, 5);
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace cairn::net
