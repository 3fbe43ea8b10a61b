// Model delivery for cairn-infer: turns a model entry with a `url` into a local file the
// engines can load. What the URL serves decides how, never its name:
//   - a model package index (a zstd frame that decodes as a .cidx, docs/modelpkg.md): fetched
//     with modelpkg::fetch_model into a chunk store under the data directory, so an update
//     downloads only the chunks (or deltas) the device does not hold, and the index's
//     signature is checked when a public key is configured;
//   - an ONNX or TFLite file (engine.hpp's detect_format): downloaded whole, written atomically.
// Anything else fails with a message saying what the URL served.
//
// Files: DATA_DIR/chunks (the modelpkg chunk store), DATA_DIR/models/NAME/VERSION.model.
//
// Thread-safety: fetch() blocks (HTTP) and is meant for the model manager's loader thread;
// several fetches may run at once. set_public_key() may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "infer/model_manager.hpp"

namespace cairn::infer {

struct DeliveryOptions {
  std::string data_dir = "cairn-infer-data";
  // PEM Ed25519 public key file. Set: model package indexes must carry a valid signature, and
  // raw model files (which cannot be signed) are refused.
  std::string public_key;
  // PEM CA bundle for https:// URLs (empty: the system store).
  std::string ca_file;
  // Per-request timeout of downloads.
  int timeout_secs = 60;
  // Cap on the chunk store (modelpkg::FetchOptions::store_max_bytes).
  std::uint64_t store_max_bytes = 2ULL * 1024 * 1024 * 1024;
  // Chunk and delta requests in flight per fetch.
  std::size_t parallel = 4;
};

// What a URL served, judged by its first bytes.
enum class UrlContent { kModelIndex, kModelFile, kUnknown };
std::string_view to_string(UrlContent c) noexcept;
// kModelIndex: a zstd frame that decodes as a model index; kModelFile: an ONNX or TFLite
// model; kUnknown: anything else (an HTML error page, a text file, a truncated index).
UrlContent classify_url_content(std::string_view bytes);

class ModelDelivery {
 public:
  explicit ModelDelivery(DeliveryOptions options);

  // Downloads `spec.url` and returns the local file's path. `progress` gets the reported
  // `delivery` object: {"version", "source": "package"|"file", "status":
  // "downloading"|"done"|"failed", "bytesNeeded", "bytesReused", "bytesDownloaded",
  // "bytesSaved", "chunks", "chunksReused", "chunksDownloaded", "deltasApplied"}.
  // On failure the error names the URL; files already delivered are untouched.
  Result<std::string> fetch(const ModelSpec& spec, const DeliveryProgress& progress);

  // Replaces the public key (a PEM file path; empty: signatures not required).
  void set_public_key(std::string path);
  std::string public_key() const;
  const std::string& data_dir() const { return options_.data_dir; }

 private:
  DeliveryOptions options_;
  mutable std::mutex mu_;  // guards options_.public_key
};

}  // namespace cairn::infer
