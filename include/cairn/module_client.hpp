// cairn::sdk::ModuleClient: the C++ client for a module of an IoT Edge hub (cairnd, or Azure IoT
// Edge's edgeHub). It finds its identity in the IoT Edge environment (IOTEDGE_* variables, SAS
// tokens signed by the workload API) or in a module connection string, connects over MQTT/TLS,
// and offers: sending on an output, handlers for inputs, the module twin (get, reported patch,
// desired-property handler), direct-method handlers, reconnection with exponential back-off and
// jitter, and SAS token renewal before expiry. docs/sdk.md is the guide.
//
//   asio::io_context io;
//   auto settings = cairn::sdk::settings_from_environment();      // or ..._from_connection_string
//   auto client = cairn::sdk::ModuleClient::create(io, *settings);
//   (*client)->on_input("in", [](const cairn::sdk::InputMessage& m) { ... });
//   (*client)->on_method("reset", [](const cairn::sdk::MethodRequest& r, auto respond) {
//     respond(200, R"({"ok":true})");
//   });
//   (*client)->start();
//   io.run();
//
// Threading: a client lives on one io_context, passed to create() (the application runs it, on
// any number of threads) or owned by the client (create() without one; start() then runs it on
// one thread of the client's own, stop()/the destructor join it). Internally the client uses a
// strand of that io_context; EVERY handler (inputs, methods, desired patches, completions,
// connection state) runs on that strand, one at a time, and must not block: long work goes
// elsewhere and answers later (a method's `respond` may be called from any thread). send(),
// get_twin(), update_reported(), start(), stop() are thread-safe. Register handlers (on_*) before
// start().
//
// Ownership: create() returns a unique_ptr; destroying the client stops it (it closes the
// connection without waiting for outstanding sends, whose completions then are not called).
// Handlers are not called once the client has stopped (see stop()). With the application's
// io_context, destroy the client before the io_context.
//
// Errors are values (cairn::Status): a message bigger than the limit, sending while
// disconnected, a twin request that times out are reported to the completion handler; nothing
// from the network (malformed desired patch, non-UTF-8 method payload, unparsable topic) stops
// the client: it logs a clear error, answers what can be answered (a method gets 400) and goes
// on.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>  // Boost 1.74 + gcc 12: must precede the Asio headers.
#include <vector>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cairn::sdk {

// Who the module is and how it gets its credentials.
struct ConnectionSettings {
  std::string iothub_hostname;   // the token audience (IOTEDGE_IOTHUBHOSTNAME / HostName)
  std::string gateway_hostname;  // where edgeHub listens (IOTEDGE_GATEWAYHOSTNAME /
                                 // GatewayHostName); empty: connect to iothub_hostname
  std::string device_id;
  std::string module_id;
  // Exactly one credential source:
  std::string shared_access_key;  // base64 module key (a connection string)
  std::string workload_uri;       // "unix:///path/workload.sock" or "http://host:port"
  std::string generation_id;      // IOTEDGE_MODULEGENERATIONID, with workload_uri
  std::string workload_api_version = "2019-01-30";  // IOTEDGE_APIVERSION when set
  // PEM file of CAs that sign edgeHub's server certificate (EdgeModuleCACertificateFile). With a
  // workload URI and no file, the trust bundle from GET /trust-bundle is used.
  std::string ca_file;

  bool uses_workload() const { return !workload_uri.empty(); }
  // "{device_id}/{module_id}": the MQTT client id.
  std::string client_id() const { return device_id + "/" + module_id; }
};

// "HostName=…;DeviceId=…;ModuleId=…;SharedAccessKey=…[;GatewayHostName=…]". errc::invalid_argument
// naming the missing or bad field (a device connection string without ModuleId is refused).
[[nodiscard]] Result<ConnectionSettings> settings_from_connection_string(std::string_view text);

