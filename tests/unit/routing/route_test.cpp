// Route grammar: every accepted form, error columns and messages, FROM matching (the table in
// docs/protocol.md §2.2), message_source() and endpoints.
#include "routing/route.hpp"

#include <string>

#include <gtest/gtest.h>

namespace cairn::routing {
namespace {

Result<Route> parse(std::string_view text, std::string name = "r1") {
  RouteSpec spec;
  spec.name = std::move(name);
  spec.text = std::string(text);
  return Route::parse(spec);
}

struct ValidRow {
  const char* text;
  const char* source;
  const char* endpoint_id;
  bool has_condition;
};

TEST(RouteParse, ValidForms) {
  const ValidRow rows[] = {
      {"FROM /messages/* INTO $upstream", "/messages/", "$upstream", false},
      {"from /messages/* into $UPSTREAM", "/messages/", "$upstream", false},
      {"SELECT * FROM /messages/* INTO $upstream", "/messages/", "$upstream", false},
      {"select * from /messages INTO $upstream", "/messages/", "$upstream", false},
      {"SELECT*FROM /messages INTO $upstream", "/messages/", "$upstream", false},
      {"FROM /* INTO $upstream", "/", "$upstream", false},
      {"FROM /messages/modules/* INTO $upstream", "/messages/modules/", "$upstream", false},
      {"FROM /messages/modules/Sensor/* INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
       "/messages/modules/sensor/", "filter/input1", false},
      {"FROM /messages/modules/m INTO brokeredendpoint('/modules/f/inputs/i')",
       "/messages/modules/m/", "f/i", false},
      {"FROM /messages/modules/m/outputs/* INTO $upstream", "/messages/modules/m/outputs/",
       "$upstream", false},
      {"FROM /messages/modules/m/outputs/temp WHERE $body.t > 1 INTO "
       "BrokeredEndpoint('/modules/f/inputs/i')",
       "/messages/modules/m/outputs/temp/", "f/i", true},
      {"FROM /twinChangeNotifications INTO $upstream", "/twinchangenotifications/", "$upstream",
       false},
      {"  FROM   /messages/*   WHERE   a = 1   INTO   $upstream  ", "/messages/", "$upstream",
       true},
      {"FROM /messages/*\tWHERE\ta=1\nINTO\t$upstream", "/messages/", "$upstream", true},
      {"FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream", "/messages/",
       "$upstream", true},
      {"FROM /messages/* WHERE (a = 'INTO') INTO $upstream", "/messages/", "$upstream", true},
      {"FROM /messages/* WHERE a = \"x INTO y\" INTO $upstream", "/messages/", "$upstream", true},
      {"FROM /messages/* INTO BrokeredEndpoint ( \"modules/m/inputs/i\" )", "/messages/", "m/i",
       false},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/m/inputs/i/\")", "/messages/", "m/i",
       false},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/Modules/M1/Inputs/In\")", "/messages/", "M1/In",
       false},
      {"FROM /messages/modules/my-module.v2/outputs/out_1 INTO $upstream",
       "/messages/modules/my-module.v2/outputs/out_1/", "$upstream", false},
      {"FROM /messages/* WHERE $body.Weather.HistoricalData[0].Month = 'Feb' INTO $upstream",
       "/messages/", "$upstream", true},
      {"FROM /messages/* WHERE a=1 AND {$cid}<>'x'INTO $upstream", "/messages/", "$upstream", true},
      {"FROM /messages/* WHERE a = 1 /* INTO */ INTO $upstream", "/messages/", "$upstream", true},
  };
  for (const auto& row : rows) {
    auto r = parse(row.text);
    ASSERT_TRUE(r.ok()) << row.text << ": " << r.error().message;
    EXPECT_EQ(r->source(), row.source) << row.text;
    EXPECT_EQ(r->endpoint().id(), row.endpoint_id) << row.text;
    EXPECT_EQ(r->text(), row.text);
    EXPECT_EQ(r->name(), "r1");
    // A route without WHERE matches every message from its source.
    if (!row.has_condition) {
      Message m;
      EXPECT_EQ(r->matches(m, std::string(row.source)), true) << row.text;
    }
  }
}

