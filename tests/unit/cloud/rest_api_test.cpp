#include "cloud/rest_api.hpp"

#include <set>

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"
#include "core/crypto.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;
using testing::CloudTest;
using testing::kHost;
using testing::kNowS;

struct Pushed {
  std::string client_id;
  json patch;
};

class RestTest : public CloudTest {
 protected:
  void SetUp() override {
    CloudTest::SetUp();
    owner_ = **store_->find_policy(kOwnerPolicy);
    RestHooks hooks;
    hooks.push_desired = [this](const std::string& id, const json& patch) {
      pushed_.push_back({id, patch});
    };
    hooks.invoke_method = [this](const std::string& id, hub::MethodRequest r,
                                 hub::MethodCallback done) {
      method_calls_.push_back({id, r.method_name});
      last_request_ = r;
      if (method_answer_) {
        done(*method_answer_);
      } else {
        pending_ = std::move(done);  // answered later by the test
      }
    };
    hooks.is_connected = [this](const std::string& id) { return connected_.count(id) > 0; };
    api_ = std::make_unique<RestApi>(RestApiConfig{kHost}, *registry_, *twins_, std::move(hooks),
                                     [this] { return now_ms_; });
  }

  std::string token(const std::string& key, std::int64_t expiry = kNowS + 3600,
                    const std::string& policy = kOwnerPolicy, const std::string& audience = kHost) {
    return *crypto::make_sas_token(audience, key, expiry, policy);
  }

  struct Reply {
    bool answered = false;
    net::HttpResponse response;
    json body() const {
      return response.body.empty() ? json() : json::parse(response.body, nullptr, false);
    }
    std::string code() const {
      auto msg = body().value("Message", std::string());
      auto colon = msg.find(':');
      auto semi = msg.find(';');
      if (!msg.starts_with("ErrorCode:") || semi == std::string::npos) return "<unparsed>";
      return msg.substr(colon + 1, semi - colon - 1);
    }
  };

  Reply call(const std::string& method, const std::string& target, const std::string& body = "",
             net::HttpHeaders headers = {}, std::optional<std::string> auth = std::nullopt) {
    net::HttpRequest req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.headers = std::move(headers);
    req.headers.emplace_back("Authorization", auth.value_or(token(owner_.primary_key)));
    auto reply = std::make_shared<Reply>();
    api_->handle(req, [reply](net::HttpResponse r) {
      EXPECT_FALSE(reply->answered) << "answered twice";
      reply->answered = true;
      reply->response = std::move(r);
    });
    EXPECT_TRUE(reply->answered) << method << " " << target;
    return *reply;
  }
  Reply call_if_match(const std::string& method, const std::string& target, const std::string& body,
                      const std::string& etag) {
    return call(method, target, body, {{"If-Match", etag}});
  }

  static std::string etag_header(const Reply& r) {
    for (const auto& [k, v] : r.response.headers) {
      if (k == "ETag") return v;
    }
    return {};
  }

  PolicyRecord owner_;
  std::unique_ptr<RestApi> api_;
  std::vector<Pushed> pushed_;
  std::vector<std::pair<std::string, std::string>> method_calls_;
  hub::MethodRequest last_request_;
  std::optional<Result<hub::MethodResponse>> method_answer_;
  hub::MethodCallback pending_;
  std::set<std::string> connected_;
};

// --- authentication ---

