// The module side of the IoT Edge workload API (HTTP/1.1 over a unix socket, or plain HTTP over
// TCP): sign data with the module's key (POST /modules/{m}/genid/{g}/sign) and fetch the trust
// bundle (GET /trust-bundle); and the module SAS token built from them or from a local key.
// docs/sdk.md lists the request and response shapes.
//
// Thread-safety: the functions block (each request opens its own connection, bounded by a
// timeout); call them off any io_context thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "cairn/module_client.hpp"
#include "core/result.hpp"

namespace cairn::sdk {

// "{iothub_hostname}/devices/{device_id}/modules/{module_id}": what a module token is for.
std::string token_resource(const ConnectionSettings& settings);

// HMAC-SHA256 of `data` under the module's key, by the workload API; the raw digest bytes.
// errc::unavailable when the socket cannot be reached, errc::unauthorized for 401/403,
// errc::invalid_argument for other refusals and for an answer without a base64 "digest".
[[nodiscard]] Result<std::string> workload_sign(const ConnectionSettings& settings,
                                                std::string_view data);
// The PEM bundle of CAs that sign edgeHub's server certificate.
[[nodiscard]] Result<std::string> workload_trust_bundle(const ConnectionSettings& settings);

// A SAS token for the module valid until `expiry_unix_s`, signed with the shared access key or
// by the workload API, whichever the settings carry.
[[nodiscard]] Result<std::string> make_module_token(const ConnectionSettings& settings,
                                                    std::int64_t expiry_unix_s);

}  // namespace cairn::sdk
