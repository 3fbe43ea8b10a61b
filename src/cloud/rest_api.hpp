// RestApi: cairn-cloud's HTTP API — the IoT Hub service REST API paths and JSON shapes for what
// cairn supports, so the official service SDKs (azure-iothub for Node and its siblings) drive
// it unchanged, plus a few cairn extensions under /cairn/. docs/cloud_api.md is the reference
// for users; in short:
//
//   PUT|GET|DELETE  /devices/{id}                     Device identity (GET /devices lists)
//   PUT|GET|DELETE  /devices/{id}/modules/{mid}       Module identity (GET .../modules lists);
//                                                     DELETE also with the edge device's token
//   POST            /devices/{id}/applyConfigurationContent   edge deployment (204)
//   GET|PATCH|PUT   /twins/{id}[/modules/{mid}]       twin of record (If-Match etags)
//   POST            /twins/{id}[/modules/{mid}]/methods       direct method
//   GET             /cairn/messages?deviceId=&moduleId=&after=&limit=   stored telemetry
//   GET             /cairn/status
//   GET             /cairn/metrics                      Prometheus text
//   GET             /cairn/deadletters
//   POST            /cairn/devices/{id}[/modules/{mid}]/regenerateKey   {"key": "primary"|...}
//   GET             /cairn/devices/{id}/deployment
//   GET             /cairn/models                       the model store (model_store.hpp)
//   POST            /cairn/models/{name}/versions/{version}/missing   the .cidx -> {"missing"}
//   PUT             /cairn/models/chunks/{hash}         one chunk file
//   PUT             /cairn/models/{name}/versions/{version}   the .cidx: commit a version
//   GET|HEAD        /models/{file}                      published files, WITHOUT a token
//
// Every request but GET /models/... needs `Authorization: SharedAccessSignature
// sr={hostname}&sig=…&se=…&skn={policy}` signed with a key of a stored access policy (kOwnerPolicy
// is created on first start), except that an edge device deletes modules of its own with a
// token for sr={hostname}/devices/{id} signed with its key. A token valid for longer than
// max_token_lifetime_secs is refused (401). Deleting, disabling or re-keying an identity closes
// its live MQTT sessions (RestHooks::disconnect_*). Path segments are URL-decoded (ids may contain
// %-escapes;
// "$edgeAgent" arrives as "%24edgeAgent"). `api-version` is accepted and not required. Errors use
// IoT Hub's body,
// {"Message":"ErrorCode:<Code>;<text>","ExceptionMessage":"Tracking ID:…"}, which the SDKs parse
// into typed errors (DeviceNotFound → DeviceNotFoundError, 412 → InvalidEtagError, ...).
//
// Thread-safety: handle() runs on the io thread. Without RestHooks::store every request is
// served there, at once. With it (cairn-cloud: its store worker, store_worker.hpp) everything
// but the public model files is served on the store's thread: the policy check, the registry
// and twin work. The hooks that reach the hub (push_desired, invoke_method, disconnect_*,
// metrics, list_dead_letters, status_extension) and the model store are then called on the io
// thread, in the order the request made them (so an identity's sessions are closed before the
// change is answered); is_connected is called on the store's thread and must be thread-safe.
// A request the store cannot take in time (the database is locked by another process, the
// store queue is full) is answered 503 ServiceUnavailable with Retry-After, having changed
// nothing. `respond` is always called on the io thread, possibly after handle() returned.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cloud/deployments.hpp"
#include "cloud/registry.hpp"
#include "cloud/store_worker.hpp"
#include "cloud/twins.hpp"
#include "core/crypto.hpp"
#include "hub/config.hpp"
#include "hub/methods.hpp"
#include "net/http.hpp"

namespace cairn::cloud {

class ModelStore;

struct RestApiConfig {
  // The IoT Hub hostname clients use: the audience (sr) of service SAS tokens, compared
  // case-insensitively.
  std::string hostname;
  // Upper bound of GET /devices (IoT Hub's `top` maximum): a bigger page costs one response of
  // about 1 KB per device.
  std::size_t max_devices_listed = 1000;
  // Upper bound of GET /cairn/messages?limit=: bodies are up to 256 KB each, so a page of 1000
  // may be large; clients tail with `after`.
  std::size_t max_messages_listed = 1000;
  // Longest validity a presented SAS token may have left (0 = no maximum): 401 beyond it.
  std::int64_t max_token_lifetime_secs = hub::kDefaultMaxTokenLifetimeSecs;
};

// What the API needs from the hub it sits next to. Any hook may be empty: without
// push_desired desired changes are stored but not delivered (devices see them on their next
// GET); without invoke_method methods answer 503; without is_connected the stored connection
// state is reported.
struct RestHooks {
  // Delivers a desired patch (with "$version") to a connected client "d" or "d/m".
  std::function<void(const std::string& client_id, const nlohmann::json& patch_with_version)>
      push_desired;
  std::function<void(const std::string& client_id, hub::MethodRequest, hub::MethodCallback)>
      invoke_method;
  std::function<bool(const std::string& client_id)> is_connected;
  // Extra members of GET /cairn/status (the ingest queue, the telemetry writer), merged in.
  std::function<nlohmann::json()> status_extension;
  // Answers GET /cairn/metrics: Prometheus text (404 without it).
  std::function<std::string()> metrics;
  // Answers GET /cairn/deadletters: messages set aside as undeliverable (404 without it).
  std::function<void(net::HttpRespond)> list_dead_letters;
  // Revocation: close at once the live sessions of a client "d" or "d/m", or of a device and
  // all its modules, whose identity was deleted, disabled or given new keys.
  std::function<void(const std::string& client_id, const std::string& reason)> disconnect_client;
  std::function<void(const std::string& device_id, const std::string& reason)> disconnect_device;
  // The model store behind /cairn/models and /models (404 without it). Outlives the API.
  ModelStore* models = nullptr;
  // Where the store behind `registry` and `twins` lives (see Thread-safety above).
  StoreRunner store;
};

class RestApi {
 public:
  // `registry` and `twins` (and the store behind them) must outlive the API.
  RestApi(RestApiConfig config, Registry& registry, CloudTwins& twins, RestHooks hooks,
          Clock clock = {});

  void handle(const net::HttpRequest& request, net::HttpRespond respond);

 private:
  struct Call;
  // Checks the caller's token (a policy's, or an edge device's own), then dispatches.
  void authorize(Call& call);
  void dispatch(Call& call);
  void devices(Call& call);
  void modules(Call& call);
  void twins(Call& call);
  void methods(Call& call);
  void apply_configuration(Call& call);
  void cairn(Call& call);
  void messages(Call& call);
  void status(Call& call);
  void regenerate(Call& call);
  void models(Call& call);
  void published_model_file(Call& call);
  // A request signed by an edge device's own key (audience {hostname}/devices/{id}): it may
  // delete modules of that device only.
  void device_scoped(Call& call, const crypto::SasToken& token, const std::string& device_id);
  // Closes the sessions whose credentials a change took away (after == nullptr: deleted).
  void revoke_client(const std::string& client_id, const std::string& reason);
  void revoke_device(const DeviceRecord& before, const DeviceRecord* after);
  void revoke_module(const ModuleRecord& before, const ModuleRecord* after);
  std::optional<bool> live(const std::string& client_id) const;
  void push(const std::string& client_id, const std::optional<nlohmann::json>& patch);
  std::int64_t now_ms() const;

  RestApiConfig config_;
  Registry& registry_;
  CloudTwins& twins_;
  Deployments deployments_;
  RestHooks hooks_;
  Clock clock_;
};

}  // namespace cairn::cloud
