// ModelStore: cairn-cloud's model publishing. Models are packed (modelpkg::pack_model) into
// HOME/models, a plain publish directory (docs/modelpkg.md), and served from it as static files:
//
//   GET  /models/{file}                          index, signature, chunk or delta; no
//                                                authentication (integrity comes from the
//                                                signed index and the hashes in it)
//   GET  /cairn/models                           published versions (JSON array)
//   PUT  /cairn/models/uploads/{id}?offset=N     appends the body to upload {id} at offset N
//   POST /cairn/models/{name}/{version}?upload={id}   packs the upload as that version
//
// The /cairn/ routes are authenticated by RestApi before they get here. Uploads come in parts
// because the HTTPS server bounds request bodies (1 MiB); `cairn cloud model push` sends them.
//
// Thread-safety: the handlers may be called on the server's io thread; disk work (appends,
// packing) runs on the store's own worker thread, which answers through `respond` (allowed from
// any thread). Static reads are small (a chunk is at most 256 KiB compressed) and done inline.
// Destroy the store after the HTTP server has stopped; the destructor joins the worker.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/result.hpp"
#include "net/http.hpp"

namespace cairn::cloud {

struct ModelStoreConfig {
  std::string dir;  // HOME/models
  // PEM Ed25519 private key: when set, every packed index is signed.
  std::string signing_key;
  // Largest model accepted; an upload beyond it is refused (413) and deleted. Disk is the cost.
  std::uint64_t max_model_bytes = 4ULL * 1024 * 1024 * 1024;
  // Uploads that may exist at once (each holds up to max_model_bytes on disk until packed).
  std::size_t max_uploads = 4;
  // Largest static file served; chunks and indexes are far smaller, deltas may be larger.
  std::uint64_t max_served_file_bytes = 64ULL * 1024 * 1024;
};

class ModelStore {
 public:
  static Result<std::unique_ptr<ModelStore>> open(ModelStoreConfig config);
  ~ModelStore();
  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  // GET|HEAD /models/{file}.
  void serve_file(const net::HttpRequest& request, net::HttpRespond respond);
  // /cairn/models...; `seg` are the decoded path segments ("cairn", "models", ...).
  void handle_api(const net::HttpRequest& request, const std::vector<std::string>& seg,
                  net::HttpRespond respond);

 private:
  explicit ModelStore(ModelStoreConfig config);
  void post(std::function<void()> job);
  void run_worker();
  net::HttpResponse list();
  net::HttpResponse append(const std::string& id, const std::string& target,
                           const std::string& body);
  net::HttpResponse publish(const std::string& name, const std::string& version,
                            const std::string& upload);

  ModelStoreConfig config_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace cairn::cloud
