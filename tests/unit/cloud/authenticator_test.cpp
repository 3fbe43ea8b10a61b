#include "cloud/authenticator.hpp"

#include <gtest/gtest.h>

#include "cloud_test_util.hpp"
#include "core/crypto.hpp"

namespace cairn::cloud {
namespace {

using testing::CloudTest;
using testing::kHost;
using testing::kNowS;

class AuthenticatorTest : public CloudTest {
 protected:
  void SetUp() override {
    CloudTest::SetUp();
    auth_ = std::make_unique<CloudAuthenticator>(*registry_, kHost);
  }

  static hub::AuthRequest request(const std::string& device, const std::string& module,
                                  const std::string& key, std::int64_t expiry = kNowS + 3600,
                                  const std::string& host = kHost) {
    std::string client = module.empty() ? device : device + "/" + module;
    std::string resource = host + "/devices/" + device;
    if (!module.empty()) resource += "/modules/" + module;
    return hub::AuthRequest{client, std::string(kHost) + "/" + client + "/?api-version=2021-04-12",
                            *crypto::make_sas_token(resource, key, expiry)};
  }

  Result<hub::Principal> auth(const hub::AuthRequest& r) { return auth_->authenticate(r, kNowS); }

  std::unique_ptr<CloudAuthenticator> auth_;
};

TEST_F(AuthenticatorTest, DeviceWithItsPrimaryOrSecondaryKey) {
  DeviceRecord d = make_device("leaf");
  for (const auto& key : {d.primary_key, d.secondary_key}) {
    auto p = auth(request("leaf", "", key));
    ASSERT_TRUE(p.ok()) << p.error().to_string();
    EXPECT_EQ(p->device_id, "leaf");
    EXPECT_TRUE(p->module_id.empty());
  }
}

TEST_F(AuthenticatorTest, AudienceHostIsCaseInsensitive) {
  DeviceRecord d = make_device("leaf");
  EXPECT_TRUE(auth(request("leaf", "", d.primary_key, kNowS + 60, "CLOUD.Example")).ok());
  auto other = auth(request("leaf", "", d.primary_key, kNowS + 60, "other.example"));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, errc::unauthorized);
}

TEST_F(AuthenticatorTest, WrongKeyUnknownDeviceAndExpiredTokenAreRefused) {
  DeviceRecord d = make_device("leaf");
  auto wrong = auth(request("leaf", "", crypto::generate_key()));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, errc::unauthorized);
  auto unknown = auth(request("ghost", "", d.primary_key));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, errc::unauthorized);
  auto expired = auth(request("leaf", "", d.primary_key, kNowS - 1));
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code, errc::unauthorized);
  auto mismatch = request("leaf", "", d.primary_key);
  mismatch.client_id = "someone-else";
  auto r = auth(mismatch);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::invalid_argument);
}

TEST_F(AuthenticatorTest, DisabledDeviceAndItsModulesAreRefused) {
  DeviceRecord d = make_device("edge", true);
  ModuleRecord m = make_module("edge", "filter");
  DeviceSpec off;
  off.device_id = "edge";
  off.enabled = false;
  ASSERT_TRUE(registry_->update_device(off, "*").ok());
  for (const auto& r :
       {request("edge", "", d.primary_key), request("edge", "filter", m.primary_key),
        request("edge", "filter", d.primary_key)}) {
    auto p = auth(r);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error().code, errc::unauthorized);
    EXPECT_NE(p.error().message.find("disabled"), std::string::npos);
  }
}

TEST_F(AuthenticatorTest, ModuleWithItsOwnKey) {
  DeviceRecord d = make_device("leafy");  // not an edge device
  ModuleRecord m = make_module("leafy", "m1");
  auto p = auth(request("leafy", "m1", m.secondary_key));
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  EXPECT_EQ(p->module_id, "m1");
  // A plain device may not sign for its modules.
  auto by_device = auth(request("leafy", "m1", d.primary_key));
  ASSERT_FALSE(by_device.ok());
  EXPECT_EQ(by_device.error().code, errc::unauthorized);
  auto unknown = auth(request("leafy", "m2", d.primary_key));
  ASSERT_FALSE(unknown.ok());
  EXPECT_FALSE(store_->find_module("leafy", "m2")->has_value());
}

