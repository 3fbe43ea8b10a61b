#include "hub/identities.hpp"

#include <filesystem>
#include <future>

#include <gtest/gtest.h>

#include "core/crypto.hpp"

namespace cairn::hub {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;
constexpr std::int64_t kMaxLifetime = 24 * 3600;

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("cairn-auth-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    store::Options o;
    o.path = (dir_ / "hub.db").string();
    store_ = std::move(*store::MessageStore::open(o));
    registry_ = std::make_unique<IdentityRegistry>(*store_, "edge1");
    std::promise<Result<Identity>> p;
    registry_->create("sensor", [&](Result<Identity> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    ASSERT_TRUE(r.ok());
    key_ = r->primary_key;
  }
  void TearDown() override {
    registry_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  AuthRequest request(const std::string& resource, std::int64_t expiry,
                      const std::string& key) const {
    return AuthRequest{"edge1/sensor", "cairn.local/edge1/sensor/?api-version=2021-04-12",
                       *crypto::make_sas_token(resource, key, expiry)};
  }
  Result<Principal> auth(const AuthRequest& r) const {
    return authenticate(r, *registry_, "cairn.local", "gateway.host", kNow, kMaxLifetime);
  }

  std::filesystem::path dir_;
  std::unique_ptr<store::MessageStore> store_;
  std::unique_ptr<IdentityRegistry> registry_;
  std::string key_;
};

TEST_F(AuthTest, AcceptsValidModuleToken) {
  auto p = auth(request("cairn.local/devices/edge1/modules/sensor", kNow + 60, key_));
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  EXPECT_EQ(p->device_id, "edge1");
  EXPECT_EQ(p->module_id, "sensor");
}

TEST_F(AuthTest, AcceptsGatewayHostNameAudienceCaseInsensitively) {
  EXPECT_TRUE(auth(request("GATEWAY.host/devices/edge1/modules/sensor", kNow + 60, key_)).ok());
}

TEST_F(AuthTest, AcceptsSecondaryKey) {
  auto id = registry_->find("sensor");
  EXPECT_TRUE(
      auth(request("cairn.local/devices/edge1/modules/sensor", kNow + 60, id->secondary_key)).ok());
}

TEST_F(AuthTest, RejectsExpiredToken) {
  auto p = auth(request("cairn.local/devices/edge1/modules/sensor", kNow, key_));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, errc::unauthorized);
}

TEST_F(AuthTest, RejectsTokenValidLongerThanTheMaximumLifetime) {
  const std::string resource = "cairn.local/devices/edge1/modules/sensor";
  EXPECT_TRUE(auth(request(resource, kNow + kMaxLifetime, key_)).ok());
  auto p = auth(request(resource, kNow + kMaxLifetime + 1, key_));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, errc::unauthorized);
  EXPECT_NE(p.error().message.find("maximum"), std::string::npos) << p.error().message;
  // 0: no maximum.
  EXPECT_TRUE(authenticate(request(resource, kNow + 10 * kMaxLifetime, key_), *registry_,
                           "cairn.local", "gateway.host", kNow, 0)
                  .ok());
}

TEST_F(AuthTest, RejectsWrongKey) {
  auto p =
      auth(request("cairn.local/devices/edge1/modules/sensor", kNow + 60, crypto::generate_key()));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, errc::unauthorized);
}

TEST_F(AuthTest, RejectsTokenForAnotherModuleOrHub) {
  EXPECT_FALSE(auth(request("cairn.local/devices/edge1/modules/other", kNow + 60, key_)).ok());
  EXPECT_FALSE(auth(request("evil.host/devices/edge1/modules/sensor", kNow + 60, key_)).ok());
  EXPECT_FALSE(auth(request("cairn.local/devices/edge1", kNow + 60, key_)).ok());
  EXPECT_FALSE(auth(request("cairn.local/devices/edge1/modules", kNow + 60, key_)).ok());
}

TEST_F(AuthTest, RejectsMalformedUsernameAndClientIdMismatch) {
  auto r = request("cairn.local/devices/edge1/modules/sensor", kNow + 60, key_);
  auto no_version = r;
  no_version.username = "cairn.local/edge1/sensor/";
  EXPECT_EQ(auth(no_version).error().code, errc::invalid_argument);
  auto mismatch = r;
  mismatch.client_id = "edge1/Sensor";  // ids compare case-sensitively
  EXPECT_EQ(auth(mismatch).error().code, errc::invalid_argument);
  auto too_many = r;
  too_many.username = "cairn.local/edge1/sensor/x/?api-version=1";
  EXPECT_EQ(auth(too_many).error().code, errc::invalid_argument);
  auto no_password = r;
  no_password.password.reset();
  EXPECT_EQ(auth(no_password).error().code, errc::unauthorized);
}

TEST_F(AuthTest, UsernameWithoutQuestionMarkIsAccepted) {
  auto r = request("cairn.local/devices/edge1/modules/sensor", kNow + 60, key_);
  r.username = "cairn.local/edge1/sensor/api-version=2018-06-30";
  EXPECT_TRUE(auth(r).ok());
}

TEST_F(AuthTest, UnknownModuleOrDeviceIsRejected) {
  AuthRequest r{
      "edge2/sensor", "h/edge2/sensor/?api-version=1",
      *crypto::make_sas_token("cairn.local/devices/edge2/modules/sensor", key_, kNow + 60)};
  EXPECT_EQ(auth(r).error().code, errc::unauthorized);
}

TEST_F(AuthTest, IdentitiesPersistAndCreateIsIdempotent) {
  std::promise<Result<Identity>> p;
  registry_->create("sensor", [&](Result<Identity> r) { p.set_value(std::move(r)); });
  EXPECT_EQ(p.get_future().get()->primary_key, key_);
  ASSERT_TRUE(store_->flush().ok());
  IdentityRegistry reloaded(*store_, "edge1");
  ASSERT_TRUE(reloaded.load().ok());
  ASSERT_TRUE(reloaded.find("sensor").has_value());
  EXPECT_EQ(reloaded.find("sensor")->primary_key, key_);
}

TEST(ModuleIds, FollowTheManifestRule) {
  EXPECT_TRUE(valid_module_id("filter-1_A"));
  EXPECT_TRUE(valid_module_id("$edgeHub"));
  EXPECT_FALSE(valid_module_id(""));
  EXPECT_FALSE(valid_module_id("a/b"));
  EXPECT_FALSE(valid_module_id("a b"));
  EXPECT_FALSE(valid_module_id("x$"));
}

TEST(ConnectionString, HasTheSdkFields) {
  Identity id{"sensor", "KEY=", "K2=", "g"};
  EXPECT_EQ(
      connection_string(id, "edge1", "hub.local", "gw"),
      "HostName=hub.local;DeviceId=edge1;ModuleId=sensor;SharedAccessKey=KEY=;GatewayHostName=gw");
}

}  // namespace
}  // namespace cairn::hub
