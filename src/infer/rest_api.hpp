// The REST face of cairn-infer, as an HttpHandler for net::HttpServer:
//   POST /score, /score/{model}                  Azure ML scoring style ({"data": ...} or named
//                                                inputs -> named outputs)
//   GET  /v2, /v2/health/live, /v2/health/ready  KServe v2 / Open Inference Protocol
//   GET  /v2/models/{m}[/versions/{v}][/ready]
//   POST /v2/models/{m}[/versions/{v}]/infer     JSON tensors and the binary tensor extension
//   GET|POST /v2/repository/index                every model with its state
//   GET  /status                                 reported properties of every model
//   GET  /metrics                                Prometheus text
// Errors are 4xx/5xx with {"error": "..."}; docs/infer.md lists them.
//
// An inference request runs on the HTTP thread that received it when that costs no other
// request anything: an inline-run permit is free (RestOptions::max_inline_runs), the model has
// an idle run slot and nothing queued (ModelManager::submit). A run that turns out slow has an
// InlineRunWatch wake another HTTP thread to take over the I/O (RestOptions::wake_http_thread),
// so health checks, metrics and other models keep answering. Otherwise decoding, inference and
// encoding run on the model's worker threads, which answer through `respond`.
//
// Thread-safety: handle() may be called from any thread; the RestApi must outlive every
// request it accepted (the manager's destructor drains them).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "infer/inline_watch.hpp"
#include "infer/model_manager.hpp"
#include "net/http.hpp"

namespace cairn::infer {

struct RestOptions {
  // Deepest JSON nesting accepted in a request body; deeper is refused (400) before parsing,
  // so a "JSON bomb" of brackets costs one linear scan. Tensors need rank + 3 levels.
  std::size_t max_json_depth = 64;
  // Largest JSON part of a binary-extension request (Inference-Header-Content-Length).
  std::size_t max_inference_header_bytes = 1024 * 1024;
  // Inference requests that may run at once on the HTTP threads that received them (see
  // above). Must be below the number of threads running the HTTP server, so a slow model never
  // holds them all; 0: every request goes through the model's queue and workers.
  std::size_t max_inline_runs = 0;
  // Wakes a sleeping thread of the HTTP server so it takes over the I/O while an inline run
  // lasts (cairn-infer: posts a no-op to the server's io_context, which runs with concurrency
  // hint 1). When set, an InlineRunWatch calls it for any inline run longer than
  // inline_watch_period, and max_inline_runs must be 1.
  std::function<void()> wake_http_thread;
  std::chrono::microseconds inline_watch_period{1000};
  std::string server_version = "0.1.0";
};

class RestApi {
 public:
  RestApi(ModelManager& models, RestOptions options);
  ~RestApi();
  void handle(net::HttpRequest& request, net::HttpRespond respond);

 private:
  void infer_v2(net::HttpRequest& request, const std::string& model, const std::string& version,
                net::HttpRespond respond);
  void score(net::HttpRequest& request, const std::string& model, net::HttpRespond respond);
  std::string metrics_text() const;
  void count(int status);

  // One of the max_inline_runs permits for the life of a submit() call, if one is free.
  class InlinePermit {
   public:
    explicit InlinePermit(RestApi& api);
    ~InlinePermit();
    InlinePermit(const InlinePermit&) = delete;
    InlinePermit& operator=(const InlinePermit&) = delete;
    SubmitOptions submit_options(std::function<void()> before_queue, std::size_t queued_bytes);

   private:
    RestApi& api_;
    bool held_ = false;
    bool watched_ = false;  // the request runs inline: the watch follows it
  };

  ModelManager& models_;
  RestOptions options_;
  std::atomic<std::size_t> inline_runs_{0};
  std::unique_ptr<InlineRunWatch> watch_;  // when options_.wake_http_thread is set
  mutable std::mutex counts_mu_;
  std::map<int, std::uint64_t> responses_by_status_;
};

// The answer to a scoring request that did not come over HTTP (module mode: a routed message),
// as REST would give it: the HTTP status it maps to and the JSON body (the result, or
// {"error": ...}); the model and version that ran it when it ran.
struct ScoreAnswer {
  int status = 200;
  std::string body;
  std::string model;
  std::string version;
};
using ScoreDone = std::function<void(ScoreAnswer)>;

// Scores `body` with the REST codec: a KServe v2 inference request when the JSON object has
// "inputs" (JSON tensors only; outputs always come back as JSON); else, when the version that
// runs it has an input mapping, a raw record mapped to tensors by it; else an Azure ML /score
// request. Records and /score requests are answered in the /score form. `model` empty: the default
// model; `version` empty: the serving one. `done` is called exactly once: on a model worker, or
// here at once when the request is refused (unknown model, queue full).
void score_json_request(ModelManager& models, std::string body, const std::string& model,
                        const std::string& version, std::size_t max_json_depth, ScoreDone done);

// Largest nesting depth of `text` read as JSON (brackets inside strings do not count); stops
// counting once above `limit`.
std::size_t json_depth(std::string_view text, std::size_t limit);

}  // namespace cairn::infer