struct RouteErrorRow {
  const char* text;
  std::size_t column;
  const char* message;
};

TEST(RouteParse, ErrorColumns) {
  const RouteErrorRow rows[] = {
      {"FROM /messages/* WHER a=1 INTO $upstream", 18, "expected WHERE or INTO, found 'WHER'"},
      {"", 1, "expected FROM, found end of input"},
      {"   ", 4, "expected FROM, found end of input"},
      {"FRM /messages INTO $upstream", 1, "expected FROM, found 'FRM'"},
      {"SELECT FROM /x INTO $upstream", 8, "expected '*' after SELECT, found 'FROM'"},
      {"SELECT * /x INTO $upstream", 10, "expected FROM, found '/'"},
      {"FROM messages INTO $upstream", 6, "expected a source path such as /messages/*"},
      {"FROM", 5, "expected a source path such as /messages/*, found end of input"},
      {"FROM / INTO $upstream", 7, "expected a path segment after '/', found ' '"},
      {"FROM /messages/ INTO $upstream", 16, "expected a path segment after '/'"},
      {"FROM /messages//x INTO $upstream", 16, "expected a path segment after '/', found '/'"},
      {"FROM /messages/*/outputs INTO $upstream", 17, "'*' must be the last segment"},
      {"FROM /messages/** INTO $upstream", 17, "unexpected '*' in the source path"},
      {"FROM /messages/mod* INTO $upstream", 19, "unexpected '*' in the source path"},
      {"FROM /messages/(x) INTO $upstream", 16, "expected a path segment after '/', found '('"},
      {"FROM /messages/*", 17, "expected WHERE or INTO, found end of input"},
      {"FROM /messages/* INTO", 22, "expected an endpoint"},
      {"FROM /messages/* INTO $local", 23, "unsupported endpoint '$local'"},
      {"FROM /messages/* INTO upstream", 23, "expected an endpoint ($upstream or"},
      {"FROM /messages/* INTO \"x\"", 23, "expected an endpoint"},
      {"FROM /messages/* INTO BrokeredEndpoint", 39, "expected '(' after BrokeredEndpoint"},
      {"FROM /messages/* INTO BrokeredEndpoint(/modules/m/inputs/i)", 40,
       "expected a quoted endpoint address, found '/'"},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/m/inputs/i\"", 61,
       "expected ')', found end of input"},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/m/outputs/i\")", 40,
       "must be \"/modules/<module>/inputs/<input>\""},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/m/inputs/i/x\")", 40,
       "must be \"/modules/<module>/inputs/<input>\""},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/modules//inputs/i\")", 40, "must be"},
      {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/m/inputs\")", 40, "must be"},
      {"FROM /messages/* INTO BrokeredEndpoint(\"\")", 40, "must be"},
      {"FROM /messages/* INTO BrokeredEndpoint('/modules/m/inputs/\\x')", 59, "invalid escape"},
      {"FROM /messages/* INTO Endpoint(\"/modules/m/inputs/i\")", 23, "expected an endpoint"},
      {"FROM /messages/* INTO $upstream extra", 33, "unexpected 'extra' after the endpoint"},
      {"FROM /messages/* INTO $upstream INTO $upstream", 33, "unexpected 'INTO'"},
      {"FROM /messages/* WHERE INTO $upstream", 24, "expected an expression, found 'INTO'"},
      {"FROM /messages/* WHERE a = INTO $upstream", 28, "expected an expression, found 'INTO'"},
      {"FROM /messages/* WHERE a = 1 $upstream", 30, "expected INTO, found '$upstream'"},
      {"FROM /messages/* WHERE a = 1", 29, "expected INTO, found end of input"},
      {"FROM /messages/* WHERE foo(1) INTO $upstream", 24, "unknown function 'foo'"},
      {"FROM /messages/* WHERE abs(1, 2) INTO $upstream", 24, "takes 1 argument, got 2"},
      {"FROM /messages/* WHERE a = 'x INTO $upstream", 28, "unterminated string"},
      {"FROM /messages/* WHERE a == 1 INTO $upstream", 27, "expected an expression, found '='"},
      {"FROM /messages/* WHERE WHERE a = 1 INTO $upstream", 24, "found 'WHERE'"},
  };
  for (const auto& row : rows) {
    auto r = parse(row.text);
    ASSERT_FALSE(r.ok()) << "accepted: " << row.text;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    const std::string want_prefix = "route 'r1' column " + std::to_string(row.column) + ": ";
    EXPECT_EQ(r.error().message.rfind(want_prefix, 0), 0u)
        << row.text << "\n  got: " << r.error().message;
    EXPECT_NE(r.error().message.find(row.message), std::string::npos)
        << row.text << "\n  got: " << r.error().message;
  }
}

