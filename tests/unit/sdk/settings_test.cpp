// Module settings from connection strings and the IoT Edge environment, token renewal and
// back-off scheduling, and the workload API client against a unix-socket HTTP server that
// answers in the documented shapes.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cairn/module_client.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "net/http.hpp"
#include "sdk/workload_client.hpp"
#include <unistd.h>

namespace cairn::sdk {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kKey = crypto::base64_encode("0123456789abcdef0123456789abcdef");

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::map<std::string, std::string> edge_env() {
  return {{"IOTEDGE_WORKLOADURI", "unix:///run/cairn/workload.sock"},
          {"IOTEDGE_DEVICEID", "edge1"},
          {"IOTEDGE_MODULEID", "sensor"},
          {"IOTEDGE_IOTHUBHOSTNAME", "hub.example"},
          {"IOTEDGE_MODULEGENERATIONID", "gen-7"},
          {"IOTEDGE_AUTHSCHEME", "sasToken"},
          {"IOTEDGE_GATEWAYHOSTNAME", "edge1.local"},
          {"IOTEDGE_APIVERSION", "2020-07-07"}};
}

// ---- connection strings

TEST(ConnectionString, ModuleStringWithGateway) {
  auto s = settings_from_connection_string(
      "HostName=hub.example;DeviceId=edge1;ModuleId=sensor;"
      "SharedAccessKey=" +
      kKey + ";GatewayHostName=localhost");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->iothub_hostname, "hub.example");
  EXPECT_EQ(s->device_id, "edge1");
  EXPECT_EQ(s->module_id, "sensor");
  EXPECT_EQ(s->shared_access_key, kKey);
  EXPECT_EQ(s->gateway_hostname, "localhost");
  EXPECT_FALSE(s->uses_workload());
  EXPECT_EQ(s->client_id(), "edge1/sensor");
}

TEST(ConnectionString, GatewayIsOptionalAndOrderFree) {
  auto s = settings_from_connection_string("SharedAccessKey=" + kKey +
                                           ";ModuleId=m;DeviceId=d;HostName=h");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->gateway_hostname, "");
  EXPECT_EQ(s->client_id(), "d/m");
}

TEST(ConnectionString, DeviceStringIsRefusedNamingModuleId) {
  auto s = settings_from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=" + kKey);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::invalid_argument);
  EXPECT_NE(s.error().message.find("ModuleId"), std::string::npos) << s.error().message;
}

TEST(ConnectionString, EveryMissingFieldIsNamed) {
  auto s = settings_from_connection_string("garbage");
  ASSERT_FALSE(s);
  for (const char* field : {"HostName", "DeviceId", "ModuleId", "SharedAccessKey"}) {
    EXPECT_NE(s.error().message.find(field), std::string::npos) << s.error().message;
  }
}

TEST(ConnectionString, KeyMustBeBase64) {
  auto s = settings_from_connection_string("HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=%%%");
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("SharedAccessKey"), std::string::npos);
}

TEST(ConnectionString, SharedAccessSignatureIsExplainedNotAccepted) {
  auto s = settings_from_connection_string(
      "HostName=h;DeviceId=d;ModuleId=m;SharedAccessSignature=SharedAccessSignature sr=x");
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("SharedAccessSignature"), std::string::npos);
}

// ---- the IoT Edge environment

TEST(Environment, WorkloadVariables) {
  auto s = settings_from_environment(env_of(edge_env()));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->uses_workload());
  EXPECT_EQ(s->workload_uri, "unix:///run/cairn/workload.sock");
  EXPECT_EQ(s->device_id, "edge1");
  EXPECT_EQ(s->module_id, "sensor");
  EXPECT_EQ(s->iothub_hostname, "hub.example");
  EXPECT_EQ(s->generation_id, "gen-7");
  EXPECT_EQ(s->gateway_hostname, "edge1.local");
  EXPECT_EQ(s->workload_api_version, "2020-07-07");
  EXPECT_TRUE(s->shared_access_key.empty());
}

TEST(Environment, OptionalVariablesMayBeAbsent) {
  auto vars = edge_env();
  vars.erase("IOTEDGE_GATEWAYHOSTNAME");
  vars.erase("IOTEDGE_APIVERSION");
  auto s = settings_from_environment(env_of(vars));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->gateway_hostname, "");
  EXPECT_EQ(s->workload_api_version, ConnectionSettings{}.workload_api_version);
}

TEST(Environment, AuthSchemeIsCaseInsensitiveAndMustBeSasToken) {
  auto vars = edge_env();
  vars["IOTEDGE_AUTHSCHEME"] = "SasToken";
  EXPECT_TRUE(settings_from_environment(env_of(vars)));
  vars["IOTEDGE_AUTHSCHEME"] = "x509";
  auto s = settings_from_environment(env_of(vars));
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("x509"), std::string::npos) << s.error().message;
}

