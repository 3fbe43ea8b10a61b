#include "net/service_client.hpp"

#include <algorithm>

#include "core/clock.hpp"
#include "core/crypto.hpp"

namespace cairn::net {
namespace {

constexpr std::int64_t kTokenValiditySeconds = 3600;

}  // namespace

std::map<std::string, std::string> parse_connection_string(std::string_view text) {
  constexpr std::string_view kBlank = " \t\r\n";
  std::map<std::string, std::string> fields;
  while (!text.empty()) {
    const auto semi = text.find(';');
    std::string_view field = text.substr(0, semi);
    field.remove_prefix(std::min(field.find_first_not_of(kBlank), field.size()));
    field = field.substr(0, field.find_last_not_of(kBlank) + 1);
    if (const auto eq = field.find('='); eq != std::string_view::npos) {
      fields[std::string(field.substr(0, eq))] = std::string(field.substr(eq + 1));
    }
    if (semi == std::string_view::npos) break;
    text.remove_prefix(semi + 1);
  }
  return fields;
}

Result<ServiceClient> ServiceClient::from_connection_string(std::string_view text) {
  auto fields = parse_connection_string(text);
  for (const char* name : {"HostName", "SharedAccessKeyName", "SharedAccessKey"}) {
    if (fields[name].empty()) {
      return make_error(errc::invalid_argument,
                        std::string("the service connection string lacks ") + name +
                            " (expected HostName=...;SharedAccessKeyName=...;SharedAccessKey=...)");
    }
  }
  ServiceClient c;
  c.host = fields["HostName"];
  c.policy = fields["SharedAccessKeyName"];
  c.key = fields["SharedAccessKey"];
  c.server.host = c.host;
  return c;
}

Result<std::string> ServiceClient::token() const {
  return crypto::make_sas_token(host, key, now_unix_s() + kTokenValiditySeconds, policy);
}

Result<HttpResponse> ServiceClient::request(std::string method, std::string target,
                                            std::string body, int timeout_seconds) const {
  auto token = this->token();
  if (!token) return std::move(token).error();
  HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  r.headers = {{"Authorization", *token}};
  return http_request(server, r, timeout_seconds);
}

}  // namespace cairn::net