TEST(RouteParse, ErrorMessageFormat) {
  auto r = parse("FROM /messages/* WHER a=1 INTO $upstream");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "route 'r1' column 18: expected WHERE or INTO, found 'WHER' in: "
            "FROM /messages/* WHER a=1 INTO $upstream");
}

TEST(RouteParse, PriorityAndTtl) {
  RouteSpec spec{"r", "FROM /messages/* INTO $upstream", 3, 86400};
  auto r = Route::parse(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->priority(), 3);
  EXPECT_EQ(r->ttl_secs(), 86400u);
  for (std::int32_t p : {0, 9, kDefaultPriority}) {
    spec.priority = p;
    EXPECT_TRUE(Route::parse(spec).ok()) << p;
  }
  for (std::int32_t p : {-1, 10, kDefaultPriority - 1}) {
    spec.priority = p;
    auto bad = Route::parse(spec);
    ASSERT_FALSE(bad.ok()) << p;
    EXPECT_NE(bad.error().message.find("priority"), std::string::npos);
  }
}

TEST(RouteParse, LengthIsBounded) {
  std::string text =
      "FROM /messages/* WHERE a = '" + std::string(kMaxRouteTextBytes, 'x') + "' INTO $upstream";
  auto r = parse(text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("longer than"), std::string::npos);
  EXPECT_LT(r.error().message.size(), 200u);
}

TEST(RouteParse, DeepNestingIsAnError) {
  std::string text = "FROM /messages/* WHERE " + std::string(10000, '(') + "true" +
                     std::string(10000, ')') + " INTO $upstream";
  auto r = parse(text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("too deeply nested"), std::string::npos);
}

TEST(Endpoint, Ids) {
  Endpoint up;
  EXPECT_EQ(up.id(), "$upstream");
  Endpoint in{Endpoint::Kind::module_input, "filter", "input1"};
  EXPECT_EQ(in.id(), "filter/input1");
  EXPECT_NE(up, in);
  EXPECT_EQ(in, (Endpoint{Endpoint::Kind::module_input, "filter", "input1"}));
  Endpoint own{Endpoint::Kind::upstream, "", "edge1/sensor"};
  EXPECT_EQ(own.id(), "$upstream//edge1/sensor");
  EXPECT_NE(own, up);
}

TEST(Endpoint, FromIdGivesBackEveryId) {
  for (const Endpoint& e : {Endpoint{}, Endpoint{Endpoint::Kind::upstream, "", "edge1"},
                            Endpoint{Endpoint::Kind::upstream, "", "edge1/sensor"},
                            Endpoint{Endpoint::Kind::module_input, "filter", "input1"},
                            // A module named like the shared queue: still a module input.
                            Endpoint{Endpoint::Kind::module_input, "$upstream", "edge1"}}) {
    auto back = Endpoint::from_id(e.id());
    ASSERT_TRUE(back.has_value()) << e.id();
    EXPECT_EQ(*back, e) << e.id();
  }
  for (std::string_view bad : {"", "filter", "/input1", "filter/", "$upstream//"}) {
    EXPECT_FALSE(Endpoint::from_id(bad).has_value()) << bad;
  }
}

Message from(std::string_view module, std::string_view output = {}) {
  Message m;
  m.system.set("connectionDeviceId", "edge1");
  if (!module.empty()) m.system.set("connectionModuleId", std::string(module));
  if (!output.empty()) m.system.set("outputName", std::string(output));
  return m;
}

Message twin_change() {
  Message m;
  m.system.set("connectionDeviceId", "edge1");
  m.system.set("connectionModuleId", "m");
  m.system.set("messageType", "twinChangeNotification");
  return m;
}

