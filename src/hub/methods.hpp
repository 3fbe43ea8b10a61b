// Direct methods (docs/protocol.md §9): the request a caller makes, the answer it gets, and
// the rules IoT Hub and edgeHub apply to both. The hub delivers a call to the target client's
// $iothub/methods/POST/{name}/?$rid={rid} subscription and relays its
// $iothub/methods/res/{status}/?$rid={rid} answer (Hub::invoke_method).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/result.hpp"
#include "net/asio.hpp"

namespace cairn::hub {

inline constexpr std::size_t kMaxMethodNameLength = 100;
inline constexpr std::size_t kMaxMethodPayloadBytes = 128 * 1024;
inline constexpr std::chrono::seconds kMinResponseTimeout{5}, kMaxResponseTimeout{300},
    kDefaultResponseTimeout{30}, kMaxConnectTimeout{300};

struct MethodRequest {
  std::string method_name;
  nlohmann::json payload;  // any JSON value; null when the caller sent none
  std::chrono::seconds response_timeout = kDefaultResponseTimeout;
  std::chrono::seconds connect_timeout{0};  // how long to wait for the target to subscribe
};

// What the target module answered: its own status code and JSON payload.
struct MethodResponse {
  int status = 0;
  nlohmann::json payload;
};

// Errors: errc::not_found (the target is not connected with a methods subscription within the
// connect timeout: 404), errc::timeout (no answer within the response timeout: 504),
// errc::invalid_argument (400), errc::unavailable (the hub is stopping: 503).
using MethodCallback = std::function<void(Result<MethodResponse>)>;

// Parses the service/edgeHub request body {"methodName", "payload",
// "responseTimeoutInSeconds", "connectTimeoutInSeconds"}, enforcing the limits above.
Result<MethodRequest> parse_method_request(const nlohmann::json& body);

// The HTTP status IoT Hub uses for a failed call (404, 504, 400, 503, 500).
int method_error_status(errc code);

// A fresh request id in GUID form, as edgeHub uses for $rid.
std::string new_request_id();

// The calls of one hub: in flight (sent to the target, awaiting its answer) and waiting (the
// target is not connected with a methods subscription yet; up to the connect timeout).
//
// Thread-safety: the hub's io_context thread only. Every callback runs exactly once, on it.
class MethodCalls {
 public:
  // Publishes a request to the target's session; false when the target is not connected with
  // a methods subscription.
  using Send = std::function<bool(const std::string& client_id, const std::string& topic,
                                  std::string payload)>;

  MethodCalls(asio::io_context& io, Send send);
  ~MethodCalls();

  void invoke(const std::string& client_id, MethodRequest request, MethodCallback done);
  // The target answered on $iothub/methods/res/{status}/?$rid={rid}. An answer from another
  // client than the one called, or for an unknown rid, is ignored (and logged).
  void respond(const std::string& from_client_id, const std::string& rid, int status,
               std::string_view body);
  // The target subscribed to methods: its waiting calls go out now.
  void target_ready(const std::string& client_id);
  // The target's connection ended: calls in flight to it will never be answered.
  void target_gone(const std::string& client_id);
  // Fails everything with errc::unavailable (the hub is stopping).
  void cancel_all();

  std::size_t in_flight() const;
  std::size_t waiting() const;

 private:
  struct Call;
  void dispatch(const std::shared_ptr<Call>& call);
  void finish(const std::string& rid, Result<MethodResponse> result);

  asio::io_context& io_;
  Send send_;
  std::map<std::string, std::shared_ptr<Call>> calls_;  // by rid
};

}  // namespace cairn::hub
