// ModelManager: the models cairn-infer serves. Several named models, several versions of each
// side by side, one default model; per model a bounded request queue, worker threads that run
// the engine, dynamic batching, and metrics. A caller that allows it (SubmitOptions) has its
// request run on its own thread when the model has an idle run slot and nothing queued: no
// hand-off to a worker and back. A model runs at most `concurrency` requests at once, inline
// and on workers together.
//
// Hot swap: a new version is loaded and warmed up beside the serving one and then swapped in
// under the model's lock (a shared_ptr assignment). A request holds the version it started on,
// so requests in flight finish on the old one, which is freed after the last of them. A
// version that fails to load or warm up never replaces the serving one: the failure is
// recorded in the model's reported state and the old version keeps serving.
//
// The model list can come from a module twin: apply_desired() takes the desired-properties map
// (schema in docs/infer.md) and loads in the background; reported() and the reported callback
// give the per-model reported properties.
//
// Thread-safety: every public method may be called from any thread. Callbacks (InferDone, the
// reported callback) run on the manager's worker or loader threads and must not block for long.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/byte_budget.hpp"
#include "core/result.hpp"
#include "infer/engine.hpp"
#include "infer/input_mapping.hpp"
#include "infer/tensor.hpp"

namespace cairn::infer {

struct BatchingOptions {
  // Requests merged into one engine run along dimension 0 (only when every input and output of
  // the model has an open first dimension). 1 disables batching.
  std::size_t max_batch_size = 1;
  // How long the first request of a batch waits for others. 0: batch only what is already
  // queued, never wait; larger trades latency for throughput under load.
  std::chrono::microseconds max_queue_delay{0};
};

struct ModelLimits {
  // Requests waiting per model; one more is refused (HTTP 429) instead of growing memory.
  std::size_t max_queue = 256;
  // Worker threads running this model: more overlap runs of a model that is not using every
  // core, at the price of memory per run. Fixed when the model is first loaded.
  std::size_t concurrency = 1;
};

struct ModelSpec {
  std::string name;
  std::string version = "1";
  std::string path;    // a local file
  std::string url;     // or an http(s) URL, turned into a local file by the manager's fetcher
  std::string sha256;  // hex digest the file must have; empty: not checked
  EngineOptions engine;
  BatchingOptions batching;
  ModelLimits limits;
  bool is_default = false;
  // Run the model once on zero inputs before it serves. Off only for models that cannot take
  // zeros (e.g. a shape input); a failed warm-up fails the load.
  bool warmup = true;
  // How a raw record (a routed sensor reading) becomes the input tensors in module mode; null:
  // messages must carry tensors. Checked against the model's inputs when a version loads.
  std::shared_ptr<const InputMapping> input_mapping;
};

// Parses one entry of the desired map: {"version", "path" | "url", "sha256", "engine": {...},
// "batching": {...}, "limits": {...}, "default", "warmup", "inputMapping"}. A `url` must be
// http:// or https://; `path` and `url` together are refused; a malformed inputMapping is refused
// with the member at fault.
Result<ModelSpec> parse_model_spec(const std::string& name, const nlohmann::json& desired);

// Reports the progress of a download as the model's reported `delivery` object.
using DeliveryProgress = std::function<void(const nlohmann::json& delivery)>;
// Turns a spec with a `url` into a local file and returns its path (model delivery,
// infer/model_delivery.hpp). Runs on the manager's loader thread and may block.
using ModelFetcher =
    std::function<Result<std::string>(const ModelSpec& spec, const DeliveryProgress& progress)>;

struct InferRequest {
  std::vector<Tensor> inputs;
};

struct InferResult {
  std::string model;
  std::string version;
  std::vector<Tensor> outputs;  // every output, in signature order
};

using InferDone = std::function<void(Result<InferResult>)>;

struct SubmitOptions {
  // The request may run on the calling thread, inside submit(), when the model has an idle run
  // slot, nothing queued and no batching delay. Only for callers that can afford to block for
  // one run of the model and hold no lock `done` takes.
  bool may_run_inline = false;
  // ... and only while the model's runs take less than this on average (recent runs weighted
  // most, the warm-up run to begin with); 0: however long. A slow model is better served by
  // its worker: the same thread every run, its caches warm.
  std::chrono::nanoseconds max_inline_run_time{0};
  // Called on the calling thread just before a request runs inline.
  std::function<void()> on_inline_run;
  // Called, under the model's lock, when the request is queued instead: the last moment to make
  // the decoder own data it so far only refers to (such as a request body).
  std::function<void()> before_queue;
  // Bytes the request holds while it waits (its body), counted against
  // ManagerOptions::max_queue_bytes until its job is gone.
  std::size_t queued_bytes = 0;
};
// Turns the caller's payload into input tensors on a worker thread, given the signature of the
// version that will run it (so /score can take dtypes from the model) and that version's input
// mapping bound to the signature (null when it has none).
using RequestDecoder = std::function<Result<InferRequest>(const std::vector<TensorInfo>& inputs,
                                                          const InputMapping* input_mapping)>;

// What the manager tells about one version.
struct VersionInfo {
  std::string version;
  std::string engine;  // "onnxruntime", "armnn-tflite"
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
  double load_ms = 0;
  bool serving = false;
};

struct ModelInfo {
  std::string name;
  std::string serving_version;  // empty until one version loaded
  std::vector<VersionInfo> versions;
  std::string status;  // "downloading", "loading", "ready", "failed"
  std::string error;   // the last load failure, if any
};

struct ManagerOptions {
  // Models served at once; loading one more is refused. Each holds its weights in memory.
  std::size_t max_models = 32;
  // Versions kept per model when loading with keep_others; the oldest beyond are unloaded.
  std::size_t max_versions_per_model = 4;
  // Request bytes held by queued requests, all models together, until their runs end. One more
  // request that would pass it is refused (limit_exceeded, HTTP 429) unless nothing else is queued:
  // the per-model queue lengths alone would let 256 bodies of 64 MiB wait at once.
  std::size_t max_queue_bytes = std::size_t{256} << 20;
};

class ModelManager {
 public:
  explicit ModelManager(ManagerOptions options = {});
  ~ModelManager();  // stops the loader, drains and joins every worker
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // Loads, verifies and warms up a version on the calling thread, then makes it the serving
  // one. With keep_others, other versions stay available by version; otherwise they are
  // unloaded once the new one serves. On failure nothing changes but the reported error.
  Status load(const ModelSpec& spec, bool keep_others);