// Looks a variable up; nullopt when unset. The default reads the process environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// The IoT Edge module environment: EdgeHubConnectionString (plus EdgeModuleCACertificateFile)
// when set, as the IoT SDKs honour it; otherwise IOTEDGE_WORKLOADURI, IOTEDGE_DEVICEID,
// IOTEDGE_MODULEID, IOTEDGE_IOTHUBHOSTNAME, IOTEDGE_MODULEGENERATIONID and IOTEDGE_AUTHSCHEME
// (must be "sasToken", any case) are required; IOTEDGE_GATEWAYHOSTNAME and IOTEDGE_APIVERSION
// are optional. errc::invalid_argument names every missing variable.
[[nodiscard]] Result<ConnectionSettings> settings_from_environment(
    const EnvLookup& env = process_environment());

struct ModuleClientOptions {
  // Overrides for where to connect; by default gateway_hostname (or iothub_hostname) port 8883.
  // Tests connect to 127.0.0.1 with the certificate checked for the gateway name.
  std::string connect_host;  // empty: the gateway (or hub) host name
  std::uint16_t port = 8883;
  // Name the server certificate must carry; empty: the gateway (or hub) host name.
  std::string tls_server_name;

  // SAS tokens: how long each one is valid, and how long before expiry the client reconnects
  // with a new one (the Node SDK's 3600 s / 900 s). Shorter means more reconnects; longer
  // means a leaked token stays usable longer.
  std::chrono::seconds token_validity{3600};
  std::chrono::seconds token_renew_margin{900};