TEST_F(AuthenticatorTest, EdgeDeviceSignsForItsModulesAndRegistersNewOnes) {
  DeviceRecord d = make_device("edge", true);
  ModuleRecord known = make_module("edge", "known");
  EXPECT_TRUE(auth(request("edge", "known", d.primary_key)).ok());
  EXPECT_TRUE(auth(request("edge", "known", known.primary_key)).ok());

  auto p = auth(request("edge", "$edgeHub", d.secondary_key));
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  EXPECT_EQ(p->client_id(), "edge/$edgeHub");
  auto created = store_->find_module("edge", "$edgeHub");
  ASSERT_TRUE(created.ok() && created->has_value());
  EXPECT_EQ((*created)->managed_by, "iotEdge");
  EXPECT_TRUE(store_->find_twin(TwinKey{"edge", "$edgeHub"})->has_value());
  EXPECT_EQ(auth_->modules_registered(), 1u);
  // The second connection finds it.
  EXPECT_TRUE(auth(request("edge", "$edgeHub", d.primary_key)).ok());
  EXPECT_EQ(auth_->modules_registered(), 1u);

  // A wrong key registers nothing.
  auto wrong = auth(request("edge", "intruder", crypto::generate_key()));
  ASSERT_FALSE(wrong.ok());
  EXPECT_FALSE(store_->find_module("edge", "intruder")->has_value());
}

TEST_F(AuthenticatorTest, EdgeDeviceRegistersModulesUpToItsQuota) {
  DeviceRecord d = make_device("edge", true);
  CloudAuthLimits limits;
  limits.max_modules_per_device = 2;
  auth_ = std::make_unique<CloudAuthenticator>(*registry_, kHost, limits);
  EXPECT_TRUE(auth(request("edge", "a", d.primary_key)).ok());
  EXPECT_TRUE(auth(request("edge", "b", d.primary_key)).ok());
  auto third = auth(request("edge", "c", d.primary_key));
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, errc::limit_exceeded);
  EXPECT_FALSE(registry_->get_module("edge", "c").ok());
  EXPECT_EQ(auth_->modules_registered(), 2u);
  EXPECT_EQ(auth_->modules_refused_quota(), 1u);
  // Known modules still connect.
  EXPECT_TRUE(auth(request("edge", "a", d.primary_key)).ok());
}

TEST_F(AuthenticatorTest, ConnectionsPerDeviceAreLimitedButAReconnectionFits) {
  DeviceRecord d = make_device("leaf");
  CloudAuthLimits limits;
  limits.max_connections_per_device = 1;
  auth_ = std::make_unique<CloudAuthenticator>(*registry_, kHost, limits);
  std::size_t live = 0;
  std::string live_client;
  auth_->set_connection_count([&](const std::string&, const std::string& except) {
    return except == live_client ? live - 1 : live;
  });
  live = 1;
  live_client = "leaf";
  EXPECT_TRUE(auth(request("leaf", "", d.primary_key)).ok());  // replaces its own session
  ModuleRecord m = make_module("leaf", "m");
  auto refused = auth(request("leaf", "m", m.primary_key));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, errc::limit_exceeded);
  EXPECT_EQ(auth_->connections_refused_device_limit(), 1u);
}

TEST_F(AuthenticatorTest, TokensValidLongerThanTheMaximumAreRefused) {
  DeviceRecord d = make_device("leaf");
  const auto max = CloudAuthLimits{}.max_token_lifetime_secs;
  EXPECT_TRUE(auth(request("leaf", "", d.primary_key, kNowS + max)).ok());
  auto r = auth(request("leaf", "", d.primary_key, kNowS + max + 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::unauthorized);
}

}  // namespace
}  // namespace cairn::cloud