  // Makes the served set match `desired` (name -> spec JSON): new or changed versions load in
  // the background, one at a time; models absent from `desired` are unloaded. Entries that do
  // not parse are reported failed. Models named in `pinned` (loaded by other means, e.g. the
  // command line) are never unloaded here. Returns invalid_argument only when `desired` is not
  // an object.
  Status apply_desired(const nlohmann::json& desired, const std::vector<std::string>& pinned = {});
  // Called with {name: reported} (or {name: null} when unloaded) after each state change, one
  // call at a time and in the order the states were taken, so a later patch is never older.
  void set_reported_callback(std::function<void(const nlohmann::json& patch)> callback);
  // Calls the reported callback with every model's state (as reported()), in the same order.
  void notify_all();
  // Where specs with a `url` get their file; without one such specs fail to load.
  void set_fetcher(ModelFetcher fetcher);
  // Reported properties of every model: {name: {version, status, error, loadTimeMs, ...}}.
  nlohmann::json reported() const;
  // Waits until the background loads queued so far are done (tests, start-up).
  void wait_idle();

  // Queues a request for `model` (empty: the default model), `version` (empty: the serving
  // one), or runs it at once on the calling thread (options.may_run_inline). Fails at once with
  // not_found (unknown model, version or no default) or limit_exceeded (queue full); otherwise
  // `done` is called exactly once: on a worker, or on this thread before submit returns.
  Status submit(const std::string& model, const std::string& version, RequestDecoder decode,
                InferDone done, SubmitOptions options = {});

  std::vector<ModelInfo> list() const;
  std::optional<ModelInfo> find(const std::string& name) const;
  // The model /score serves: the one marked default, else the only one; empty if neither.
  std::string default_model() const;
  // True when at least one model is loaded and none is loading for the first time.
  bool ready() const;

  // Prometheus text exposition of requests, failures, latency and batch-size histograms, queue
  // depth and bytes, and model versions.
  std::string prometheus_text() const;

  struct Model;  // per model state, defined in model_manager.cpp

 private:
  std::shared_ptr<Model> model_for_load(const ModelSpec& spec, Status& error);
  void notify(const std::string& name);
  void loader_loop();

  ManagerOptions options_;
  // What queued jobs hold (SubmitOptions::queued_bytes); each job gives its share back when it
  // is destroyed, run or not.
  std::shared_ptr<ByteBudget> queued_bytes_;
  mutable std::mutex mu_;
  // Held from taking a state to handing it to the callback: two threads reporting the same
  // model (the loader failing it, a caller applying a new desired state) would otherwise deliver
  // their patches in either order, and a stale state could be the last one reported.
  std::mutex report_mu_;
  std::map<std::string, std::shared_ptr<Model>> models_;
  std::function<void(const nlohmann::json&)> reported_callback_;
  ModelFetcher fetcher_;

  struct Loader;
  std::unique_ptr<Loader> loader_;
};

// Zero inputs for a signature (open dimensions become 1), for warm-up and tests.
std::vector<Tensor> zero_inputs(const std::vector<TensorInfo>& signature);

}  // namespace cairn::infer
