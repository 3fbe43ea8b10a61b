// The workload API a module's SDK calls on its own socket, HOME/run/mnt/NAME.sock (docs/agent.md
// "Workload API"; IoT Edge's paths and JSON shapes, any api-version from 2018-06-28 on):
//   GET  /trust-bundle                         200 {"certificate": PEM of the edge CA}
//   GET  /manifest-trust-bundle                200 {"certificate": ""}
//   POST /modules/{m}/genid/{g}/sign           {"keyId","algo","data": b64} -> 200 {"digest": b64}
//   POST /modules/{m}/genid/{g}/encrypt        {"plaintext": b64, "initializationVector": b64}
//                                              -> 200 {"ciphertext": b64}
//   POST /modules/{m}/genid/{g}/decrypt        {"ciphertext": b64, "initializationVector": b64}
//                                              -> 200 {"plaintext": b64}
// Errors are {"message": ...}. The caller is checked twice: the module named in the path (a
// leading '$' stripped) must be the socket's own module, and the connecting process (SO_PEERCRED)
// must belong to that module (`owns_pid`). Otherwise 403: a module cannot sign as another.
//
// Thread-safety: handle_workload is a pure function of its arguments.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "net/http.hpp"

namespace cairn::agent {

struct WorkloadModule {
  std::string name;           // the socket's module
  std::string key;            // identity primary key, base64
  std::string generation_id;  // not checked by sign (as IoT Edge), kept for certificates
};

struct WorkloadContext {
  std::string trust_bundle_pem;
  // True if process `pid` runs inside module `name`.
  std::function<bool(const std::string& name, std::int64_t pid)> owns_pid;
};

net::HttpResponse handle_workload(const net::HttpRequest& request, const WorkloadModule& module,
                                  const WorkloadContext& context);

// The peer pid from HttpRequest::peer ("unix:pid=N"), or 0.
std::int64_t peer_pid(const net::HttpRequest& request);

}  // namespace cairn::agent
