#include "net/certs.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cairn::net {
namespace {

namespace fs = std::filesystem;

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* c) const { X509_free(c); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using CertPtr = std::unique_ptr<X509, CertFree>;

Error ssl_error(const std::string& what) {
  return make_error(errc::internal, what + " failed (OpenSSL)");
}

KeyPtr generate_key() { return KeyPtr(EVP_EC_gen("P-256")); }

Status write_key(const std::string& path, EVP_PKEY* key) {
  // Create with 0600 from the start so the private key is never world-readable.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return make_error(errc::io_error, "cannot write " + path);
  FilePtr f(::fdopen(fd, "w"));
  if (!f || PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return make_error(errc::io_error, "cannot write key " + path);
  }
  return {};
}

Status write_certs(const std::string& path, std::initializer_list<X509*> certs) {
  FilePtr f(std::fopen(path.c_str(), "w"));
  if (!f) return make_error(errc::io_error, "cannot write " + path);
  for (X509* c : certs) {
    if (PEM_write_X509(f.get(), c) != 1) return make_error(errc::io_error, "cannot write " + path);
  }
  return {};
}

KeyPtr read_key(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "r"));
  if (!f) return nullptr;
  return KeyPtr(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
}

CertPtr read_cert(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "r"));
  if (!f) return nullptr;
  return CertPtr(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
}

bool add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

enum class CertKind { ca, server, client };

std::time_t days_from_now(int days) {
  return std::time(nullptr) + static_cast<std::time_t>(days) * 86400;
}

// Builds a certificate for `key` signed by `issuer_key` (self-signed when issuer is null).
CertPtr make_cert(EVP_PKEY* key, const std::string& common_name, X509* issuer, EVP_PKEY* issuer_key,
                  std::time_t not_after, CertKind kind, const std::string& san) {
  CertPtr cert(X509_new());
  if (!cert) return nullptr;
  X509_set_version(cert.get(), 2);
  // Random positive 64-bit serial: unique without keeping a serial database.
  auto serial_bytes = crypto::random_bytes(8);
  serial_bytes[0] = static_cast<char>(serial_bytes[0] & 0x7f);
  BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(serial_bytes.data()), 8, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // tolerate small clock skew
  if (!ASN1_TIME_set(X509_getm_notAfter(cert.get()), not_after)) return nullptr;
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok = true;
  if (kind == CertKind::ca) {
    ok = ok &&
         add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    ok = ok && add_extension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    ok = ok && add_extension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    ok = ok && add_extension(cert.get(), signer, NID_ext_key_usage,
                             kind == CertKind::server ? "serverAuth" : "clientAuth");
    ok = ok && add_extension(cert.get(), signer, NID_subject_alt_name, san);
  }
  ok = ok && add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (!ok) return nullptr;
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0) return nullptr;
  return cert;
}

bool is_ip_literal(const std::string& s) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// A certificate's names, split by kind. An IP literal among the DNS names becomes an IP SAN: TLS
// clients check an IP host only against IP SANs (Node does), never DNS SANs.
struct SubjectNames {
  std::vector<std::string> dns;
  std::vector<std::string> ips;
  std::vector<std::string> uris;
};

SubjectNames subject_names(const std::vector<std::string>& dns_names,
                           const std::vector<std::string>& ip_addresses) {
  SubjectNames names;
  auto add_once = [](std::vector<std::string>& to, const std::string& value) {
    if (std::find(to.begin(), to.end(), value) == to.end()) to.push_back(value);
  };
  for (const auto& d : dns_names) add_once(is_ip_literal(d) ? names.ips : names.dns, d);
  for (const auto& ip : ip_addresses) add_once(names.ips, ip);
  return names;
}

std::string san_string(const SubjectNames& names) {
  std::string san;
  auto add = [&san](const char* kind, const std::string& value) {
    if (!san.empty()) san += ',';
    san += kind;
    san += value;
  };
  for (const auto& d : names.dns) add("DNS:", d);
  for (const auto& ip : names.ips) add("IP:", ip);
  for (const auto& u : names.uris) add("URI:", u);
  return san;
}

// A host name for a DNS SAN: letters, digits, '-', '_' and '.', at most 253 characters. Anything
// else (a ',' above all) would change the extension OpenSSL parses from san_string.
bool valid_dns_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

std::string to_pem(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return {};
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string to_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return {};
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::optional<std::int64_t> not_after_unix(X509* cert) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm));
}

// True if the certificate is valid for at least `days` more days and carries every SAN wanted.
bool server_cert_usable(X509* cert, X509* ca, const CertificateOptions& o,
                        const SubjectNames& names) {
  std::time_t horizon = std::time(nullptr) + static_cast<std::time_t>(o.renew_before_days) * 86400;
  if (X509_cmp_time(X509_get0_notAfter(cert), &horizon) <= 0) return false;
  if (X509_check_issued(ca, cert) != X509_V_OK) return false;
  for (const auto& d : names.dns) {
    if (X509_check_host(cert, d.c_str(), d.size(), 0, nullptr) != 1) return false;
  }
  for (const auto& ip : names.ips) {
    if (X509_check_ip_asc(cert, ip.c_str(), 0) != 1) return false;
  }
  return true;
}

}  // namespace

