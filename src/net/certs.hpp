// The edge's certificate authority, its TLS server certificate, and the certificates it issues to
// modules (issue_certificate, for the workload API).
//
// On first start cairnd creates a CA (EC P-256, self-signed) and a server certificate signed by
// it, with the edge host name, "localhost" and 127.0.0.1 as subject alternative names. Modules
// trust the CA (DIR/certs/edge-ca.pem); the server certificate is renewed from the same CA
// when it nears expiry, so clients never need a new trust bundle.
//
// Thread-safety: functions are independent; do not run two ensure_edge_certificates on the same
// directory at once (issue_certificate only reads the CA's files).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace cairn::net {

struct EdgeCertificates {
  std::string ca_cert_path;      // PEM, public: hand to clients
  std::string ca_key_path;       // PEM, mode 0600
  std::string server_cert_path;  // PEM chain: server certificate then CA
  std::string server_key_path;   // PEM, mode 0600
};

struct CertificateOptions {
  // SANs for the server certificate. An IP literal here (e.g. a hub bound to 127.0.0.2) is
  // issued as an IP SAN, since TLS clients match IP hosts against IP SANs only.
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // IP SANs
  int ca_validity_days = 3650;
  int server_validity_days = 365;
  // A server certificate with fewer days left than this is replaced at start-up.
  int renew_before_days = 30;
};

// Creates what is missing under `dir` (certs/edge-ca.pem, certs/edge-ca.key.pem,
// certs/server.pem, certs/server.key.pem) and renews an expiring or mismatched server
// certificate. Existing valid files are left alone.
Result<EdgeCertificates> ensure_edge_certificates(const std::string& dir,
                                                  const CertificateOptions& options);

// A certificate the edge CA issues on request (the workload API's module certificates).
enum class CertificateUse { server, client };  // extended key usage serverAuth / clientAuth
struct CertificateRequest {
  std::string common_name;
  std::vector<std::string> dns_names;  // SANs; an IP literal becomes an IP SAN
  std::vector<std::string> uris;       // URI SANs
  CertificateUse use = CertificateUse::server;
  std::int64_t not_after_unix = 0;  // must lie after now and no later than the CA's own
};

struct IssuedCertificate {
  std::string private_key_pem;  // a new P-256 key, PKCS#8
  std::string chain_pem;        // the certificate, then the edge CA
  std::int64_t not_after_unix = 0;
};

// The not-after (Unix seconds) of the certificate in `cert_path`.
Result<std::int64_t> certificate_not_after(const std::string& cert_path);

// Issues `request` with a new key, signed by the edge CA (EdgeCertificates::ca_cert_path and
// ca_key_path). errc::invalid_argument for a request the CA cannot honour (no name, an
// expiration in the past or after the CA's), errc::not_found when there is no CA there.
Result<IssuedCertificate> issue_certificate(const std::string& ca_cert_path,
                                            const std::string& ca_key_path,
                                            const CertificateRequest& request);

}  // namespace cairn::net