TEST(Environment, EveryMissingVariableIsNamed) {
  auto s = settings_from_environment(env_of({{"IOTEDGE_DEVICEID", "edge1"}}));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::invalid_argument);
  for (const char* name : {"IOTEDGE_WORKLOADURI", "IOTEDGE_MODULEID", "IOTEDGE_IOTHUBHOSTNAME",
                           "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_AUTHSCHEME"}) {
    EXPECT_NE(s.error().message.find(name), std::string::npos) << s.error().message;
  }
  EXPECT_EQ(s.error().message.find("IOTEDGE_DEVICEID"), std::string::npos) << s.error().message;
}

TEST(Environment, WorkloadUriMustBeUnixOrHttp) {
  auto vars = edge_env();
  vars["IOTEDGE_WORKLOADURI"] = "/run/workload.sock";
  auto s = settings_from_environment(env_of(vars));
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("IOTEDGE_WORKLOADURI"), std::string::npos);
}

TEST(Environment, ConnectionStringVariableWinsWithItsCaFile) {
  auto vars = edge_env();
  vars["EdgeHubConnectionString"] =
      "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" + kKey + ";GatewayHostName=gw";
  vars["EdgeModuleCACertificateFile"] = "/certs/ca.pem";
  auto s = settings_from_environment(env_of(vars));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->uses_workload());
  EXPECT_EQ(s->client_id(), "d/m");
  EXPECT_EQ(s->gateway_hostname, "gw");
  EXPECT_EQ(s->ca_file, "/certs/ca.pem");
}

TEST(Environment, BadConnectionStringVariableIsNamed) {
  auto s = settings_from_environment(env_of({{"EdgeHubConnectionString", "HostName=h"}}));
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("EdgeHubConnectionString"), std::string::npos);
}

TEST(Environment, ProcessEnvironmentIsRead) {
  ::setenv("CAIRN_SDK_TEST_VARIABLE", "value 1", 1);
  auto env = process_environment();
  EXPECT_EQ(env("CAIRN_SDK_TEST_VARIABLE"), std::optional<std::string>("value 1"));
  ::unsetenv("CAIRN_SDK_TEST_VARIABLE");
  EXPECT_EQ(env("CAIRN_SDK_TEST_VARIABLE"), std::nullopt);
}

// ---- scheduling

TEST(TokenRenewal, MarginBeforeExpiry) {
  EXPECT_EQ(token_renewal_delay(3600s, 900s), std::chrono::milliseconds(2700s));
  EXPECT_EQ(token_renewal_delay(600s, 60s), std::chrono::milliseconds(540s));
}

TEST(TokenRenewal, NeverBeforeHalfTheLife) {
  EXPECT_EQ(token_renewal_delay(600s, 900s), std::chrono::milliseconds(300s));
  EXPECT_EQ(token_renewal_delay(600s, 600s), std::chrono::milliseconds(300s));
}

TEST(TokenRenewal, AtLeastOneSecondBeforeExpiry) {
  EXPECT_EQ(token_renewal_delay(10s, 0s), std::chrono::milliseconds(9s));
  EXPECT_EQ(token_renewal_delay(2s, 0s), std::chrono::milliseconds(1s));
  EXPECT_EQ(token_renewal_delay(1s, 0s), std::chrono::milliseconds(500));
}

TEST(Backoff, DoublesFromMinimumUpToTheCap) {
  const auto min = 100ms;
  const auto max = 10'000ms;
  EXPECT_EQ(reconnect_backoff(0, min, max), 100ms);
  EXPECT_EQ(reconnect_backoff(1, min, max), 200ms);
  EXPECT_EQ(reconnect_backoff(3, min, max), 800ms);
  EXPECT_EQ(reconnect_backoff(7, min, max), 10'000ms);
  EXPECT_EQ(reconnect_backoff(1000, min, max), 10'000ms);  // no overflow after many failures
}

TEST(Backoff, DegenerateBoundsStayPositive) {
  EXPECT_EQ(reconnect_backoff(0, 0ms, 0ms), 1ms);
  EXPECT_EQ(reconnect_backoff(5, 500ms, 100ms), 500ms);
}

// ---- client creation checks

TEST(ModuleClientCreate, RefusesSettingsWithoutACredential) {
  ConnectionSettings s;
  s.iothub_hostname = "h";
  s.device_id = "d";
  s.module_id = "m";
  auto c = ModuleClient::create(s);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("exactly one"), std::string::npos) << c.error().message;
}

TEST(ModuleClientCreate, RefusesAnUnreadableCaFile) {
  auto s =
      settings_from_connection_string("HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" + kKey);
  ASSERT_TRUE(s);
  s->ca_file = "/nonexistent/ca.pem";
  auto c = ModuleClient::create(*s);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("/nonexistent/ca.pem"), std::string::npos);
}

TEST(ModuleClientCreate, StopWithoutStartIsQuiet) {
  auto s =
      settings_from_connection_string("HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" + kKey);
  ASSERT_TRUE(s);
  auto c = ModuleClient::create(*s);
  ASSERT_TRUE(c) << c.error().message;
  std::vector<ConnectionState> states;
  (*c)->on_connection([&](ConnectionState st, const std::string&) { states.push_back(st); });
  (*c)->stop();
  EXPECT_EQ(states, std::vector<ConnectionState>{ConnectionState::stopped});
  EXPECT_EQ((*c)->state(), ConnectionState::stopped);
}