Result<EdgeCertificates> ensure_edge_certificates(const std::string& dir,
                                                  const CertificateOptions& options) {
  EdgeCertificates out;
  fs::path certs = fs::path(dir) / "certs";
  std::error_code ec;
  fs::create_directories(certs, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create " + certs.string() + ": " + ec.message());
  out.ca_cert_path = (certs / "edge-ca.pem").string();
  out.ca_key_path = (certs / "edge-ca.key.pem").string();
  out.server_cert_path = (certs / "server.pem").string();
  out.server_key_path = (certs / "server.key.pem").string();

  KeyPtr ca_key = read_key(out.ca_key_path);
  CertPtr ca_cert = read_cert(out.ca_cert_path);
  if (!ca_key || !ca_cert || X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    if (fs::exists(out.ca_cert_path) || fs::exists(out.ca_key_path)) {
      return make_error(errc::corruption,
                        "edge CA in " + certs.string() +
                            " is unreadable or does not match its key; move the directory away "
                            "to create a new CA (clients must then trust the new edge-ca.pem)");
    }
    log::info("certs", "creating edge CA in {}", certs.string());
    ca_key = generate_key();
    if (!ca_key) return ssl_error("CA key generation");
    ca_cert = make_cert(ca_key.get(), "cairn edge CA", nullptr, nullptr,
                        days_from_now(options.ca_validity_days), CertKind::ca, "");
    if (!ca_cert) return ssl_error("CA certificate creation");
    if (auto s = write_key(out.ca_key_path, ca_key.get()); !s) return s.error();
    if (auto s = write_certs(out.ca_cert_path, {ca_cert.get()}); !s) return s.error();
  }

  SubjectNames names = subject_names(options.dns_names, options.ip_addresses);
  KeyPtr server_key = read_key(out.server_key_path);
  CertPtr server_cert = read_cert(out.server_cert_path);
  if (server_key && server_cert &&
      X509_check_private_key(server_cert.get(), server_key.get()) == 1 &&
      server_cert_usable(server_cert.get(), ca_cert.get(), options, names)) {
    return out;
  }
  std::string san = san_string(names);
  if (san.empty()) {
    return make_error(errc::invalid_argument,
                      "the server certificate needs at least one host name or IP address");
  }
  log::info("certs", "issuing server certificate for {}", san);
  server_key = generate_key();
  if (!server_key) return ssl_error("server key generation");
  std::string cn = options.dns_names.empty() ? "localhost" : options.dns_names.front();
  server_cert = make_cert(server_key.get(), cn, ca_cert.get(), ca_key.get(),
                          days_from_now(options.server_validity_days), CertKind::server, san);
  if (!server_cert) return ssl_error("server certificate creation");
  if (auto s = write_key(out.server_key_path, server_key.get()); !s) return s.error();
  if (auto s = write_certs(out.server_cert_path, {server_cert.get(), ca_cert.get()}); !s) {
    return s.error();
  }
  return out;
}

Result<std::int64_t> certificate_not_after(const std::string& cert_path) {
  CertPtr cert = read_cert(cert_path);
  if (!cert) return make_error(errc::not_found, "no certificate in " + cert_path);
  auto t = not_after_unix(cert.get());
  if (!t) return make_error(errc::corruption, "unreadable expiry in " + cert_path);
  return *t;
}

Result<IssuedCertificate> issue_certificate(const std::string& ca_cert_path,
                                            const std::string& ca_key_path,
                                            const CertificateRequest& request) {
  CertPtr ca_cert = read_cert(ca_cert_path);
  KeyPtr ca_key = read_key(ca_key_path);
  if (!ca_cert || !ca_key) {
    return make_error(errc::not_found, "no edge CA in " + ca_cert_path +
                                           " (cairnd creates it when its TLS port is on)");
  }
  // X.509's upper bound on a common name (ub-common-name).
  if (request.common_name.empty() || request.common_name.size() > 64) {
    return make_error(errc::invalid_argument, "the common name must have 1 to 64 characters");
  }
  for (const auto& d : request.dns_names) {
    if (!is_ip_literal(d) && !valid_dns_name(d)) {
      return make_error(errc::invalid_argument,
                        "'" + d + "' is not a host name (letters, digits, '-', '_', '.') or IP");
    }
  }
  SubjectNames names = subject_names(request.dns_names, {});
  for (const auto& u : request.uris) {
    if (u.empty() || u.find_first_of(", \t\r\n") != std::string::npos) {
      return make_error(errc::invalid_argument, "'" + u + "' is not a URI");
    }
    names.uris.push_back(u);
  }
  if (names.dns.empty() && names.ips.empty() && names.uris.empty()) {
    return make_error(errc::invalid_argument, "a certificate needs at least one name");
  }
  auto ca_not_after = not_after_unix(ca_cert.get());
  if (!ca_not_after) return ssl_error("reading the edge CA's expiry");
  if (request.not_after_unix <= static_cast<std::int64_t>(std::time(nullptr))) {
    return make_error(errc::invalid_argument, "the expiration is not in the future");
  }
  if (request.not_after_unix > *ca_not_after) {
    return make_error(errc::invalid_argument, "the expiration is after the edge CA's own (" +
                                                  format_iso8601(*ca_not_after * 1000) + ")");
  }
  KeyPtr key = generate_key();
  if (!key) return ssl_error("key generation");
  CertPtr cert =
      make_cert(key.get(), request.common_name, ca_cert.get(), ca_key.get(),
                static_cast<std::time_t>(request.not_after_unix),
                request.use == CertificateUse::server ? CertKind::server : CertKind::client,
                san_string(names));
  if (!cert) return ssl_error("certificate creation");
  IssuedCertificate out;
  out.private_key_pem = to_pem(key.get());
  out.chain_pem = to_pem(cert.get()) + to_pem(ca_cert.get());
  out.not_after_unix = request.not_after_unix;
  if (out.private_key_pem.empty() || out.chain_pem.empty()) return ssl_error("PEM encoding");
  return out;
}

}  // namespace cairn::net
