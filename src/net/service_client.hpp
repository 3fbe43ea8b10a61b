// The client side of the IoT Hub service REST API (cairn-cloud or IoT Hub itself): a service
// connection string "HostName=H;SharedAccessKeyName=P;SharedAccessKey=K" turned into requests
// that carry a fresh SAS token.
//
// Thread-safety: a ServiceClient is immutable after construction; request() may run on any
// thread (each call opens its own connection).
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "net/http.hpp"

namespace cairn::net {

// "K1=V1;K2=V2" -> {K1: V1, K2: V2}. Values may contain '=' (base64 keys), so each field splits
// at its first '='; blanks and line ends around a field are dropped.
std::map<std::string, std::string> parse_connection_string(std::string_view text);

struct ServiceClient {
  std::string host;    // HostName: the token audience
  std::string policy;  // SharedAccessKeyName
  std::string key;     // SharedAccessKey (base64)
  // Where requests go. from_connection_string() sets host = HostName, port 443, TLS.
  HttpTarget server;

  // errc::invalid_argument naming the first missing field.
  static Result<ServiceClient> from_connection_string(std::string_view text);

  // A service SAS token valid for an hour, for callers that send requests themselves (over a
  // kept connection, net/http_session.hpp).
  Result<std::string> token() const;

  // One request signed with a token valid for an hour. Transport failures are errors; any HTTP
  // status is a response.
  Result<HttpResponse> request(std::string method, std::string target, std::string body = {},
                               int timeout_seconds = 30) const;
};

}  // namespace cairn::net