  // Reconnection back-off: the n-th consecutive failure waits about min * 2^n, capped at max,
  // with up to 50% random jitter so that modules restarted together do not retry in step.
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{10'000};

  std::uint16_t keep_alive_s = 60;  // MQTT keep-alive; a dead link is noticed after ~1.5x this

  // Limits (IoT Hub's): larger outgoing messages are refused before they are sent.
  std::size_t max_message_bytes = 256 * 1024;         // body + topic (properties)
  std::size_t max_method_payload_bytes = 128 * 1024;  // method requests and responses
  std::size_t max_twin_bytes = 32 * 1024;             // one reported patch
  // A twin GET or reported patch without an answer within this fails with errc::timeout.
  std::chrono::milliseconds twin_timeout{30'000};
  // Twin requests waiting for an answer; more fail at once with errc::limit_exceeded.
  std::size_t max_pending_twin_requests = 64;
  // Sends waiting for the hub's acknowledgement; more fail at once with errc::limit_exceeded.
  std::size_t max_pending_sends = 1024;
};

// Properties of a message (IoT Hub system properties and application properties).
struct MessageProperties {
  std::string message_id;
  std::string correlation_id;
  std::string content_type;                              // e.g. "application/json"
  std::string content_encoding;                          // e.g. "utf-8"
  std::vector<std::pair<std::string, std::string>> app;  // application properties, in order
};

struct OutputMessage {
  std::string body;
  MessageProperties properties;
};

struct InputMessage {
  std::string input;  // the input it arrived on
  std::string body;
  MessageProperties properties;
  std::string connection_device_id;  // the sender ($.cdid), when the hub says
  std::string connection_module_id;  // the sender module ($.cmid)
  // Looks an application property up (case-insensitive); nullopt when absent.
  std::optional<std::string> app_property(std::string_view name) const;
};

struct MethodRequest {
  std::string name;
  nlohmann::json payload;  // the parsed JSON payload (null for an empty one)
};

enum class ConnectionState { connecting, connected, disconnected, stopped };
std::string_view to_string(ConnectionState state);

class ModuleClient {
 public:
  using InputHandler = std::function<void(const InputMessage&)>;
  // Answers a method call: the status passed back to the caller and a JSON text ("" = no
  // payload). Call it exactly once, from any thread; a payload that is not JSON or is too big is
  // replaced by a 500 error answer.
  using MethodRespond = std::function<void(int status, std::string json_payload)>;
  using MethodHandler = std::function<void(const MethodRequest&, MethodRespond)>;
  // `desired` is the whole desired section (`complete` = true: after every (re)connection,
  // and after a version gap) or one patch (`complete` = false; null members mean delete).
  // `version` is its $version.
  using DesiredHandler =
      std::function<void(const nlohmann::json& desired, long long version, bool complete)>;
  using ConnectionHandler = std::function<void(ConnectionState, const std::string& reason)>;
  using Completion = std::function<void(Status)>;
  using TwinCompletion = std::function<void(Result<nlohmann::json>)>;

  // Checks the settings (ids, one credential source, a readable CA file) and builds a client
  // that does nothing until start(). With `io` the client runs on it and `io` must outlive the
  // client; without, the client owns an io_context and runs it on its own thread.
  [[nodiscard]] static Result<std::unique_ptr<ModuleClient>> create(
      boost::asio::io_context& io, ConnectionSettings settings, ModuleClientOptions options = {});
  [[nodiscard]] static Result<std::unique_ptr<ModuleClient>> create(
      ConnectionSettings settings, ModuleClientOptions options = {});
  ~ModuleClient();
  ModuleClient(const ModuleClient&) = delete;
  ModuleClient& operator=(const ModuleClient&) = delete;

  // REQUIRES (all on_*): before start().
  // Messages arriving on `input`. Messages on an input without a handler are logged and
  // acknowledged (dropped). The hub's acknowledgement is sent when the handler returns.
  void on_input(std::string input, InputHandler handler);
  // Calls of the direct method `name`. Calls of other methods are answered 501.
  void on_method(std::string name, MethodHandler handler);
  void on_desired(DesiredHandler handler);
  void on_connection(ConnectionHandler handler);

  // Connects, and keeps reconnecting until stop(). Returns at once.
  void start();
  // Closes the connection (DISCONNECT, after waiting up to `drain` for sends in flight), then
  // reports ConnectionState::stopped; no handler runs after that. With the client's own
  // io_context this blocks until done (at most drain + 5 s). With the application's
  // io_context, or from a handler, it only begins stopping (blocking could stall the thread
  // that runs the stop): the connection handler's `stopped` says when it is done, and once the
  // client has stopped it leaves no work on the io_context, so io.run() returns when nothing
  // else keeps it busy. Idempotent.
  void stop(std::chrono::milliseconds drain = std::chrono::milliseconds{2000});

  // Sends `message` on `output`. `done` (optional) gets ok once the hub has stored it (PUBACK),
  // or an error: errc::limit_exceeded (too big, too many pending), errc::unavailable (not
  // connected, or the connection dropped before the hub acknowledged: the hub may or may not
  // have it), errc::invalid_argument (empty or '/'-containing output name).
  void send(std::string output, OutputMessage message, Completion done = {});

  // The module twin: {"desired": {...}, "reported": {...}}.
  void get_twin(TwinCompletion done);
  // Merges `patch` into the reported properties (null members delete).
  void update_reported(nlohmann::json patch, Completion done = {});

  ConnectionState state() const;
  const ConnectionSettings& settings() const;

  struct Impl;

 private:
  ModuleClient() = default;
  static Result<std::unique_ptr<ModuleClient>> finish_create(std::unique_ptr<ModuleClient> client);

  // Declared first so it is destroyed last: handlers still queued on it may hold the Impl.
  std::unique_ptr<boost::asio::io_context> own_io_;
  std::thread own_thread_;
  std::shared_ptr<Impl> impl_;
};

// When to renew a token valid for `validity`: `margin` before it expires, but never earlier than
// half its life (a margin as long as the validity would renew in a loop) nor later than 1 s
// before expiry.
std::chrono::milliseconds token_renewal_delay(std::chrono::seconds validity,
                                              std::chrono::seconds margin);
// The back-off before reconnection attempt `attempt` (0 = first retry), without jitter; the
// client adds up to 50% of it at random.
std::chrono::milliseconds reconnect_backoff(int attempt, std::chrono::milliseconds min,
                                            std::chrono::milliseconds max);

}  // namespace cairn::sdk
