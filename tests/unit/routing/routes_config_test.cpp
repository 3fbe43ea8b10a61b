// parse_routes_config: schema versions, string and object routes, field validation.
#include "routing/routes_config.hpp"

#include <string>

#include <gtest/gtest.h>

namespace cairn::routing {
namespace {

using Json = nlohmann::json;

const char* kUpstreamRoute = "FROM /messages/* INTO $upstream";

TEST(RoutesConfig, StringRoutesInEveryVersion) {
  for (const char* version : {"1.0", "1.1", "1.2", "1.3"}) {
    auto specs =
        parse_routes_config(Json{{"up", kUpstreamRoute}, {"b", "FROM /* INTO $upstream"}}, version);
    ASSERT_TRUE(specs.ok()) << version << ": " << specs.error().message;
    ASSERT_EQ(specs->size(), 2u);
    // nlohmann::json orders object keys.
    EXPECT_EQ((*specs)[0].name, "b");
    EXPECT_EQ((*specs)[1].name, "up");
    EXPECT_EQ((*specs)[1].text, kUpstreamRoute);
    EXPECT_EQ((*specs)[1].priority, kDefaultPriority);
    EXPECT_EQ((*specs)[1].ttl_secs, 0u);
  }
}

TEST(RoutesConfig, ObjectRoutes) {
  auto routes = Json::parse(R"({
    "up": "FROM /messages/* INTO $upstream",
    "alerts": {"route": "FROM /messages/modules/m1/outputs/alerts INTO $upstream",
               "priority": 0, "timeToLiveSecs": 86400},
    "max": {"route": "FROM /* INTO $upstream", "priority": 9, "timeToLiveSecs": 4294967295},
    "bare": {"route": "FROM /* INTO $upstream"},
    "ttl-only": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": 5}
  })");
  for (const char* version : {"1.1", "1.2", "1.3"}) {
    auto specs = parse_routes_config(routes, version);
    ASSERT_TRUE(specs.ok()) << specs.error().message;
    ASSERT_EQ(specs->size(), 5u);
    auto find = [&](std::string_view name) {
      for (const auto& s : *specs) {
        if (s.name == name) return s;
      }
      ADD_FAILURE() << name;
      return RouteSpec{};
    };
    EXPECT_EQ(find("alerts").priority, 0);
    EXPECT_EQ(find("alerts").ttl_secs, 86400u);
    EXPECT_EQ(find("alerts").text, "FROM /messages/modules/m1/outputs/alerts INTO $upstream");
    EXPECT_EQ(find("max").priority, 9);
    EXPECT_EQ(find("max").ttl_secs, 4294967295u);
    EXPECT_EQ(find("bare").priority, kDefaultPriority);
    EXPECT_EQ(find("bare").ttl_secs, 0u);
    EXPECT_EQ(find("ttl-only").priority, kDefaultPriority);
    EXPECT_EQ(find("ttl-only").ttl_secs, 5u);
    EXPECT_EQ(find("up").priority, kDefaultPriority);
  }
}

TEST(RoutesConfig, EmptyRoutes) {
  auto specs = parse_routes_config(Json::object(), "1.1");
  ASSERT_TRUE(specs.ok());
  EXPECT_TRUE(specs->empty());
}

TEST(RoutesConfig, AcceptedNames) {
  for (const char* name : {"a", "route-1", "Route_2", "r\u00e9", "a:b", "x/y"}) {
    auto specs = parse_routes_config(Json{{name, kUpstreamRoute}}, "1.0");
    EXPECT_TRUE(specs.ok()) << name << ": " << (specs.ok() ? "" : specs.error().message);
  }
}

struct BadRow {
  const char* routes_json;
  const char* version;
  const char* message;  // substring
};

TEST(RoutesConfig, Rejects) {
  const BadRow rows[] = {
      {R"({"up": "FROM /* INTO $upstream"})", "2.0", "unsupported $edgeHub schemaVersion '2.0'"},
      {R"({"up": "FROM /* INTO $upstream"})", "1.4", "schemaVersion '1.4'"},
      {R"({"up": "FROM /* INTO $upstream"})", "1", "schemaVersion '1'"},
      {R"({"up": "FROM /* INTO $upstream"})", "", "schemaVersion ''"},
      {R"({"up": "FROM /* INTO $upstream"})", "1.0.0", "schemaVersion '1.0.0'"},
      {R"({"up": "FROM /* INTO $upstream"})", " 1.1", "schemaVersion"},
      {R"(["FROM /* INTO $upstream"])", "1.1", "'routes' must be an object"},
      {R"("FROM /* INTO $upstream")", "1.1", "'routes' must be an object"},
      {R"({"up": {"route": "FROM /* INTO $upstream"}})", "1.0",
       "route 'up': routes with priority/timeToLiveSecs need schemaVersion 1.1"},
      {R"({"up": 5})", "1.0", "route 'up' must be a string"},
      {R"({"up": 5})", "1.1", "route 'up' must be a string or an object"},
      {R"({"up": null})", "1.1", "must be a string or an object"},
      {R"({"up": ["FROM /* INTO $upstream"]})", "1.1", "must be a string or an object"},
      {R"({"up": {"priority": 1}})", "1.1", "route 'up': missing 'route'"},
      {R"({"up": {"route": 5}})", "1.1", "'route' must be a string"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": 10}})", "1.1",
       "'priority' must be an integer 0-9"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": -1}})", "1.1", "'priority'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": 1.5}})", "1.1", "'priority'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": 1.0}})", "1.1", "'priority'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": "1"}})", "1.1", "'priority'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": null}})", "1.1", "'priority'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priority": 2000000000}})", "1.1",
       "'priority'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": -1}})", "1.1",
       "'timeToLiveSecs' must be an integer 0-4294967295"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": 4294967296}})", "1.1",
       "'timeToLiveSecs'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": 1.5}})", "1.1",
       "'timeToLiveSecs'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": "60"}})", "1.1",
       "'timeToLiveSecs'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "priorty": 1}})", "1.1",
       "route 'up': unknown field 'priorty'"},
      {R"({"up": {"route": "FROM /* INTO $upstream", "Priority": 1}})", "1.1",
       "unknown field 'Priority'"},
      {R"({"a.b": "FROM /* INTO $upstream"})", "1.1", "route name 'a.b' is invalid"},
      {R"({"$a": "FROM /* INTO $upstream"})", "1.1", "route name '$a' is invalid"},
      {R"({"a#": "FROM /* INTO $upstream"})", "1.1", "route name 'a#' is invalid"},
      {R"({"a b": "FROM /* INTO $upstream"})", "1.1", "route name 'a b' is invalid"},
      {R"({"": "FROM /* INTO $upstream"})", "1.1", "route name '' is invalid"},
      {R"({"ok": "FROM /* INTO $upstream", "bad": "FROM /* WHERE a = INTO $upstream"})", "1.1",
       "route 'bad' column 19: expected an expression, found 'INTO'"},
      {R"({"bad": {"route": "FROM /* INTO $nowhere", "priority": 1}})", "1.2",
       "route 'bad' column 14: unsupported endpoint '$nowhere'"},
  };
  for (const auto& row : rows) {
    auto specs = parse_routes_config(Json::parse(row.routes_json), row.version);
    ASSERT_FALSE(specs.ok()) << row.routes_json << " @" << row.version;
    EXPECT_EQ(specs.error().code, errc::invalid_argument);
    EXPECT_NE(specs.error().message.find(row.message), std::string::npos)
        << row.routes_json << " @" << row.version << "\n  got: " << specs.error().message;
  }
}

}  // namespace
}  // namespace cairn::routing
