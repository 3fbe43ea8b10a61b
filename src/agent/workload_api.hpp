// The workload API a module's SDK calls on its own socket, HOME/run/mnt/NAME.sock (docs/agent.md
// "Workload API"; IoT Edge's paths and JSON shapes, any api-version from 2018-06-28 on):
//   GET  /trust-bundle                         200 {"certificate": PEM of the edge CA}
//   GET  /manifest-trust-bundle                200 {"certificate": ""}
//   POST /modules/{m}/genid/{g}/sign           {"keyId","algo","data": b64} -> 200 {"digest": b64}
//   POST /modules/{m}/genid/{g}/encrypt        {"plaintext": b64, "initializationVector": b64}
//                                              -> 200 {"ciphertext": b64}
//   POST /modules/{m}/genid/{g}/decrypt        {"ciphertext": b64, "initializationVector": b64}
//                                              -> 200 {"plaintext": b64}
//   POST /modules/{m}/certificate/identity     {"expiration"?} -> 201 {"privateKey": {"type":
//                                              "key", "bytes": PEM}, "certificate": PEM chain,
//                                              "expiration": RFC 3339}
//   POST /modules/{m}/genid/{g}/certificate/server  {"commonName", "expiration"?} -> 201, same
// Errors are {"message": ...}. The caller is checked twice: the module named in the path (a
// leading '$' stripped) must be the socket's own module, and the connecting process (SO_PEERCRED)
// must belong to that module (`owns_pid`). Otherwise 403: a module cannot sign, decrypt or get a
// certificate as another.
//
// Thread-safety: handle_workload depends only on its arguments and the edge CA's files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "net/http.hpp"

namespace cairn::agent {

struct WorkloadModule {
  std::string name;           // the socket's module
  std::string key;            // identity primary key, base64
  std::string generation_id;  // not checked by sign (as IoT Edge); encrypt, decrypt and server
                              // certificates require the current one
};

// The most plaintext (or ciphertext) one encrypt or decrypt takes, decoded. Modules encrypt
// secrets and small state this way, not streams; base64 of this fits the socket's 64 KiB body.
inline constexpr std::size_t kMaxCryptoInputBytes = 16 * 1024;
// An initialization vector of more than this is refused (AES-GCM's natural one has 12 bytes).
inline constexpr std::size_t kMaxInitializationVectorBytes = 256;
// The longest a module certificate may be valid, and its validity when the request names no
// expiration (never past the edge CA's own). Short-lived certificates limit what a leaked module
// key is worth; modules ask again before expiry.
inline constexpr std::int64_t kMaxCertificateValiditySecs = 90LL * 24 * 3600;

struct WorkloadContext {
  std::string trust_bundle_pem;
  // The edge CA that issues module certificates (net::EdgeCertificates paths).
  std::string ca_cert_path;
  std::string ca_key_path;
  // Identity certificates name the module as URI SAN azureiot://HUB/devices/DEVICE/modules/M.
  std::string device_id;
  std::string iothub_hostname;
  // True if process `pid` runs inside module `name`.
  std::function<bool(const std::string& name, std::int64_t pid)> owns_pid;
};

net::HttpResponse handle_workload(const net::HttpRequest& request, const WorkloadModule& module,
                                  const WorkloadContext& context);

// The peer pid from HttpRequest::peer ("unix:pid=N"), or 0.
std::int64_t peer_pid(const net::HttpRequest& request);

}  // namespace cairn::agent