TEST_F(RestTest, RequestsWithoutAValidServiceTokenAre401) {
  make_device("d");
  const std::string target = "/devices/d?api-version=2021-04-12";
  for (const std::string& auth : {
           std::string(""), std::string("Bearer abc"),
           token(owner_.primary_key, kNowS - 1),                                 // expired
           token(crypto::generate_key()),                                        // wrong key
           token(owner_.primary_key, kNowS + 60, "nobody"),                      // unknown policy
           token(owner_.primary_key, kNowS + 60, ""),                            // no skn
           token(owner_.primary_key, kNowS + 60, kOwnerPolicy, "evil.example"),  // audience
       }) {
    Reply r = call("GET", target, "", {}, auth);
    EXPECT_EQ(r.response.status, 401) << auth;
    EXPECT_EQ(r.code(), "IotHubUnauthorizedAccess") << r.response.body;
    EXPECT_TRUE(r.body().contains("ExceptionMessage"));
  }
  EXPECT_EQ(call("GET", target, "", {}, token(owner_.secondary_key)).response.status, 200);
  EXPECT_EQ(call("GET", target, "", {},
                 token(owner_.primary_key, kNowS + 60, kOwnerPolicy, "CLOUD.EXAMPLE"))
                .response.status,
            200);
}

// --- devices ---

