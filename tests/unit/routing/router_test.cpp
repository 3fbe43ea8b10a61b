// Router: per-endpoint deduplication keeping the highest priority and its TTL.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "routing/route.hpp"

namespace cairn::routing {
namespace {

Message from_module(std::string module, std::string output = {}) {
  Message m;
  m.system.set("connectionDeviceId", "edge1");
  m.system.set("connectionModuleId", std::move(module));
  if (!output.empty()) m.system.set("outputName", std::move(output));
  return m;
}

Router make(const std::vector<RouteSpec>& specs) {
  auto r = Router::create(specs);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? std::move(*r) : Router();
}

const std::string kUp = "FROM /messages/* INTO $upstream";

TEST(Router, EmptyRouterMatchesNothing) {
  Router r;
  EXPECT_TRUE(r.route(from_module("m")).empty());
  EXPECT_TRUE(make({}).route(from_module("m")).empty());
}

TEST(Router, KeepsHighestPriorityAndItsTtl) {
  auto router = make({{"low", kUp, 5, 100}, {"high", kUp, 1, 200}, {"mid", kUp, 3, 300}});
  auto matches = router.route(from_module("m"));
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].endpoint.id(), "$upstream");
  EXPECT_EQ(matches[0].priority, 1);
  EXPECT_EQ(matches[0].ttl_secs, 200u);
}

TEST(Router, StringRouteHasLowestPriority) {
  auto router = make({{"plain", kUp, kDefaultPriority, 0}, {"pri", kUp, 9, 60}});
  auto matches = router.route(from_module("m"));
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].priority, 9);
  EXPECT_EQ(matches[0].ttl_secs, 60u);
}

TEST(Router, TieKeepsFirstRoute) {
  auto router = make({{"a", kUp, 2, 10}, {"b", kUp, 2, 20}});
  auto matches = router.route(from_module("m"));
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].ttl_secs, 10u);
}

TEST(Router, NonMatchingConditionDoesNotCount) {
  auto router = make({{"a", "FROM /messages/* WHERE $outputName = 'alerts' INTO $upstream", 0, 1},
                      {"b", kUp, 5, 2}});
  auto normal = router.route(from_module("m", "data"));
  ASSERT_EQ(normal.size(), 1u);
  EXPECT_EQ(normal[0].priority, 5);
  EXPECT_EQ(normal[0].ttl_secs, 2u);
  auto alert = router.route(from_module("m", "alerts"));
  ASSERT_EQ(alert.size(), 1u);
  EXPECT_EQ(alert[0].priority, 0);
  EXPECT_EQ(alert[0].ttl_secs, 1u);
}

TEST(Router, SeveralEndpointsInFirstMatchOrder) {
  auto router = make({
      {"to-f", "FROM /messages/modules/m/* INTO BrokeredEndpoint(\"/modules/f/inputs/in\")", 4, 0},
      {"up", kUp, kDefaultPriority, 0},
      {"to-f-again",
       "FROM /messages/modules/m/outputs/o INTO BrokeredEndpoint(\"/modules/f/inputs/in\")", 1, 7},
      {"to-g", "FROM /messages/modules/m/outputs/o INTO BrokeredEndpoint(\"/modules/g/inputs/in\")",
       2, 0},
      {"other", "FROM /messages/modules/x/* INTO BrokeredEndpoint(\"/modules/h/inputs/in\")", 0, 0},
  });
  auto matches = router.route(from_module("m", "o"));
  ASSERT_EQ(matches.size(), 3u);
  EXPECT_EQ(matches[0].endpoint.id(), "f/in");
  EXPECT_EQ(matches[0].priority, 1);
  EXPECT_EQ(matches[0].ttl_secs, 7u);
  EXPECT_EQ(matches[1].endpoint.id(), "$upstream");
  EXPECT_EQ(matches[1].priority, kDefaultPriority);
  EXPECT_EQ(matches[2].endpoint.id(), "g/in");

  auto no_output = router.route(from_module("m"));
  ASSERT_EQ(no_output.size(), 2u);
  EXPECT_EQ(no_output[0].endpoint.id(), "f/in");
  EXPECT_EQ(no_output[0].priority, 4);
}

TEST(Router, EndpointsDifferByModuleCase) {
  // Module ids are case-sensitive in IoT Hub, so these are two queues.
  auto router = make({
      {"a", "FROM /* INTO BrokeredEndpoint(\"/modules/F/inputs/i\")", 1, 0},
      {"b", "FROM /* INTO BrokeredEndpoint(\"/modules/f/inputs/i\")", 1, 0},
  });
  EXPECT_EQ(router.route(from_module("m")).size(), 2u);
}

TEST(Router, LongSourceFallsBackToHeap) {
  const std::string module(300, 'm');
  auto router = make({{"r", "FROM /messages/modules/" + module + "/outputs/o INTO $upstream", 0, 0},
                      {"s", "FROM /messages/modules/" + module + "x/* INTO $upstream", 0, 0}});
  auto matches = router.route(from_module(module, "o"));
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].priority, 0);
  EXPECT_TRUE(router.route(from_module(module, "p")).empty());
}

TEST(Router, LeafAndTwinSources) {
  auto router = make({
      {"leaf", "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream", 3, 0},
      {"twin", "FROM /twinChangeNotifications INTO BrokeredEndpoint(\"/modules/t/inputs/twin\")", 0,
       0},
  });
  Message leaf;
  leaf.system.set("connectionDeviceId", "leaf1");
  auto l = router.route(leaf);
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].priority, 3);
  EXPECT_TRUE(router.route(from_module("m")).empty());
  Message twin = from_module("m");
  twin.system.set("messageType", "twinChangeNotification");
  auto t = router.route(twin);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].endpoint.id(), "t/twin");
}

TEST(Router, CreateRejectsBadRoutesAndDuplicateNames) {
  auto bad = Router::create({{"ok", kUp, 0, 0}, {"broken", "FROM /messages/* INTO nowhere", 0, 0}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find("route 'broken' column"), std::string::npos)
      << bad.error().message;

  auto dup = Router::create({{"same", kUp, 0, 0}, {"same", kUp, 1, 0}});
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().message.find("duplicate route name 'same'"), std::string::npos);
}

TEST(Router, RoutesAreKeptInOrder) {
  auto router = make({{"b", kUp, 0, 0}, {"a", kUp, 1, 0}});
  ASSERT_EQ(router.routes().size(), 2u);
  EXPECT_EQ(router.routes()[0].name(), "b");
  EXPECT_EQ(router.routes()[1].name(), "a");
}

}  // namespace
}  // namespace cairn::routing
