// cairn-infer as an IoT Edge module, independent of how it talks to the hub: the module twin's
// desired properties drive the model manager, the manager's state goes back as reported
// properties (debounced), and scoring requests arriving as routed messages are answered on an
// output. apps/cairn-infer wires it to the module SDK (include/cairn/module_client.hpp) through
// ModuleLink; tests can wire it to anything.
//
// Desired properties (docs/infer.md, "Module mode"):
//   models          {name: entry}: the twin schema of parse_model_spec; patches merge
//                   (RFC 7386: null deletes), and the merged map is applied.
//   modelDelivery   {"publicKey": "<PEM>"}: require signed model packages (unless the
//                   command line fixed a key, which the twin cannot change).
// Reported properties: {"models": {name: ManagerReported}, "modelDelivery": {...},
// "lastDesiredVersion": N}.
//
// Thread-safety: every public method may be called from any thread; ModuleLink functions are
// called from the manager's worker and loader threads and from the caller's thread, and must
// not block. close() (or the destructor) guarantees no ModuleLink call starts afterwards.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "infer/model_delivery.hpp"
#include "infer/model_manager.hpp"

namespace cairn::infer {

struct ModuleMessage {
  std::string body;
  std::string message_id;                                // IoT Hub $.mid
  std::string correlation_id;                            // IoT Hub $.cid
  std::vector<std::pair<std::string, std::string>> app;  // application properties
};

struct ModuleLink {
  // Sends a message on an output. Must not block; failures are the link's to log.
  std::function<void(const std::string& output, ModuleMessage message)> send;
  // Merges a patch into the reported properties. Must not block.
  std::function<void(nlohmann::json patch)> report;
};

struct ModuleOptions {
  // Input whose messages are scoring requests, and output the results go to.
  std::string score_input = "score";
  std::string results_output = "results";
  // Routed scoring requests accepted and not yet answered; one more is answered at once with
  // an error result (status 429) instead of being queued. Bounds memory when routes deliver
  // faster than the models score.
  std::size_t max_pending_messages = 256;
  // Reported-property changes are gathered this long and sent as one patch, so a burst (a
  // download's progress, several models loading) is one twin update.
  std::chrono::milliseconds report_debounce{250};
  // JSON nesting accepted in a request body (as RestOptions::max_json_depth).
  std::size_t max_json_depth = 64;
  // Models loaded by other means (the command line): never unloaded by the twin.
  std::vector<std::string> pinned;
  // Where modelDelivery.publicKey from the twin is written; empty: the twin cannot set it.
  std::string twin_public_key_path;
  // True when the command line configured a public key: the twin's is ignored.
  bool public_key_fixed = false;
};

class ModuleService {
 public:
  // `delivery` may be null (then the twin cannot set a public key). Registers itself as the
  // manager's reported callback.
  ModuleService(ModelManager& models, ModelDelivery* delivery, ModuleLink link,
                ModuleOptions options);
  ~ModuleService();  // close()
  ModuleService(const ModuleService&) = delete;
  ModuleService& operator=(const ModuleService&) = delete;

  // The desired section (`complete`) or a patch of it, with its $version.
  void on_desired(const nlohmann::json& desired, long long version, bool complete);
  // A message on the scoring input: JSON tensors, or a raw record when the model has an input
  // mapping. Never blocks: the result goes out on the results output. Application properties
  // `model` and `modelVersion` pick the model (default: the default model, serving version).
  void on_message(const ModuleMessage& message);
  // Reports every model's state again (after a (re)connection).
  void report_all();
  // Given the reported section the hub holds (after a (re)connection), deletes the entries of
  // models this process does not know (removed from the twin while it was not running).
  void forget_stale_reports(const nlohmann::json& reported);
  // Stops reporting and sending; waits for the reporter thread. Idempotent.
  void close();

  // Routed requests accepted and not yet answered.
  std::size_t pending_messages() const;

  struct State;  // shared with callbacks that may outlive a call

 private:
  ModelManager& models_;
  ModelDelivery* delivery_;
  ModuleOptions options_;
  std::shared_ptr<State> state_;
  std::mutex desired_mu_;  // on_desired one at a time
  nlohmann::json desired_models_ = nlohmann::json::object();
};

// The result message for a scoring answer: the REST body, correlated with the request
// (correlation id = the request's correlation id, else its message id), with the request's
// application properties and `status` (the HTTP-style code), `model` and `modelVersion` when
// known (these three replace the request's own).
ModuleMessage result_message(const ModuleMessage& request, int status, std::string body,
                             const std::string& model, const std::string& version);

}  // namespace cairn::infer