TEST(MessageSource, Forms) {
  EXPECT_EQ(message_source(from("")), "/messages");
  EXPECT_EQ(message_source(from("m")), "/messages/modules/m");
  EXPECT_EQ(message_source(from("m", "o")), "/messages/modules/m/outputs/o");
  EXPECT_EQ(message_source(from("", "o")), "/messages");  // an output needs a module
  EXPECT_EQ(message_source(twin_change()), "/twinChangeNotifications");
  Message empty_module;
  empty_module.system.set("connectionModuleId", "");
  EXPECT_EQ(message_source(empty_module), "/messages");
  EXPECT_EQ(message_source(Message{}), "/messages");
}

// IoT Edge route sources. Columns: leaf, m (no output), m/o, m/o2, m2/o, M/O (other case), twin.
TEST(RouteMatch, FromTable) {
  const Message msgs[] = {from(""),        from("m"),      from("m", "o"), from("m", "o2"),
                          from("m2", "o"), from("M", "O"), twin_change()};
  struct SourceRow {
    const char* from;
    std::array<bool, 7> want;
  };
  const SourceRow rows[] = {
      {"/*", {true, true, true, true, true, true, true}},
      {"/messages/*", {true, true, true, true, true, true, false}},
      {"/messages", {true, true, true, true, true, true, false}},
      {"/messages/modules/*", {false, true, true, true, true, true, false}},
      {"/messages/modules", {false, true, true, true, true, true, false}},
      {"/messages/modules/m/*", {false, true, true, true, false, true, false}},
      {"/messages/modules/m", {false, true, true, true, false, true, false}},
      {"/messages/modules/M/*", {false, true, true, true, false, true, false}},
      {"/messages/modules/m/outputs/*", {false, false, true, true, false, true, false}},
      {"/messages/modules/m/outputs/o", {false, false, true, false, false, true, false}},
      {"/MESSAGES/MODULES/M/OUTPUTS/O", {false, false, true, false, false, true, false}},
      {"/messages/modules/m2/*", {false, false, false, false, true, false, false}},
      {"/twinChangeNotifications", {false, false, false, false, false, false, true}},
      {"/twinchangenotifications/*", {false, false, false, false, false, false, true}},
      {"/messages/modules/m/outputs/o/x", {false, false, false, false, false, false, false}},
  };
  for (const auto& row : rows) {
    auto r = parse(std::string("FROM ") + row.from + " INTO $upstream");
    ASSERT_TRUE(r.ok()) << row.from << ": " << r.error().message;
    for (std::size_t i = 0; i < std::size(msgs); ++i) {
      EXPECT_EQ(r->matches(msgs[i], message_source(msgs[i])), row.want[i])
          << "FROM " << row.from << " vs " << message_source(msgs[i]);
    }
  }
}

TEST(RouteMatch, SourceComparisonIgnoresCaseOnBothSides) {
  auto r = parse("FROM /messages/modules/Mod/* INTO $upstream");
  ASSERT_TRUE(r.ok());
  Message m;
  EXPECT_TRUE(r->matches(m, "/MESSAGES/modules/mOD/outputs/x"));
  EXPECT_TRUE(r->matches(m, "/messages/modules/mod"));
  EXPECT_FALSE(r->matches(m, "/messages/modules/mo"));
  EXPECT_FALSE(r->matches(m, "/messages/modules/modx"));
  EXPECT_FALSE(r->matches(m, ""));
}

TEST(RouteMatch, ConditionAppliesAfterSource) {
  auto r = parse("FROM /messages/modules/m/* WHERE $outputName = 'o' INTO $upstream");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->matches(from("m", "o"), message_source(from("m", "o"))));
  EXPECT_FALSE(r->matches(from("m", "o2"), message_source(from("m", "o2"))));
  EXPECT_FALSE(r->matches(from("m2", "o"), message_source(from("m2", "o"))));
}

TEST(RouteMatch, LeafDeviceFilter) {
  auto r = parse("FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->matches(from(""), message_source(from(""))));
  EXPECT_FALSE(r->matches(from("m"), message_source(from("m"))));
}

}  // namespace
}  // namespace cairn::routing
