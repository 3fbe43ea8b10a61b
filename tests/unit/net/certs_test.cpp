// Module certificates issued by the edge CA (issue_certificate): they verify against the CA
// alone, carry the names and usage asked for, and requests the CA cannot honour change nothing.
#include "net/certs.hpp"

#include <ctime>
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <unistd.h>

namespace cairn::net {
namespace {

namespace fs = std::filesystem;

using Cert = std::unique_ptr<X509, decltype(&X509_free)>;

Cert first_cert(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), int(pem.size())),
                                                BIO_free);
  return {PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free};
}

class IssueCertificate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("cairn-certs-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    CertificateOptions o;
    o.dns_names = {"localhost"};
    auto made = ensure_edge_certificates(dir_.string(), o);
    ASSERT_TRUE(made) << made.error().message;
    ca_ = *made;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // X509_verify_cert of `leaf` against the CA alone, for `purpose`.
  int verify(X509* leaf, int purpose) {
    std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(),
                                                                  X509_STORE_free);
    X509_STORE_load_file(store.get(), ca_.ca_cert_path.c_str());
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(),
                                                                        X509_STORE_CTX_free);
    X509_STORE_CTX_init(ctx.get(), store.get(), leaf, nullptr);
    X509_STORE_CTX_set_purpose(ctx.get(), purpose);
    return X509_verify_cert(ctx.get());
  }

  fs::path dir_;
  EdgeCertificates ca_;
};

TEST_F(IssueCertificate, ServerCertificateVerifiesWithItsNames) {
  CertificateRequest r;
  r.common_name = "10.1.2.3";
  r.dns_names = {"10.1.2.3", "filter"};
  r.not_after_unix = std::time(nullptr) + 86400;
  auto issued = issue_certificate(ca_.ca_cert_path, ca_.ca_key_path, r);
  ASSERT_TRUE(issued) << issued.error().message;
  auto leaf = first_cert(issued->chain_pem);
  ASSERT_TRUE(leaf);
  EXPECT_EQ(verify(leaf.get(), X509_PURPOSE_SSL_SERVER), 1);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "10.1.2.3", 0), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "filter", 6, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(leaf.get(), "other", 5, 0, nullptr), 1);
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter(leaf.get()), nullptr), 1);  // in the future
  EXPECT_EQ(issued->not_after_unix, r.not_after_unix);
  EXPECT_NE(issued->private_key_pem.find("BEGIN PRIVATE KEY"), std::string::npos);
}

TEST_F(IssueCertificate, ClientCertificateIsNotAServerCertificate) {
  CertificateRequest r;
  r.common_name = "filter";
  r.uris = {"azureiot://hub.example/devices/edge1/modules/filter"};
  r.use = CertificateUse::client;
  r.not_after_unix = std::time(nullptr) + 86400;
  auto issued = issue_certificate(ca_.ca_cert_path, ca_.ca_key_path, r);
  ASSERT_TRUE(issued) << issued.error().message;
  auto leaf = first_cert(issued->chain_pem);
  EXPECT_EQ(verify(leaf.get(), X509_PURPOSE_SSL_CLIENT), 1);
  EXPECT_NE(verify(leaf.get(), X509_PURPOSE_SSL_SERVER), 1);
}

TEST_F(IssueCertificate, RefusesWhatTheCaCannotHonour) {
  auto ca_expiry = certificate_not_after(ca_.ca_cert_path);
  ASSERT_TRUE(ca_expiry);
  CertificateRequest good;
  good.common_name = "m";
  good.dns_names = {"m"};
  good.not_after_unix = std::time(nullptr) + 3600;
  auto with = [&](auto change) {
    CertificateRequest r = good;
    change(r);
    return issue_certificate(ca_.ca_cert_path, ca_.ca_key_path, r);
  };
  for (auto r : {with([](auto& r) { r.not_after_unix = std::time(nullptr) - 1; }),
                 with([&](auto& r) { r.not_after_unix = *ca_expiry + 1; }),
                 with([](auto& r) { r.common_name = std::string(65, 'c'); }),
                 with([](auto& r) { r.common_name.clear(); }),
                 with([](auto& r) { r.dns_names = {"a,DNS:evil"}; }),
                 with([](auto& r) { r.dns_names = {}; }),
                 with([](auto& r) { r.uris = {"azureiot://x, IP:1.2.3.4"}; })}) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::invalid_argument) << r.error().message;
  }
  EXPECT_TRUE(with([](auto&) {}));
  auto no_ca = issue_certificate((dir_ / "nope.pem").string(), ca_.ca_key_path, good);
  ASSERT_FALSE(no_ca);
  EXPECT_EQ(no_ca.error().code, errc::not_found);
}

}  // namespace
}  // namespace cairn::net
