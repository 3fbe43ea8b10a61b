#include "cloud/rest_api.hpp"

#include <charconv>
#include <exception>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "cloud/ids.hpp"
#include "cloud/model_store.hpp"
#include "cloud/telemetry_sink.hpp"
#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "hub/identities.hpp"
#include "twin/twin.hpp"

namespace cairn::cloud {
namespace {

using nlohmann::json;

// IoT Hub error codes the SDKs recognise (or at least print).
constexpr const char* kArgumentInvalid = "ArgumentInvalid";
constexpr const char* kUnauthorized = "IotHubUnauthorizedAccess";
constexpr const char* kDeviceNotFound = "DeviceNotFound";
constexpr const char* kModuleNotFound = "ModuleNotFound";
constexpr const char* kDeviceNotOnline = "DeviceNotOnline";
constexpr const char* kNotFound = "NotFound";
constexpr const char* kMethodNotAllowed = "MethodNotAllowed";
constexpr const char* kDeviceAlreadyExists = "DeviceAlreadyExists";
constexpr const char* kModuleAlreadyExists = "ModuleAlreadyExistsOnDevice";
constexpr const char* kPreconditionFailed = "PreconditionFailed";
constexpr const char* kGatewayTimeout = "GatewayTimeout";
constexpr const char* kServiceUnavailable = "ServiceUnavailable";
constexpr const char* kServerError = "ServerError";

// Retry-After of a 503 answered because the database could not serve the request in time.
constexpr int kRetryAfterSecs = 2;

std::string tracking_id() { return crypto::sha256_hex(crypto::random_bytes(16)).substr(0, 32); }

// IoT Hub's error body. The SDKs split Message at the first ';' (code before it, text after)
// and keep only the next part, so the text itself must not contain ';'.
// `tracking` receives the tracking id, for callers that log the details.
net::HttpResponse error_response(int status, std::string_view code, std::string_view text,
                                 std::string* tracking = nullptr) {
  std::string clean(text);
  for (char& c : clean) {
    if (c == ';') c = ',';
  }
  const std::string id = tracking_id();
  if (tracking != nullptr) *tracking = id;
  json body{{"Message", fmt::format("ErrorCode:{};{}", code, clean)},
            {"ExceptionMessage",
             fmt::format("Tracking ID:{}-TimeStamp:{}", id, format_iso8601(now_unix_ms()))}};
  log::debug("cloud", "rest status={} code={} tracking={} msg={}", status, code, id, clean);
  net::HttpResponse r;
  r.status = status;
  r.body = twin::dump_json(body);
  return r;
}

// The one place where errors become HTTP statuses. `module_scope`: the request names a module,
// so a missing module is ModuleNotFound (a missing device stays DeviceNotFound).
net::HttpResponse error_from(const Error& e, bool module_scope = false) {
  const bool about_module = module_scope && e.message.starts_with("module");
  switch (e.code) {
    case errc::invalid_argument:
    case errc::limit_exceeded:
      return error_response(400, kArgumentInvalid, e.message);
    case errc::unauthorized:
      return error_response(401, kUnauthorized, e.message);
    case errc::not_found:
      return error_response(404, about_module ? kModuleNotFound : kDeviceNotFound, e.message);
    case errc::already_exists:
      return error_response(409, about_module ? kModuleAlreadyExists : kDeviceAlreadyExists,
                            e.message);
    case errc::cancelled:
      return error_response(412, kPreconditionFailed, e.message);
    case errc::unavailable: {
      // The database is locked or busy, the store queue is full: worth trying again soon.
      auto r = error_response(503, kServiceUnavailable, e.message);
      r.headers.emplace_back("Retry-After", std::to_string(kRetryAfterSecs));
      return r;
    }
    case errc::timeout:
      return error_response(504, kGatewayTimeout, e.message);
    default: {
      // Storage details (SQL, file names) are for the operator, not the caller.
      std::string tracking;
      auto r = error_response(500, kServerError,
                              "the request failed inside cairn-cloud: see its log (tracking id "
                              "in ExceptionMessage)",
                              &tracking);
      log::error("cloud", "rest request failed tracking={}: {}", tracking, e.to_string());
      return r;
    }
  }
}

// Model store errors: the store's checks say what was wrong; the status says whose fault.
net::HttpResponse model_error(const Error& e) {
  switch (e.code) {
    case errc::invalid_argument:
    case errc::corruption:
      return error_response(400, kArgumentInvalid, e.message);
    case errc::limit_exceeded:
      return error_response(413, "RequestEntityTooLarge", e.message);
    case errc::not_found:
      return error_response(404, kNotFound, e.message);
    case errc::already_exists:
      return error_response(409, "Conflict", e.message);
    case errc::cancelled:  // a signature of an index that is no longer the stored one
      return error_response(412, kPreconditionFailed, e.message);
    default:
      return error_from(e);
  }
}

using net::json_response;

net::HttpResponse no_content() {
  net::HttpResponse r;
  r.status = 204;
  r.content_type.clear();
  return r;
}

Result<json> parse_body(const net::HttpRequest& request) {
  if (request.body.empty()) {
    return make_error(errc::invalid_argument, "the request body is empty: send a JSON document");
  }
  auto body = twin::parse_json(request.body);
  if (!body) {
    return make_error(errc::invalid_argument,
                      "the request body is not valid JSON: " + body.error().message);
  }
  return body;
}

// Splits the path into URL-decoded segments; "/devices/" and "/devices" are the same.
Result<std::vector<std::string>> path_segments(const std::string& target) {
  std::string_view path = std::string_view(target).substr(0, target.find('?'));
  if (path.starts_with('/')) path.remove_prefix(1);
  if (path.ends_with('/')) path.remove_suffix(1);
  std::vector<std::string> out;
  if (path.empty()) return out;
  for (;;) {
    auto slash = path.find('/');
    auto decoded = crypto::url_decode(path.substr(0, slash));
    if (!decoded) {
      return make_error(errc::invalid_argument, "the request path has a bad %-escape");
    }
    out.push_back(std::move(*decoded));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

Result<std::int64_t> int_param(const std::string& target, const char* name, std::int64_t fallback,
                               std::int64_t lo, std::int64_t hi) {
  const std::string text = net::http_query_param(target, name);
  if (text.empty()) return fallback;
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v < lo || v > hi) {
    return make_error(
        errc::invalid_argument,
        fmt::format("query parameter {} must be an integer from {} to {}", name, lo, hi));
  }
  return v;
}

}  // namespace

struct RestApi::Call : std::enable_shared_from_this<Call> {
  Call(const net::HttpRequest& r, net::HttpRespond done, const StoreRunner& on)
      : request(r), respond(std::move(done)), runner(on) {}

