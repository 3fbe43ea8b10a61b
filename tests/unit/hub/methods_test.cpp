#include "hub/methods.hpp"

#include <gtest/gtest.h>

namespace cairn::hub {
namespace {

using nlohmann::json;

TEST(ParseMethodRequest, AcceptsTheServiceShapeWithDefaults) {
  auto r = parse_method_request(json{{"methodName", "reboot"}, {"payload", {{"delay", 5}}}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->method_name, "reboot");
  EXPECT_EQ(r->payload, (json{{"delay", 5}}));
  EXPECT_EQ(r->response_timeout, kDefaultResponseTimeout);
  EXPECT_EQ(r->connect_timeout.count(), 0);
}

TEST(ParseMethodRequest, EnforcesIotHubLimitsAtTheirBoundaries) {
  auto with = [](json extra) {
    json body{{"methodName", "m"}};
    body.update(extra);
    return parse_method_request(body);
  };
  EXPECT_TRUE(with({{"responseTimeoutInSeconds", 5}}));
  EXPECT_TRUE(with({{"responseTimeoutInSeconds", 300}}));
  EXPECT_FALSE(with({{"responseTimeoutInSeconds", 4}}));
  EXPECT_FALSE(with({{"responseTimeoutInSeconds", 301}}));
  EXPECT_FALSE(with({{"responseTimeoutInSeconds", "30"}}));
  EXPECT_TRUE(with({{"connectTimeoutInSeconds", 300}}));
  EXPECT_FALSE(with({{"connectTimeoutInSeconds", -1}}));
  EXPECT_TRUE(parse_method_request(json{{"methodName", std::string(100, 'a')}}));
  EXPECT_FALSE(parse_method_request(json{{"methodName", std::string(101, 'a')}}));
  EXPECT_FALSE(parse_method_request(json{{"methodName", "a/b"}}));
  EXPECT_FALSE(parse_method_request(json{{"methodName", "a+"}}));
  EXPECT_FALSE(parse_method_request(json{{"methodName", ""}}));
  EXPECT_FALSE(parse_method_request(json{{"payload", 1}}));
  EXPECT_FALSE(parse_method_request(json::array()));
  auto big = parse_method_request(
      json{{"methodName", "m"}, {"payload", std::string(kMaxMethodPayloadBytes, 'x')}});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, errc::limit_exceeded);
}

TEST(MethodErrorStatus, MapsToIotHubStatuses) {
  EXPECT_EQ(method_error_status(errc::not_found), 404);
  EXPECT_EQ(method_error_status(errc::timeout), 504);
  EXPECT_EQ(method_error_status(errc::invalid_argument), 400);
  EXPECT_EQ(method_error_status(errc::unavailable), 503);
}

// The calls table against a recording send function and a real io_context.
class MethodCallsTest : public ::testing::Test {
 protected:
  struct Sent {
    std::string client_id, topic, payload;
  };
  asio::io_context io;
  std::vector<Sent> sent;
  bool target_subscribed = true;
  MethodCalls calls{io, [this](const std::string& c, const std::string& t, std::string p) {
                      if (!target_subscribed) return false;
                      sent.push_back({c, t, std::move(p)});
                      return true;
                    }};

  static MethodRequest request(std::chrono::seconds connect = std::chrono::seconds(0)) {
    MethodRequest r;
    r.method_name = "echo";
    r.payload = json{{"x", 1}};
    r.connect_timeout = connect;
    return r;
  }
  static std::string rid_of(const std::string& topic) {
    return topic.substr(topic.find("$rid=") + 5);
  }
};

TEST_F(MethodCallsTest, RelaysTheTargetsAnswerToTheCaller) {
  std::optional<Result<MethodResponse>> result;
  calls.invoke("d/m", request(), [&](Result<MethodResponse> r) { result = std::move(r); });
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].client_id, "d/m");
  EXPECT_TRUE(sent[0].topic.starts_with("$iothub/methods/POST/echo/?$rid="));
  EXPECT_EQ(json::parse(sent[0].payload), (json{{"x", 1}}));
  EXPECT_EQ(calls.in_flight(), 1u);
  // An answer from another client or for another rid changes nothing.
  calls.respond("d/other", rid_of(sent[0].topic), 200, "{}");
  calls.respond("d/m", "not-a-rid", 200, "{}");
  EXPECT_FALSE(result);
  calls.respond("d/m", rid_of(sent[0].topic), 201, R"({"ok":true})");
  ASSERT_TRUE(result && *result);
  EXPECT_EQ((*result)->status, 201);
  EXPECT_EQ((*result)->payload, (json{{"ok", true}}));
  EXPECT_EQ(calls.in_flight(), 0u);
}

TEST_F(MethodCallsTest, AbsentTargetIsNotFoundAtOnceWithoutConnectTimeout) {
  target_subscribed = false;
  std::optional<Result<MethodResponse>> result;
  calls.invoke("d/m", request(), [&](Result<MethodResponse> r) { result = std::move(r); });
  ASSERT_TRUE(result);
  ASSERT_FALSE(*result);
  EXPECT_EQ(result->error().code, errc::not_found);
}

TEST_F(MethodCallsTest, WaitingCallGoesOutWhenTheTargetSubscribes) {
  target_subscribed = false;
  std::optional<Result<MethodResponse>> result;
  calls.invoke("d/m", request(std::chrono::seconds(30)),
               [&](Result<MethodResponse> r) { result = std::move(r); });
  EXPECT_FALSE(result);
  EXPECT_EQ(calls.waiting(), 1u);
  target_subscribed = true;
  calls.target_ready("d/m");
  ASSERT_EQ(sent.size(), 1u);
  calls.respond("d/m", rid_of(sent[0].topic), 200, "");
  ASSERT_TRUE(result && *result);
  EXPECT_TRUE((*result)->payload.is_null());
}

TEST_F(MethodCallsTest, DisconnectAndStopFailPendingCalls) {
  std::optional<Result<MethodResponse>> first, second;
  calls.invoke("d/m", request(), [&](Result<MethodResponse> r) { first = std::move(r); });
  calls.invoke("d/n", request(), [&](Result<MethodResponse> r) { second = std::move(r); });
  calls.target_gone("d/m");
  ASSERT_TRUE(first && !*first);
  EXPECT_EQ(first->error().code, errc::not_found);
  EXPECT_FALSE(second);
  calls.cancel_all();
  ASSERT_TRUE(second && !*second);
  EXPECT_EQ(second->error().code, errc::unavailable);
}

TEST(NewRequestId, IsAGuidAndUnique) {
  auto a = new_request_id(), b = new_request_id();
  EXPECT_EQ(a.size(), 36u);
  EXPECT_EQ(a[8], '-');
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace cairn::hub
