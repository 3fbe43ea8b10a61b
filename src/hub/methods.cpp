#include "hub/methods.hpp"

#include <cstdio>

#include "core/crypto.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "hub/iothub_topics.hpp"

namespace cairn::hub {

Result<MethodRequest> parse_method_request(const nlohmann::json& body) {
  if (!body.is_object()) {
    return make_error(errc::invalid_argument, "a method request must be a JSON object");
  }
  MethodRequest r;
  auto name = body.find("methodName");
  if (name == body.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return make_error(errc::invalid_argument, "methodName (a non-empty string) is required");
  }
  r.method_name = name->get<std::string>();
  if (r.method_name.size() > kMaxMethodNameLength) {
    return make_error(
        errc::invalid_argument,
        "methodName is longer than " + std::to_string(kMaxMethodNameLength) + " characters");
  }
  // The name becomes a topic level: '/', '#', '+' and NUL would change the topic's meaning.
  if (r.method_name.find_first_of(std::string_view("/#+\0", 4)) != std::string::npos) {
    return make_error(errc::invalid_argument, "methodName may not contain '/', '#', '+' or NUL");
  }
  if (auto p = body.find("payload"); p != body.end()) r.payload = *p;
  if (dump_json(r.payload).size() > kMaxMethodPayloadBytes) {
    return make_error(errc::limit_exceeded, "method payload exceeds " +
                                                std::to_string(kMaxMethodPayloadBytes) + " bytes");
  }
  auto seconds = [&](const char* key, std::chrono::seconds fallback, std::chrono::seconds lo,
                     std::chrono::seconds hi) -> Result<std::chrono::seconds> {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return fallback;
    if (!it->is_number_integer()) {
      return make_error(errc::invalid_argument, std::string(key) + " must be an integer");
    }
    auto v = it->get<std::int64_t>();
    if (v < lo.count() || v > hi.count()) {
      return make_error(errc::invalid_argument, std::string(key) + " must be between " +
                                                    std::to_string(lo.count()) + " and " +
                                                    std::to_string(hi.count()));
    }
    return std::chrono::seconds(v);
  };
  auto response = seconds("responseTimeoutInSeconds", kDefaultResponseTimeout, kMinResponseTimeout,
                          kMaxResponseTimeout);
  if (!response) return std::move(response).error();
  auto connect = seconds("connectTimeoutInSeconds", std::chrono::seconds(0),
                         std::chrono::seconds(0), kMaxConnectTimeout);
  if (!connect) return std::move(connect).error();
  r.response_timeout = *response;
  r.connect_timeout = *connect;
  return r;
}

int method_error_status(errc code) {
  switch (code) {
    case errc::not_found:
      return 404;
    case errc::timeout:
      return 504;
    case errc::invalid_argument:
    case errc::limit_exceeded:
      return 400;
    case errc::unavailable:
      return 503;
    default:
      return 500;
  }
}

std::string new_request_id() {
  auto b = crypto::random_bytes(16);
  auto byte = [&](std::size_t i) {
    return static_cast<unsigned>(static_cast<unsigned char>(b[i]));
  };
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", byte(0),
                byte(1), byte(2), byte(3), byte(4), byte(5), byte(6), byte(7), byte(8), byte(9),
                byte(10), byte(11), byte(12), byte(13), byte(14), byte(15));
  return out;
}

struct MethodCalls::Call {
  Call(asio::io_context& io, std::string id, std::string client, MethodRequest req,
       MethodCallback cb)
      : rid(std::move(id)),
        client_id(std::move(client)),
        request(std::move(req)),
        done(std::move(cb)),
        timer(io) {}
  std::string rid;
  std::string client_id;
  MethodRequest request;
  MethodCallback done;
  asio::steady_timer timer;
  bool sent = false;  // false: waiting for the target to subscribe
};

MethodCalls::MethodCalls(asio::io_context& io, Send send) : io_(io), send_(std::move(send)) {}

MethodCalls::~MethodCalls() { cancel_all(); }