// ---- tokens and the workload API

TEST(ModuleToken, FromKeyVerifiesUnderTheKey) {
  auto s = settings_from_connection_string(
      "HostName=hub.example;DeviceId=edge1;ModuleId=sensor;"
      "SharedAccessKey=" +
      kKey);
  ASSERT_TRUE(s);
  auto token = make_module_token(*s, 2'000'000'000);
  ASSERT_TRUE(token) << token.error().message;
  auto parsed = crypto::parse_sas_token(*token);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->resource, "hub.example/devices/edge1/modules/sensor");
  EXPECT_EQ(parsed->expiry, 2'000'000'000);
  EXPECT_TRUE(crypto::verify_sas_signature(*parsed, kKey));
}

// A workload API on a unix socket that signs with kKey, as the documented endpoints do.
class WorkloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cairn-sdk-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    socket_ = (dir_ / "workload.sock").string();
    auto server = net::UnixHttpServer::start(
        io_, socket_, [this](const net::HttpRequest& req, net::HttpRespond respond) {
          ++requests_;
          last_target_ = req.target;
          respond(answer(req));
        });
    ASSERT_TRUE(server) << server.error().message;
    server_ = *server;
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    server_->stop();
    io_.stop();
    thread_.join();
    server_.reset();
    fs::remove_all(dir_);
  }

  net::HttpResponse answer(const net::HttpRequest& req) {
    if (refuse_) return {403, R"({"message":"module not found"})"};
    const std::string path = net::http_path(req.target);
    if (req.method == "GET" && path == "/trust-bundle") {
      return {200, nlohmann::json{{"certificate",
                                   "-----BEGIN CERTIFICATE-----\nMII\n"
                                   "-----END CERTIFICATE-----\n"}}
                       .dump()};
    }
    if (req.method == "POST" && path == "/modules/sensor/genid/gen-7/sign") {
      auto body = nlohmann::json::parse(req.body, nullptr, false);
      if (!body.is_object() || !body.contains("data")) return {400, R"({"message":"no data"})"};
      auto data = crypto::base64_decode(body["data"].get<std::string>());
      if (!data) return {400, R"({"message":"data is not base64"})"};
      auto key = crypto::base64_decode(kKey);
      return {200,
              nlohmann::json{{"digest", crypto::base64_encode(crypto::hmac_sha256(*key, *data))}}
                  .dump()};
    }
    return {404, R"({"message":"no such route"})"};
  }

  ConnectionSettings settings() const {
    auto vars = edge_env();
    vars["IOTEDGE_WORKLOADURI"] = "unix://" + socket_;
    auto s = settings_from_environment(env_of(vars));
    EXPECT_TRUE(s);
    return *s;
  }

  fs::path dir_;
  std::string socket_;
  boost::asio::io_context io_;
  std::shared_ptr<net::UnixHttpServer> server_;
  std::thread thread_;
  std::atomic<int> requests_{0};
  std::atomic<bool> refuse_{false};
  std::string last_target_;
};

TEST_F(WorkloadTest, TokenSignedByTheWorkloadApiVerifiesUnderTheModuleKey) {
  auto token = make_module_token(settings(), now_unix_s() + 3600);
  ASSERT_TRUE(token) << token.error().message;
  auto parsed = crypto::parse_sas_token(*token);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->resource, "hub.example/devices/edge1/modules/sensor");
  EXPECT_TRUE(crypto::verify_sas_signature(*parsed, kKey));
  EXPECT_EQ(requests_.load(), 1);
  EXPECT_EQ(net::http_query_param(last_target_, "api-version"), "2020-07-07");
}

TEST_F(WorkloadTest, TrustBundleIsThePemText) {
  auto bundle = workload_trust_bundle(settings());
  ASSERT_TRUE(bundle) << bundle.error().message;
  EXPECT_TRUE(bundle->starts_with("-----BEGIN CERTIFICATE-----"));
}

TEST_F(WorkloadTest, RefusalCarriesTheStatusAndMessage) {
  refuse_ = true;
  auto token = make_module_token(settings(), now_unix_s() + 3600);
  ASSERT_FALSE(token);
  EXPECT_EQ(token.error().code, errc::unauthorized);
  EXPECT_NE(token.error().message.find("403"), std::string::npos) << token.error().message;
  EXPECT_NE(token.error().message.find("module not found"), std::string::npos);
}

TEST_F(WorkloadTest, MissingSocketIsUnavailable) {
  auto s = settings();
  s.workload_uri = "unix://" + (dir_ / "nothing.sock").string();
  auto token = make_module_token(s, now_unix_s() + 3600);
  ASSERT_FALSE(token);
  EXPECT_EQ(token.error().code, errc::unavailable) << token.error().message;
  EXPECT_NE(token.error().message.find("nothing.sock"), std::string::npos);
}

}  // namespace
}  // namespace cairn::sdk