  const net::HttpRequest request;  // a copy: the call may outlive handle()
  net::HttpRespond respond;        // on the io thread
  const StoreRunner& runner;
  std::vector<std::string> seg;

  const std::string& method() const { return request.method; }
  // From any thread: the answer goes out on the io thread.
  void reply(net::HttpResponse r) {
    runner.io([respond = respond, r = std::move(r)]() mutable { respond(std::move(r)); });
  }
  void fail(const Error& e, bool module_scope = false) { reply(error_from(e, module_scope)); }
  // 405 unless the request's method is one of `allowed`.
  bool allow(std::initializer_list<std::string_view> allowed) {
    std::string list;
    for (auto m : allowed) {
      if (m == request.method) return true;
      if (!list.empty()) list += ", ";
      list += m;
    }
    auto r = error_response(
        405, kMethodNotAllowed,
        fmt::format("{} is not supported here (use {})", request.method.substr(0, 16), list));
    r.headers.emplace_back("Allow", list);
    reply(std::move(r));
    return false;
  }
};

RestApi::RestApi(RestApiConfig config, Registry& registry, CloudTwins& twins, RestHooks hooks,
                 Clock clock)
    : config_(std::move(config)),
      registry_(registry),
      twins_(twins),
      deployments_(registry, twins),
      hooks_(std::move(hooks)),
      clock_(std::move(clock)) {
  // Requests are served on the store's thread; what they ask of the hub happens on the io
  // thread, in the order asked (a revocation before the reply that reports the change).
  if (!hooks_.store) return;
  const StoreRunner& runner = hooks_.store;
  if (auto push = std::move(hooks_.push_desired)) {
    hooks_.push_desired = [&runner, push](const std::string& client_id, const json& patch) {
      runner.io([push, client_id, patch] { push(client_id, patch); });
    };
  }
  if (auto invoke = std::move(hooks_.invoke_method)) {
    hooks_.invoke_method = [&runner, invoke](const std::string& client_id,
                                             hub::MethodRequest request, hub::MethodCallback done) {
      runner.io([invoke, client_id, request = std::move(request), done = std::move(done)] {
        invoke(client_id, request, done);
      });
    };
  }
  for (auto* hook : {&hooks_.disconnect_client, &hooks_.disconnect_device}) {
    if (auto disconnect = std::move(*hook)) {
      *hook = [&runner, disconnect](const std::string& id, const std::string& reason) {
        runner.io([disconnect, id, reason] { disconnect(id, reason); });
      };
    }
  }
}

std::int64_t RestApi::now_ms() const { return clock_ ? clock_() : now_unix_ms(); }

std::optional<bool> RestApi::live(const std::string& client_id) const {
  if (!hooks_.is_connected) return std::nullopt;
  return hooks_.is_connected(client_id);
}

void RestApi::push(const std::string& client_id, const std::optional<json>& patch) {
  if (patch && hooks_.push_desired) hooks_.push_desired(client_id, *patch);
}

void RestApi::handle(const net::HttpRequest& request, net::HttpRespond respond) {
  auto call = std::make_shared<Call>(request, std::move(respond), hooks_.store);
  // Published model files are public, as on any static server or CDN the layout is made for:
  // devices fetch them without a service key (docs/cloud_api.md, "Model store").
  if (hooks_.models && net::http_path(request.target).starts_with("/models/")) {
    return published_model_file(*call);
  }
  // Everything else starts with a policy or identity lookup: on the store's thread.
  hooks_.store.store(
      fmt::format("REST {} {}", request.method.substr(0, 16),
                  net::http_path(request.target).substr(0, 200)),
      [this, call] { authorize(*call); }, [call](const Error& e) { call->respond(error_from(e)); });
}

void RestApi::authorize(Call& call) {
  const net::HttpRequest& request = call.request;
  // Authentication first, so an unauthenticated caller learns nothing about what exists.
  const std::string header = request.header("Authorization");
  if (header.empty()) {
    call.reply(error_response(401, kUnauthorized,
                              "missing Authorization header: send SharedAccessSignature "
                              "sr={hostname}&sig=...&se=...&skn={policy}"));
    return;
  }
  auto token = crypto::parse_sas_token(header);
  if (!token) {
    call.reply(error_response(401, kUnauthorized,
                              "the Authorization header is not a SharedAccessSignature token"));
    return;
  }
  const std::int64_t now_s = now_ms() / 1000;
  if (token->expiry <= now_s) {
    call.reply(error_response(401, kUnauthorized, "the SAS token has expired"));
    return;
  }
  if (auto s = hub::check_token_lifetime(token->expiry, now_s, config_.max_token_lifetime_secs,
                                         "--max-token-lifetime-secs");
      !s) {
    call.reply(error_response(401, kUnauthorized, s.error().message));
    return;
  }
  std::string_view audience = token->resource;
  if (audience.ends_with('/')) audience.remove_suffix(1);
  const std::string device_prefix = config_.hostname + "/devices/";
  if (audience.size() > device_prefix.size() &&
      iequals(audience.substr(0, device_prefix.size()), device_prefix)) {
    auto seg = path_segments(request.target);
    if (!seg) return call.fail(seg.error());
    call.seg = std::move(*seg);
    return device_scoped(call, *token, std::string(audience.substr(device_prefix.size())));
  }
  if (!iequals(audience, config_.hostname)) {
    call.reply(error_response(
        401, kUnauthorized,
        fmt::format("the token's audience (sr) must be '{}' (a service token) or '{}{{deviceId}}' "
                    "(an edge device's own token)",
                    config_.hostname, device_prefix)));
    return;
  }
  if (token->key_name.empty()) {
    call.reply(error_response(401, kUnauthorized, "the SAS token names no access policy (skn)"));
    return;
  }
  auto policy = registry_.store().find_policy(token->key_name);
  if (!policy) return call.fail(policy.error());
  if (!*policy || !(crypto::verify_sas_signature(*token, (*policy)->primary_key) ||
                    crypto::verify_sas_signature(*token, (*policy)->secondary_key))) {
    // One message for both: which policy names exist is not the caller's business.
    call.reply(error_response(401, kUnauthorized,
                              "the SAS token is not signed by a key of the named access policy"));
    return;
  }

  auto seg = path_segments(request.target);
  if (!seg) return call.fail(seg.error());
  call.seg = std::move(*seg);
  try {
    dispatch(call);
  } catch (const std::exception& e) {
    // A bug, not bad input (input is validated before use); answer rather than drop the
    // connection.
    log::error("cloud", "rest handler threw for {} {}: {}", request.method,
               net::http_path(request.target), e.what());
    call.reply(error_response(500, kServerError, "internal error"));
  }
}

void RestApi::device_scoped(Call& call, const crypto::SasToken& token,
                            const std::string& device_id) {
  auto refuse = [&call](std::string_view why) {
    call.reply(error_response(401, kUnauthorized, why));
  };
  if (device_id.find('/') != std::string::npos) {
    return refuse("a device-scoped token's audience is {hostname}/devices/{deviceId}");
  }
  auto device = registry_.store().find_device(device_id);
  if (!device) return call.fail(device.error());
  // One message for unknown, disabled, not an edge device and a bad signature: which devices
  // exist is not the caller's business.
  if (!*device || !(*device)->enabled || !(*device)->iot_edge ||
      !hub::signed_by(token, (*device)->primary_key, (*device)->secondary_key)) {
    return refuse(
        "the SAS token is not signed by an enabled edge device's key (device tokens serve "
        "only DELETE /devices/{deviceId}/modules/{moduleId})");
  }
  const auto& seg = call.seg;
  if (seg.size() != 4 || seg[0] != "devices" || seg[2] != "modules" || seg[1] != device_id ||
      seg[3].empty() || call.method() != "DELETE") {
    return refuse(
        fmt::format("a token of device '{}' may only delete that device's modules "
                    "(DELETE /devices/{}/modules/{{moduleId}})",
                    device_id, device_id));
  }
  if (auto s = registry_.delete_module(device_id, seg[3], "*"); !s) {
    return call.fail(s.error(), true);
  }
  log::info("cloud", "edge device {} deleted its module {}", device_id, seg[3]);
  revoke_client(device_id + "/" + seg[3], "module identity deleted by its edge device");
  call.reply(no_content());
}

void RestApi::revoke_client(const std::string& client_id, const std::string& reason) {
  if (hooks_.disconnect_client) hooks_.disconnect_client(client_id, reason);
}

void RestApi::revoke_device(const DeviceRecord& before, const DeviceRecord* after) {
  if (!hooks_.disconnect_device || !hooks_.disconnect_client) return;
  if (after == nullptr) return hooks_.disconnect_device(before.device_id, "device deleted");
  if (!after->enabled && before.enabled) {
    return hooks_.disconnect_device(before.device_id, "device disabled");
  }
  if (after->primary_key == before.primary_key && after->secondary_key == before.secondary_key) {
    return;
  }
  // An edge device signs its modules' connections with its own key, so they go too (and
  // reconnect with the new key); other devices' modules have keys of their own.
  if (before.iot_edge) return hooks_.disconnect_device(before.device_id, "device keys changed");
  hooks_.disconnect_client(before.device_id, "device keys changed");
}

void RestApi::revoke_module(const ModuleRecord& before, const ModuleRecord* after) {
  if (after != nullptr && after->primary_key == before.primary_key &&
      after->secondary_key == before.secondary_key) {
    return;
  }
  revoke_client(before.device_id + "/" + before.module_id,
                after == nullptr ? "module deleted" : "module keys changed");
}

void RestApi::dispatch(Call& call) {
  const auto& seg = call.seg;
  const std::size_t n = seg.size();
  auto not_found = [&] {
    call.reply(error_response(
        404, kNotFound,
        fmt::format("no such resource: {}", net::http_path(call.request.target).substr(0, 200))));
  };
  if (n == 0) return not_found();
  // Ids are never empty: "/devices//modules" is not a device's modules.
  for (std::size_t i = 1; i < n; ++i) {
    if (seg[i].empty()) return not_found();
  }
  if (seg[0] == "devices") {
    if (n <= 2) return devices(call);
    if (n == 3 && seg[2] == "applyConfigurationContent") return apply_configuration(call);
    if ((n == 3 || n == 4) && seg[2] == "modules") return modules(call);
    return not_found();
  }
  if (seg[0] == "twins") {
    if (n == 2 || (n == 4 && seg[2] == "modules")) return twins(call);
    if ((n == 3 && seg[2] == "methods") || (n == 5 && seg[2] == "modules" && seg[4] == "methods")) {
      return methods(call);
    }
    return not_found();
  }
  if (seg[0] == "cairn") return cairn(call);
  return not_found();
}

void RestApi::devices(Call& call) {
  const auto& seg = call.seg;
  if (seg.size() == 1) {
    if (!call.allow({"GET"})) return;
    auto top =
        int_param(call.request.target, "top", static_cast<std::int64_t>(config_.max_devices_listed),
                  1, static_cast<std::int64_t>(config_.max_devices_listed));
    if (!top) return call.fail(top.error());
    auto list = registry_.list_devices(static_cast<std::size_t>(*top));
    if (!list) return call.fail(list.error());
    json out = json::array();
    for (const auto& d : *list) out.push_back(device_to_json(d, live(d.device_id)));
    return call.reply(json_response(200, out));
  }
  const std::string& id = seg[1];
  if (!call.allow({"GET", "PUT", "DELETE"})) return;
  const std::string if_match = call.request.header("If-Match");
  if (call.method() == "GET") {
    auto d = registry_.get_device(id);
    if (!d) return call.fail(d.error());
    return call.reply(json_response(200, device_to_json(*d, live(id)), d->etag));
  }
  if (call.method() == "DELETE") {
    auto before = registry_.get_device(id);
    if (auto s = registry_.delete_device(id, if_match); !s) return call.fail(s.error());
    if (before) revoke_device(*before, nullptr);
    return call.reply(no_content());
  }
  auto body = parse_body(call.request);
  if (!body) return call.fail(body.error());
  auto spec = device_spec_from_json(*body);
  if (!spec) return call.fail(spec.error());
  if (spec->device_id.empty()) spec->device_id = id;
  if (spec->device_id != id) {
    return call.fail(make_error(errc::invalid_argument,
                                fmt::format("deviceId in the body ('{}') differs from the one in "
                                            "the path ('{}')",
                                            spec->device_id, id)));
  }
  // IoT Hub: no If-Match creates (409 if the device exists), an If-Match updates.
  if (if_match.empty()) {
    auto d = registry_.create_device(*spec);
    if (!d) return call.fail(d.error());
    return call.reply(json_response(200, device_to_json(*d, live(id)), d->etag));
  }
  auto before = registry_.get_device(id);
  if (!before) return call.fail(before.error());
  auto d = registry_.update_device(*spec, if_match);
  if (!d) return call.fail(d.error());
  revoke_device(*before, &*d);
  call.reply(json_response(200, device_to_json(*d, live(id)), d->etag));
}

void RestApi::modules(Call& call) {
  const auto& seg = call.seg;
  const std::string& device_id = seg[1];
  if (seg.size() == 3) {
    if (!call.allow({"GET"})) return;
    auto list = registry_.list_modules(device_id);
    if (!list) return call.fail(list.error());
    json out = json::array();
    for (const auto& m : *list) {
      out.push_back(module_to_json(m, live(device_id + "/" + m.module_id)));
    }
    return call.reply(json_response(200, out));
  }
  const std::string& module_id = seg[3];
  const std::string client_id = device_id + "/" + module_id;
  if (!call.allow({"GET", "PUT", "DELETE"})) return;
  const std::string if_match = call.request.header("If-Match");
  if (call.method() == "GET") {
    auto m = registry_.get_module(device_id, module_id);
    if (!m) return call.fail(m.error(), true);
    return call.reply(json_response(200, module_to_json(*m, live(client_id)), m->etag));
  }
  if (call.method() == "DELETE") {
    if (auto s = registry_.delete_module(device_id, module_id, if_match); !s) {
      return call.fail(s.error(), true);
    }
    revoke_client(client_id, "module deleted");
    return call.reply(no_content());
  }
  auto body = parse_body(call.request);
  if (!body) return call.fail(body.error());
  auto spec = module_spec_from_json(*body);
  if (!spec) return call.fail(spec.error());
  if (spec->device_id.empty()) spec->device_id = device_id;
  if (spec->module_id.empty()) spec->module_id = module_id;
  if (spec->device_id != device_id || spec->module_id != module_id) {
    return call.fail(make_error(errc::invalid_argument,
                                fmt::format("deviceId/moduleId in the body ('{}/{}') differ from "
                                            "the path ('{}')",
                                            spec->device_id, spec->module_id, client_id)));
  }
  const bool create = if_match.empty();
  std::optional<ModuleRecord> before;
  if (!create) {
    auto found = registry_.get_module(device_id, module_id);
    if (!found) return call.fail(found.error(), true);
    before = std::move(*found);
  }
  auto m = create ? registry_.create_module(*spec) : registry_.update_module(*spec, if_match);
  if (!m) return call.fail(m.error(), true);
  if (before) revoke_module(*before, &*m);
  call.reply(json_response(create ? 201 : 200, module_to_json(*m, live(client_id)), m->etag));
}

void RestApi::twins(Call& call) {
  const auto& seg = call.seg;
  if (!call.allow({"GET", "PATCH", "PUT"})) return;
  TwinKey key{seg[1], seg.size() == 4 ? seg[3] : std::string()};
  const bool module_scope = !key.module_id.empty();
  const std::string client_id = key.client_id();
  TwinRecord rec;
  if (call.method() == "GET") {
    auto found = twins_.find(key);
    if (!found) return call.fail(found.error(), module_scope);
    rec = std::move(*found);
  } else {
    auto body = parse_body(call.request);
    if (!body) return call.fail(body.error());
    const std::string if_match = call.request.header("If-Match");
    auto written = call.method() == "PATCH" ? twins_.update(key, *body, if_match)
                                            : twins_.replace(key, *body, if_match);
    if (!written) return call.fail(written.error(), module_scope);
    push(client_id, written->desired_patch);
    rec = std::move(written->twin);
  }
  auto out = twins_.service_json(rec, live(client_id));
  if (!out) return call.fail(out.error(), module_scope);
  call.reply(json_response(200, *out, rec.etag));
}

void RestApi::methods(Call& call) {
  const auto& seg = call.seg;
  if (!call.allow({"POST"})) return;
  TwinKey key{seg[1], seg.size() == 5 ? seg[3] : std::string()};
  const bool module_scope = !key.module_id.empty();
  auto body = parse_body(call.request);
  if (!body) return call.fail(body.error());
  auto request = hub::parse_method_request(*body);
  if (!request) return call.fail(request.error());
  // An unregistered target is "not found"; a registered one that is not connected is "not
  // online" (answered by the hub after the connect timeout).
  if (module_scope) {
    auto m = registry_.get_module(key.device_id, key.module_id);
    if (!m) return call.fail(m.error(), true);
  } else {
    auto d = registry_.get_device(key.device_id);
    if (!d) return call.fail(d.error());
  }
  if (!hooks_.invoke_method) {
    return call.reply(error_response(503, kServiceUnavailable, "direct methods are not available"));
  }
  const std::string client_id = key.client_id();
  hooks_.invoke_method(
      client_id, std::move(*request),
      [respond = call.respond, client_id](Result<hub::MethodResponse> r) {
        if (r) {
          respond(json_response(200, json{{"status", r->status}, {"payload", r->payload}}));
          return;
        }
        const int status = hub::method_error_status(r.error().code);
        const char* code = status == 404   ? kDeviceNotOnline
                           : status == 504 ? kGatewayTimeout
                           : status == 400 ? kArgumentInvalid
                           : status == 503 ? kServiceUnavailable
                                           : kServerError;
        respond(error_response(
            status, code,
            fmt::format("method call to '{}' failed: {}", client_id, r.error().message)));
      });
}

void RestApi::apply_configuration(Call& call) {
  if (!call.allow({"POST"})) return;
  auto body = parse_body(call.request);
  if (!body) return call.fail(body.error());
  auto pushes = deployments_.apply(call.seg[1], *body);
  if (!pushes) return call.fail(pushes.error());
  for (const auto& p : *pushes) push(p.client_id, p.patch);
  call.reply(no_content());
}

void RestApi::cairn(Call& call) {
  const auto& seg = call.seg;
  const std::size_t n = seg.size();
  if (n == 2 && seg[1] == "messages") return messages(call);
  if (n == 2 && seg[1] == "status") return status(call);
  // The hub's counters, its dead letters and the model store live on the io thread.
  if (n == 2 && seg[1] == "metrics" && hooks_.metrics) {
    if (!call.allow({"GET"})) return;
    return hooks_.store.io([this, c = call.shared_from_this()] {
      c->respond(net::HttpResponse{200, hooks_.metrics(), "text/plain; version=0.0.4", {}});
    });
  }
  if (n == 2 && seg[1] == "deadletters" && hooks_.list_dead_letters) {
    if (!call.allow({"GET"})) return;
    return hooks_.store.io(
        [this, c = call.shared_from_this()] { hooks_.list_dead_letters(c->respond); });
  }
  if (n >= 2 && seg[1] == "models" && hooks_.models) {
    return hooks_.store.io([this, c = call.shared_from_this()] { models(*c); });
  }
  if (n >= 3 && seg[1] == "devices") {
    if ((n == 4 && seg[3] == "regenerateKey") ||
        (n == 6 && seg[3] == "modules" && seg[5] == "regenerateKey")) {
      return regenerate(call);
    }
    if (n == 4 && seg[3] == "deployment") {
      if (!call.allow({"GET"})) return;
      auto device = registry_.get_device(seg[2]);
      if (!device) return call.fail(device.error());
      auto d = deployments_.last(seg[2]);
      if (!d) return call.fail(d.error());
      if (!*d) {
        return call.reply(error_response(404, kNotFound,
                                         fmt::format("device '{}' has no deployment yet", seg[2])));
      }
      return call.reply(json_response(200, json{{"deviceId", (*d)->device_id},
                                                {"version", (*d)->version},
                                                {"appliedTime", service_time((*d)->applied_ms)},
                                                {"content", (*d)->content}}));
    }
  }
  call.reply(error_response(
      404, kNotFound,
      fmt::format("no such resource: {}", net::http_path(call.request.target).substr(0, 200))));
}

void RestApi::messages(Call& call) {
  if (!call.allow({"GET"})) return;
  const std::string& target = call.request.target;
  TelemetryQuery q;
  if (auto d = net::http_query_param(target, "deviceId"); !d.empty()) q.device_id = d;
  if (auto m = net::http_query_param(target, "moduleId"); !m.empty()) q.module_id = m;
  auto after = int_param(target, "after", 0, 0, std::numeric_limits<std::int64_t>::max());
  if (!after) return call.fail(after.error());
  auto limit =
      int_param(target, "limit", 100, 1, static_cast<std::int64_t>(config_.max_messages_listed));
  if (!limit) return call.fail(limit.error());
  q.after_seq = *after;
  q.limit = static_cast<std::size_t>(*limit);
  auto list = registry_.store().list_telemetry(q);
  if (!list) return call.fail(list.error());
  json out = json::array();
  for (const auto& r : *list) out.push_back(telemetry_to_json(r));
  call.reply(json_response(200, out));
}

void RestApi::status(Call& call) {
  if (!call.allow({"GET"})) return;
  auto counts = registry_.store().counts();
  if (!counts) return call.fail(counts.error());
  const auto& tc = twins_.counters();
  json out{
      {"hostname", config_.hostname},
      {"devices", counts->devices},
      {"modules", counts->modules},
      {"telemetry",
       {{"stored", counts->telemetry},
        {"duplicates", counts->duplicates},
        {"duplicatesByKey", counts->duplicates_by_key}}},
      {"twins",
       {{"reportedPatches", tc.reported_patches}, {"reportedRejected", tc.reported_rejected}}}};
  hooks_.store.io([this, c = call.shared_from_this(), out = std::move(out)]() mutable {
    if (hooks_.status_extension) out.merge_patch(hooks_.status_extension());
    c->respond(json_response(200, out));
  });
}

void RestApi::regenerate(Call& call) {
  if (!call.allow({"POST"})) return;
  const auto& seg = call.seg;
  auto body = parse_body(call.request);
  if (!body) return call.fail(body.error());
  auto key = body->is_object() ? body->find("key") : body->end();
  if (!body->is_object() || key == body->end() || !key->is_string()) {
    return call.fail(make_error(errc::invalid_argument,
                                "send {\"key\": \"primary\" | \"secondary\" | \"swap\"}"));
  }
  auto which = parse_key_kind(key->get<std::string>());
  if (!which) return call.fail(which.error());
  if (seg.size() == 4) {
    auto before = registry_.get_device(seg[2]);
    if (!before) return call.fail(before.error());
    auto d = registry_.regenerate_device_key(seg[2], *which);
    if (!d) return call.fail(d.error());
    revoke_device(*before, &*d);
    return call.reply(json_response(200, device_to_json(*d, live(seg[2])), d->etag));
  }
  auto before = registry_.get_module(seg[2], seg[4]);
  if (!before) return call.fail(before.error(), true);
  auto m = registry_.regenerate_module_key(seg[2], seg[4], *which);
  if (!m) return call.fail(m.error(), true);
  revoke_module(*before, &*m);
  call.reply(json_response(200, module_to_json(*m, live(seg[2] + "/" + seg[4])), m->etag));
}

void RestApi::models(Call& call) {
  const auto& seg = call.seg;
  const std::size_t n = seg.size();
  ModelStore& store = *hooks_.models;
  auto reply = [&call](Result<json> r) {
    call.reply(r ? json_response(200, *r) : model_error(r.error()));
  };
  if (n == 2) {
    if (!call.allow({"GET"})) return;
    return reply(store.list());
  }
  if (n == 6 && seg[3] == "versions" && seg[5] == "missing") {
    if (!call.allow({"POST"})) return;
    return reply(store.missing(seg[2], seg[4], call.request.body));
  }
  if (n == 4 && seg[2] == "chunks") {
    if (!call.allow({"PUT"})) return;
    return reply(store.put_chunk(seg[3], call.request.body));
  }
  // Signatures, removals and commits are answered by the store's thread, in the order asked
  // (deltas take seconds; the io thread must not wait for them).
  auto respond_later = [respond = call.respond](Result<json> r) {
    respond(r ? json_response(200, *r) : model_error(r.error()));
  };
  if (n == 6 && seg[3] == "versions" && seg[5] == "signature") {
    if (!call.allow({"PUT"})) return;
    // If-Match: "SHA256" of the index bytes that were signed.
    return store.put_signature(seg[2], seg[4], call.request.body, call.request.header("If-Match"),
                               respond_later);
  }
  if (n == 5 && seg[3] == "versions" && call.method() == "DELETE") {
    return store.remove(seg[2], seg[4], respond_later);
  }
  if (n == 5 && seg[3] == "versions") {
    if (!call.allow({"PUT", "DELETE"})) return;
    return store.commit(seg[2], seg[4], call.request.body, respond_later);
  }
  call.reply(error_response(
      404, kNotFound,
      fmt::format("no such resource: {}", net::http_path(call.request.target).substr(0, 200))));
}

void RestApi::published_model_file(Call& call) {
  if (call.method() != "GET" && call.method() != "HEAD") {
    auto r = error_response(405, kMethodNotAllowed,
                            "published models are read-only here (GET); push with `cairn cloud "
                            "model push`");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return call.reply(std::move(r));
  }
  const std::string path = net::http_path(call.request.target);
  auto relative =
      crypto::url_decode(std::string_view(path).substr(std::string_view("/models/").size()));
  if (!relative) {
    return call.reply(model_error(make_error(errc::invalid_argument, "bad %-escape in the path")));
  }
  auto bytes = hooks_.models->read(*relative);
  if (!bytes) return call.reply(model_error(bytes.error()));
  net::HttpResponse r;
  r.status = 200;
  r.content_type = "application/octet-stream";
  r.body = std::move(*bytes);
  call.reply(std::move(r));
}

}  // namespace cairn::cloud