TEST_F(RestTest, DeviceLifecycle) {
  Reply created = call("PUT", "/devices/dev%231?api-version=2021-04-12",
                       R"({"deviceId":"dev#1","authentication":{"type":"sas",
                          "symmetricKey":{"primaryKey":"","secondaryKey":""}},
                          "capabilities":{"iotEdge":true}})",
                       {{"Content-Type", "application/json; charset=utf-8"}});
  ASSERT_EQ(created.response.status, 200) << created.response.body;
  json dev = created.body();
  EXPECT_EQ(dev["deviceId"], "dev#1");
  EXPECT_EQ(dev["capabilities"]["iotEdge"], true);
  EXPECT_FALSE(dev["authentication"]["symmetricKey"]["primaryKey"].get<std::string>().empty());
  EXPECT_EQ(etag_header(created), "\"" + dev["etag"].get<std::string>() + "\"");

  Reply again = call("PUT", "/devices/dev%231", R"({"deviceId":"dev#1"})");
  EXPECT_EQ(again.response.status, 409);
  EXPECT_EQ(again.code(), "DeviceAlreadyExists");

  Reply got = call("GET", "/devices/dev%231");
  ASSERT_EQ(got.response.status, 200);
  EXPECT_EQ(got.body(), dev);

  connected_.insert("dev#1");
  Reply list = call("GET", "/devices/?api-version=2021-04-12");  // the Node SDK's list path
  ASSERT_EQ(list.response.status, 200);
  ASSERT_TRUE(list.body().is_array());
  ASSERT_EQ(list.body().size(), 1u);
  EXPECT_EQ(list.body()[0]["connectionState"], "Connected");

  Reply stale = call_if_match("PUT", "/devices/dev%231", R"({"status":"disabled"})", "\"old\"");
  EXPECT_EQ(stale.response.status, 412);
  EXPECT_EQ(stale.code(), "PreconditionFailed");
  Reply updated = call_if_match("PUT", "/devices/dev%231",
                                R"({"deviceId":"dev#1","status":"disabled"})", "\"*\"");
  ASSERT_EQ(updated.response.status, 200) << updated.response.body;
  EXPECT_EQ(updated.body()["status"], "disabled");
  EXPECT_NE(updated.body()["etag"], dev["etag"]);

  Reply deleted = call_if_match("DELETE", "/devices/dev%231", "", "\"*\"");
  EXPECT_EQ(deleted.response.status, 204);
  EXPECT_TRUE(deleted.response.body.empty());
  Reply gone = call("GET", "/devices/dev%231");
  EXPECT_EQ(gone.response.status, 404);
  EXPECT_EQ(gone.code(), "DeviceNotFound");
  EXPECT_EQ(call("DELETE", "/devices/dev%231").response.status, 404);
}

TEST_F(RestTest, BadDeviceRequestsAre400AndStoreNothing) {
  for (const auto& [target, body] : std::vector<std::pair<std::string, std::string>>{
           {"/devices/d1", ""},
           {"/devices/d1", "{not json"},
           {"/devices/d1", "[]"},
           {"/devices/d1", R"({"deviceId":"other"})"},
           {"/devices/d1", R"({"status":"on"})"},
           {"/devices/d1", R"({"capabilities":{"iotEdge":1}})"},
           {"/devices/d1", R"({"authentication":{"type":"certificateAuthority"}})"},
           {"/devices/bad%20id", "{}"},
           {"/devices/bad%2", "{}"},
       }) {
    Reply r = call("PUT", target, body);
    EXPECT_EQ(r.response.status, 400) << target << " " << body << " -> " << r.response.body;
    EXPECT_EQ(r.code(), "ArgumentInvalid") << r.response.body;
  }
  EXPECT_EQ(store_->counts()->devices, 0);
}

TEST_F(RestTest, UnknownPathsAndMethods) {
  Reply unknown = call("GET", "/nothing/here");
  EXPECT_EQ(unknown.response.status, 404);
  EXPECT_EQ(call("GET", "/devices/d/sideways").response.status, 404);
  EXPECT_EQ(call("GET", "/").response.status, 404);
  Reply wrong = call("POST", "/devices/d", "{}");
  EXPECT_EQ(wrong.response.status, 405);
  bool allow = false;
  for (const auto& [k, v] : wrong.response.headers)
    allow |= (k == "Allow" && v == "GET, PUT, DELETE");
  EXPECT_TRUE(allow);
  EXPECT_EQ(call("DELETE", "/twins/d").response.status, 405);
}

TEST_F(RestTest, StorageFailuresAre500WithoutInternals) {
  make_device("d");
  ASSERT_TRUE(store_->exec_for_test("UPDATE twins SET document = 'garbage'").ok());
  Reply r = call("GET", "/twins/d");
  EXPECT_EQ(r.response.status, 500);
  EXPECT_EQ(r.code(), "ServerError");
  EXPECT_EQ(r.response.body.find("garbage"), std::string::npos);
  EXPECT_EQ(r.response.body.find("cloud store"), std::string::npos);
}

TEST_F(RestTest, DeleteHonoursIfMatch) {
  DeviceRecord d = make_device("d");
  Reply stale = call_if_match("DELETE", "/devices/d", "", "\"old\"");
  EXPECT_EQ(stale.response.status, 412);
  EXPECT_TRUE(registry_->get_device("d").ok());
  EXPECT_EQ(call_if_match("DELETE", "/devices/d", "", "\"" + d.etag + "\"").response.status, 204);
}

// --- modules ---

TEST_F(RestTest, ModuleLifecycleWithEscapedIds) {
  make_device("edge", true);
  Reply created = call("PUT", "/devices/edge/modules/%24edgeAgent?api-version=2021-04-12",
                       R"({"deviceId":"edge","moduleId":"$edgeAgent","managedBy":"iotEdge"})");
  ASSERT_EQ(created.response.status, 201) << created.response.body;
  json m = created.body();
  EXPECT_EQ(m["moduleId"], "$edgeAgent");
  EXPECT_EQ(m["managedBy"], "iotEdge");
  EXPECT_EQ(call("PUT", "/devices/edge/modules/%24edgeAgent", "{}").response.status, 409);

  Reply got = call("GET", "/devices/edge/modules/%24edgeAgent");
  ASSERT_EQ(got.response.status, 200);
  EXPECT_EQ(got.body()["etag"], m["etag"]);
  Reply list = call("GET", "/devices/edge/modules");
  ASSERT_EQ(list.response.status, 200);
  EXPECT_EQ(list.body().size(), 1u);

  Reply updated = call_if_match("PUT", "/devices/edge/modules/%24edgeAgent",
                                R"({"moduleId":"$edgeAgent","managedBy":"me"})",
                                "\"" + m["etag"].get<std::string>() + "\"");
  ASSERT_EQ(updated.response.status, 200) << updated.response.body;
  EXPECT_EQ(updated.body()["managedBy"], "me");

  Reply missing = call("GET", "/devices/edge/modules/nope");
  EXPECT_EQ(missing.response.status, 404);
  EXPECT_EQ(missing.code(), "ModuleNotFound");
  Reply no_device = call("PUT", "/devices/ghost/modules/m", "{}");
  EXPECT_EQ(no_device.response.status, 404);
  EXPECT_EQ(no_device.code(), "DeviceNotFound");
  EXPECT_EQ(call("GET", "/devices/ghost/modules").response.status, 404);
  EXPECT_EQ(call("PUT", "/devices/edge/modules/m", R"({"moduleId":"x"})").response.status, 400);

  EXPECT_EQ(
      call_if_match("DELETE", "/devices/edge/modules/%24edgeAgent", "", "\"*\"").response.status,
      204);
  EXPECT_EQ(call("GET", "/devices/edge/modules").body().size(), 0u);
}

// --- twins ---

TEST_F(RestTest, DeviceTwinReadPatchReplace) {
  make_device("d");
  Reply got = call("GET", "/twins/d?api-version=2021-04-12");
  ASSERT_EQ(got.response.status, 200);
  json twin = got.body();
  EXPECT_EQ(twin["deviceId"], "d");
  EXPECT_EQ(twin["properties"]["desired"]["$version"], 1);
  const std::string etag = twin["etag"];
  EXPECT_EQ(etag_header(got), "\"" + etag + "\"");

  Reply patched = call_if_match("PATCH", "/twins/d",
                                R"({"tags":{"floor":3},"properties":{"desired":{"rate":10}}})",
                                "\"" + etag + "\"");
  ASSERT_EQ(patched.response.status, 200) << patched.response.body;
  EXPECT_EQ(patched.body()["tags"]["floor"], 3);
  EXPECT_EQ(patched.body()["properties"]["desired"]["rate"], 10);
  ASSERT_EQ(pushed_.size(), 1u);
  EXPECT_EQ(pushed_[0].client_id, "d");
  EXPECT_EQ(pushed_[0].patch, json::parse(R"({"rate":10,"$version":2})"));

  Reply stale = call_if_match("PATCH", "/twins/d", R"({"tags":{"a":1}})", "\"" + etag + "\"");
  EXPECT_EQ(stale.response.status, 412);
  EXPECT_EQ(pushed_.size(), 1u);

  Reply replaced =
      call_if_match("PUT", "/twins/d", R"({"properties":{"desired":{"mode":"eco"}}})", "*");
  ASSERT_EQ(replaced.response.status, 200) << replaced.response.body;
  EXPECT_TRUE(replaced.body()["tags"].empty());
  ASSERT_EQ(pushed_.size(), 2u);
  EXPECT_EQ(pushed_[1].patch, json::parse(R"({"rate":null,"mode":"eco","$version":3})"));

  for (const char* bad : {"", "{x", R"({"properties":{"reported":{"a":1}}})",
                          R"({"properties":{"desired":{"a.b":1}}})"}) {
    EXPECT_EQ(call("PATCH", "/twins/d", bad).response.status, 400) << bad;
  }
  EXPECT_EQ(pushed_.size(), 2u);
  EXPECT_EQ(call("GET", "/twins/ghost").code(), "DeviceNotFound");
}

TEST_F(RestTest, ModuleTwinPatchReachesTheModule) {
  make_device("edge", true);
  make_module("edge", "$edgeHub");
  connected_.insert("edge/$edgeHub");
  Reply got = call("GET", "/twins/edge/modules/%24edgeHub");
  ASSERT_EQ(got.response.status, 200);
  EXPECT_EQ(got.body()["moduleId"], "$edgeHub");
  EXPECT_EQ(got.body()["connectionState"], "Connected");
  Reply patched =
      call_if_match("PATCH", "/twins/edge/modules/%24edgeHub",
                    R"({"properties":{"desired":{"routes":{"r":"FROM /* INTO $upstream"}}}})",
                    got.body()["etag"].get<std::string>());
  ASSERT_EQ(patched.response.status, 200) << patched.response.body;
  ASSERT_EQ(pushed_.size(), 1u);
  EXPECT_EQ(pushed_[0].client_id, "edge/$edgeHub");
  EXPECT_EQ(call("GET", "/twins/edge/modules/none").code(), "ModuleNotFound");
}

// --- direct methods ---

TEST_F(RestTest, DeviceAndModuleMethodsGoThroughTheHook) {
  make_device("d");
  make_module("d", "m");
  method_answer_ = Result<hub::MethodResponse>(hub::MethodResponse{201, json{{"ok", true}}});
  Reply r = call("POST", "/twins/d/methods?api-version=2021-04-12",
                 R"({"methodName":"reboot","payload":{"delay":5},
                     "responseTimeoutInSeconds":10,"connectTimeoutInSeconds":0})");
  ASSERT_EQ(r.response.status, 200) << r.response.body;
  EXPECT_EQ(r.body(), json::parse(R"({"status":201,"payload":{"ok":true}})"));
  ASSERT_EQ(method_calls_.size(), 1u);
  EXPECT_EQ(method_calls_[0], std::make_pair(std::string("d"), std::string("reboot")));
  EXPECT_EQ(last_request_.payload["delay"], 5);
  EXPECT_EQ(last_request_.response_timeout.count(), 10);

  Reply mod = call("POST", "/twins/d/modules/m/methods", R"({"methodName":"ping"})");
  ASSERT_EQ(mod.response.status, 200);
  EXPECT_EQ(method_calls_.back().first, "d/m");
}

TEST_F(RestTest, MethodErrorsMapToIotHubStatuses) {
  make_device("d");
  method_answer_ = Result<hub::MethodResponse>(make_error(errc::not_found, "not connected"));
  Reply offline = call("POST", "/twins/d/methods", R"({"methodName":"x"})");
  EXPECT_EQ(offline.response.status, 404);
  EXPECT_EQ(offline.code(), "DeviceNotOnline");
  method_answer_ = Result<hub::MethodResponse>(make_error(errc::timeout, "no answer"));
  Reply late = call("POST", "/twins/d/methods", R"({"methodName":"x"})");
  EXPECT_EQ(late.response.status, 504);
  EXPECT_EQ(late.code(), "GatewayTimeout");
  const std::size_t calls = method_calls_.size();
  // Not registered: answered without bothering the hub.
  Reply ghost = call("POST", "/twins/ghost/methods", R"({"methodName":"x"})");
  EXPECT_EQ(ghost.response.status, 404);
  EXPECT_EQ(ghost.code(), "DeviceNotFound");
  EXPECT_EQ(call("POST", "/twins/d/modules/none/methods", R"({"methodName":"x"})").code(),
            "ModuleNotFound");
  for (const char* bad : {"", "[]", R"({"payload":1})", R"({"methodName":"a/b"})",
                          R"({"methodName":"x","responseTimeoutInSeconds":1})"}) {
    EXPECT_EQ(call("POST", "/twins/d/methods", bad).response.status, 400) << bad;
  }
  EXPECT_EQ(method_calls_.size(), calls);
}

TEST_F(RestTest, MethodAnswerMayComeLater) {
  make_device("d");
  net::HttpRequest req;
  req.method = "POST";
  req.target = "/twins/d/methods";
  req.body = R"({"methodName":"slow"})";
  req.headers.emplace_back("Authorization", token(owner_.primary_key));
  std::optional<net::HttpResponse> answer;
  api_->handle(req, [&](net::HttpResponse r) { answer = std::move(r); });
  EXPECT_FALSE(answer.has_value());
  ASSERT_TRUE(pending_);
  pending_(Result<hub::MethodResponse>(hub::MethodResponse{200, nullptr}));
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(json::parse(answer->body), json::parse(R"({"status":200,"payload":null})"));
}

// --- deployments ---

const char* kDeployment = R"({"modulesContent":{
  "$edgeAgent":{"properties.desired":{"schemaVersion":"1.1","runtime":{"type":"docker"},
                "modules":{"filter":{"type":"docker","status":"running"}}}},
  "$edgeHub":{"properties.desired":{"schemaVersion":"1.1","routes":{"r":"FROM /* INTO $upstream"}}},
  "filter":{"properties.desired":{"threshold":30}}}})";

TEST_F(RestTest, ApplyConfigurationContentCreatesModulesAndSetsDesired) {
  make_device("edge", true);
  make_module("edge", "$edgeAgent");  // already there: its twin is updated in place
  Reply r =
      call("POST", "/devices/edge/applyConfigurationContent?api-version=2021-04-12", kDeployment);
  ASSERT_EQ(r.response.status, 204) << r.response.body;
  for (const char* m : {"$edgeAgent", "$edgeHub", "filter"}) {
    auto mod = store_->find_module("edge", m);
    ASSERT_TRUE(mod.ok() && mod->has_value()) << m;
    auto twin = store_->find_twin(TwinKey{"edge", m});
    ASSERT_TRUE(twin.ok() && twin->has_value()) << m;
    EXPECT_FALSE((*twin)->twin.desired.empty()) << m;
  }
  EXPECT_EQ((*store_->find_module("edge", "filter"))->managed_by, "iotEdge");
  EXPECT_EQ((*store_->find_twin(TwinKey{"edge", "filter"}))->twin.desired["threshold"], 30);
  EXPECT_EQ(pushed_.size(), 3u);
  auto dep = store_->find_deployment("edge");
  ASSERT_TRUE(dep.ok() && dep->has_value());
  EXPECT_EQ((*dep)->version, 1);
  Reply shown = call("GET", "/cairn/devices/edge/deployment");
  ASSERT_EQ(shown.response.status, 200);
  EXPECT_EQ(shown.body()["version"], 1);
  EXPECT_EQ(shown.body()["content"], json::parse(kDeployment));

  // A second deployment replaces desired wholesale.
  ASSERT_EQ(call("POST", "/devices/edge/applyConfigurationContent",
                 R"({"modulesContent":{"filter":{"properties.desired":{"other":1}}}})")
                .response.status,
            204);
  auto filter = (*store_->find_twin(TwinKey{"edge", "filter"}))->twin;
  EXPECT_EQ(filter.desired, json::parse(R"({"other":1})"));
  EXPECT_EQ((*store_->find_deployment("edge"))->version, 2);
  EXPECT_EQ(pushed_.back().patch, json::parse(R"({"threshold":null,"other":1,"$version":3})"));
}

TEST_F(RestTest, ApplyConfigurationContentIsAllOrNothing) {
  make_device("edge", true);
  make_module("edge", "$edgeAgent");
  const TwinRecord before = **store_->find_twin(TwinKey{"edge", "$edgeAgent"});
  const std::string deep_value = [] {
    std::string v = "1";
    for (int i = 0; i < 12; ++i) v = "{\"a\":" + v + "}";
    return v;
  }();
  for (const std::string& bad : {
           std::string(R"({"modulesContent":{"$edgeAgent":{"properties.desired":{"x":1}},
                            "bad one":{"properties.desired":{}}}})"),
           std::string(R"({"modulesContent":{"$edgeAgent":{"properties.desired":{"x":1}},
                            "m2":{"properties.desired":5}}})"),
           std::string(R"({"modulesContent":{"$edgeAgent":{"properties.desired":{"x":1}},
                            "m3":{}}})"),
           std::string(R"({"modulesContent":{"$edgeAgent":{"properties.desired":{"x":1}},
                            "m4":{"properties.desired":)") +
               deep_value + "}}}",
           std::string(R"({"modulesContent":{}})"),
           std::string(R"({"modulesContent":[]})"),
           std::string(R"({"other":1})"),
           std::string("{oops"),
       }) {
    Reply r = call("POST", "/devices/edge/applyConfigurationContent", bad);
    EXPECT_EQ(r.response.status, 400) << bad << " -> " << r.response.body;
  }
  EXPECT_EQ(store_->list_modules("edge")->size(), 1u);  // nothing created
  const TwinRecord after = **store_->find_twin(TwinKey{"edge", "$edgeAgent"});
  EXPECT_EQ(after.twin, before.twin);
  EXPECT_EQ(after.etag, before.etag);
  EXPECT_FALSE(store_->find_deployment("edge")->has_value());
  EXPECT_TRUE(pushed_.empty());

  make_device("leaf");
  Reply not_edge = call("POST", "/devices/leaf/applyConfigurationContent", kDeployment);
  EXPECT_EQ(not_edge.response.status, 400);
  EXPECT_EQ(call("POST", "/devices/ghost/applyConfigurationContent", kDeployment).code(),
            "DeviceNotFound");
}

// --- cairn extensions ---

TEST_F(RestTest, MessagesCanBeTailed) {
  make_device("d");
  for (int i = 0; i < 5; ++i) {
    TelemetryRecord r;
    r.device_id = "d";
    r.module_id = i % 2 ? "m" : "";
    r.message_id = "id" + std::to_string(i);
    r.enqueued_time = "t";
    r.system.set("contentType", "application/json");
    r.body = std::to_string(i);
    ASSERT_TRUE(store_->insert_telemetry(r).ok());
  }
  Reply all = call("GET", "/cairn/messages");
  ASSERT_EQ(all.response.status, 200);
  ASSERT_EQ(all.body().size(), 5u);
  const std::int64_t second = all.body()[1]["seq"];
  Reply page = call("GET", "/cairn/messages?after=" + std::to_string(second) + "&limit=2");
  ASSERT_EQ(page.body().size(), 2u);
  EXPECT_EQ(page.body()[0]["body"], "2");
  Reply by_module = call("GET", "/cairn/messages?deviceId=d&moduleId=m");
  EXPECT_EQ(by_module.body().size(), 2u);
  for (const char* bad : {"/cairn/messages?limit=0", "/cairn/messages?limit=abc",
                          "/cairn/messages?after=-1", "/cairn/messages?limit=100000"}) {
    EXPECT_EQ(call("GET", bad).response.status, 400) << bad;
  }
}

TEST_F(RestTest, StatusCounts) {
  make_device("a");
  make_device("b");
  make_module("a", "m");
  Reply r = call("GET", "/cairn/status");
  ASSERT_EQ(r.response.status, 200);
  EXPECT_EQ(r.body()["devices"], 2);
  EXPECT_EQ(r.body()["modules"], 1);
  EXPECT_EQ(r.body()["telemetry"]["stored"], 0);
  EXPECT_EQ(r.body()["hostname"], kHost);
}

TEST_F(RestTest, RegenerateKeys) {
  DeviceRecord d = make_device("d");
  Reply r = call("POST", "/cairn/devices/d/regenerateKey", R"({"key":"swap"})");
  ASSERT_EQ(r.response.status, 200) << r.response.body;
  EXPECT_EQ(r.body()["authentication"]["symmetricKey"]["primaryKey"], d.secondary_key);
  make_module("d", "m");
  EXPECT_EQ(call("POST", "/cairn/devices/d/modules/m/regenerateKey", R"({"key":"primary"})")
                .response.status,
            200);
  EXPECT_EQ(call("POST", "/cairn/devices/d/regenerateKey", R"({"key":"third"})").response.status,
            400);
  EXPECT_EQ(call("POST", "/cairn/devices/d/regenerateKey", R"({})").response.status, 400);
}

}  // namespace
}  // namespace cairn::cloud
