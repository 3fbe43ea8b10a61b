// The edge's certificate authority and TLS server certificate.
//
// On first start cairnd creates a CA (EC P-256, self-signed) and a server certificate signed by
// it, with the edge host name, "localhost" and 127.0.0.1 as subject alternative names. Modules
// trust the CA (DIR/certs/edge-ca.pem); the server certificate is renewed from the same CA
// when it nears expiry, so clients never need a new trust bundle.
//
// Thread-safety: functions are independent; do not run two on the same directory at once.
#pragma once

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

}  // namespace cairn::net
