#include "sdk/workload_client.hpp"

#include <charconv>

#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "net/http.hpp"

namespace cairn::sdk {
namespace {

constexpr int kWorkloadTimeoutSecs = 10;

Result<net::HttpResponse> workload_request(const ConnectionSettings& s, net::HttpRequest request) {
  request.target += (request.target.find('?') == std::string::npos ? "?" : "&");
  request.target += "api-version=" + s.workload_api_version;
  if (s.workload_uri.starts_with("unix://")) {
    const std::string path = s.workload_uri.substr(std::string_view("unix://").size());
    auto r = net::unix_http_request(path, request, kWorkloadTimeoutSecs);
    if (!r) {
      return make_error(r.error().code,
                        "workload API at " + s.workload_uri + ": " + r.error().message);
    }
    return r;
  }
  // http://host:port[/]
  std::string_view rest =
      std::string_view(s.workload_uri).substr(std::string_view("http://").size());
  if (auto slash = rest.find('/'); slash != std::string_view::npos) rest = rest.substr(0, slash);
  net::HttpTarget target;
  target.tls = false;
  target.port = 80;
  if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    const std::string_view port = rest.substr(colon + 1);
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535) {
      return make_error(errc::invalid_argument, "workload URI has a bad port: " + s.workload_uri);
    }
    target.port = static_cast<std::uint16_t>(value);
    rest = rest.substr(0, colon);
  }
  target.host = std::string(rest);
  auto r = net::http_request(target, request, kWorkloadTimeoutSecs);
  if (!r) {
    return make_error(r.error().code,
                      "workload API at " + s.workload_uri + ": " + r.error().message);
  }
  return r;
}

Error refused(const net::HttpResponse& r, std::string_view what) {
  std::string message;
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  if (body.is_object() && body.contains("message") && body["message"].is_string()) {
    message = body["message"].get<std::string>();
  } else {
    message = r.body.substr(0, 200);
  }
  const errc code =
      r.status == 401 || r.status == 403 ? errc::unauthorized : errc::invalid_argument;
  return make_error(code, std::string(what) + " refused with HTTP " + std::to_string(r.status) +
                              (message.empty() ? "" : ": " + message));
}

}  // namespace

std::string token_resource(const ConnectionSettings& s) {
  return s.iothub_hostname + "/devices/" + s.device_id + "/modules/" + s.module_id;
}

Result<std::string> workload_sign(const ConnectionSettings& s, std::string_view data) {
  net::HttpRequest request;
  request.method = "POST";
  request.target = "/modules/" + crypto::url_encode(s.module_id) + "/genid/" +
                   crypto::url_encode(s.generation_id) + "/sign";
  request.body =
      nlohmann::json{
          {"keyId", "primary"}, {"algo", "HMACSHA256"}, {"data", crypto::base64_encode(data)}}
          .dump();
  auto r = workload_request(s, std::move(request));
  if (!r) return r.error();
  if (r->status != 200) return refused(*r, "workload sign");
  auto body = nlohmann::json::parse(r->body, nullptr, false);
  if (!body.is_object() || !body.contains("digest") || !body["digest"].is_string()) {
    return make_error(errc::invalid_argument, "workload sign: answer has no \"digest\" string");
  }
  auto digest = crypto::base64_decode(body["digest"].get<std::string>());
  if (!digest || digest->empty()) {
    return make_error(errc::invalid_argument, "workload sign: \"digest\" is not base64");
  }
  return std::move(*digest);
}

Result<std::string> workload_trust_bundle(const ConnectionSettings& s) {
  net::HttpRequest request;
  request.method = "GET";
  request.target = "/trust-bundle";
  auto r = workload_request(s, std::move(request));
  if (!r) return r.error();
  if (r->status != 200) return refused(*r, "workload trust-bundle");
  auto body = nlohmann::json::parse(r->body, nullptr, false);
  if (!body.is_object() || !body.contains("certificate") || !body["certificate"].is_string() ||
      body["certificate"].get<std::string>().find("-----BEGIN CERTIFICATE-----") ==
          std::string::npos) {
    return make_error(errc::invalid_argument,
                      "workload trust-bundle: answer has no PEM \"certificate\"");
  }
  return body["certificate"].get<std::string>();
}

Result<std::string> make_module_token(const ConnectionSettings& s, std::int64_t expiry_unix_s) {
  const std::string resource = token_resource(s);
  if (!s.uses_workload())
    return crypto::make_sas_token(resource, s.shared_access_key, expiry_unix_s);
  // The string to sign is the URL-encoded resource, a newline and the expiry (as IoT Hub checks).
  const std::string sr = crypto::url_encode(resource);
  const std::string se = std::to_string(expiry_unix_s);
  auto digest = workload_sign(s, sr + "\n" + se);
  if (!digest) return digest.error();
  return "SharedAccessSignature sr=" + sr +
         "&sig=" + crypto::url_encode(crypto::base64_encode(*digest)) + "&se=" + se;
}

}  // namespace cairn::sdk