void MethodCalls::invoke(const std::string& client_id, MethodRequest request, MethodCallback done) {
  auto rid = new_request_id();
  auto call = std::make_shared<Call>(io_, rid, client_id, std::move(request), std::move(done));
  calls_.emplace(rid, call);
  dispatch(call);
  if (call->sent || calls_.count(rid) == 0) return;
  if (call->request.connect_timeout.count() == 0) {
    finish(rid, make_error(errc::not_found, "Client " + client_id +
                                                " is not connected with a methods subscription"));
    return;
  }
  // Wait for the target to connect and subscribe, up to the connect timeout.
  call->timer.expires_after(call->request.connect_timeout);
  call->timer.async_wait([this, rid](error_code ec) {
    if (ec) return;
    auto it = calls_.find(rid);
    if (it == calls_.end() || it->second->sent) return;
    finish(rid, make_error(errc::not_found, "Client " + it->second->client_id +
                                                " not found within the connect timeout"));
  });
}

void MethodCalls::dispatch(const std::shared_ptr<Call>& call) {
  const std::string rid = call->rid;
  // A null payload goes out as "null", as IoT Hub sends it: the SDKs parse the body as JSON and
  // an empty one fails the call before the module's handler sees it.
  auto payload = dump_json(call->request.payload);
  if (!send_(call->client_id, method_request_topic(call->request.method_name, rid),
             std::move(payload))) {
    return;
  }
  call->sent = true;
  call->timer.cancel();
  call->timer.expires_after(call->request.response_timeout);
  call->timer.async_wait([this, rid](error_code ec) {
    if (ec) return;
    auto it = calls_.find(rid);
    if (it == calls_.end() || !it->second->sent) return;
    finish(rid, make_error(errc::timeout,
                           "Client " + it->second->client_id + " did not answer method '" +
                               it->second->request.method_name + "' within " +
                               std::to_string(it->second->request.response_timeout.count()) + "s"));
  });
}

void MethodCalls::respond(const std::string& from_client_id, const std::string& rid, int status,
                          std::string_view body) {
  auto it = calls_.find(rid);
  if (it == calls_.end() || it->second->client_id != from_client_id || !it->second->sent) {
    log::warn("hub", "[{}] method response for unknown request {} ignored", from_client_id, rid);
    return;
  }
  MethodResponse response;
  response.status = status;
  if (!body.empty()) {
    response.payload = nlohmann::json::parse(body, nullptr, false);
    // A module may answer with something that is not JSON; IoT Hub would refuse it, we pass
    // it on as a string rather than lose it.
    if (response.payload.is_discarded()) response.payload = std::string(body);
  }
  finish(rid, std::move(response));
}

void MethodCalls::target_ready(const std::string& client_id) {
  std::vector<std::shared_ptr<Call>> waiting;
  for (const auto& [rid, call] : calls_) {
    if (!call->sent && call->client_id == client_id) waiting.push_back(call);
  }
  for (const auto& call : waiting) dispatch(call);
}

void MethodCalls::target_gone(const std::string& client_id) {
  std::vector<std::string> gone;
  for (const auto& [rid, call] : calls_) {
    if (call->sent && call->client_id == client_id) gone.push_back(rid);
  }
  for (const auto& rid : gone) {
    finish(rid,
           make_error(errc::not_found, "Client " + client_id + " disconnected before answering"));
  }
}

void MethodCalls::cancel_all() {
  while (!calls_.empty()) {
    finish(calls_.begin()->first, make_error(errc::unavailable, "the hub is stopping"));
  }
}

void MethodCalls::finish(const std::string& rid, Result<MethodResponse> result) {
  auto it = calls_.find(rid);
  if (it == calls_.end()) return;
  auto call = it->second;
  calls_.erase(it);
  call->timer.cancel();
  if (call->done) call->done(std::move(result));
}

std::size_t MethodCalls::in_flight() const {
  std::size_t n = 0;
  for (const auto& [rid, call] : calls_) n += call->sent ? 1 : 0;
  return n;
}

std::size_t MethodCalls::waiting() const { return calls_.size() - in_flight(); }

}  // namespace cairn::hub
