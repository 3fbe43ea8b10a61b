// Fetching a published model version onto a device: only the pieces it does not hold travel.
//
//   modelpkg::FetchOptions options;
//   options.public_key = "/etc/cairn/models.pub";  // then unsigned indexes are refused
//   auto summary = modelpkg::fetch_model("https://cloud:8443/models/det-2.cidx",
//                                        "/var/lib/cairn/models/det.onnx",
//                                        "/var/lib/cairn/chunks", options,
//                                        [](const modelpkg::FetchProgress& p) { ... });
//   if (!summary) log(summary.error().message);  // names the chunk and URL; model untouched
//
// Steps: GET the index (and its .sig when a public key is configured), check it; every chunk
// already in the local chunk store (from any model or version fetched before) is reused; for a
// changed segment, a delta from a version the store holds is taken when it is smaller than the
// missing chunks; the rest is downloaded over HTTP/HTTPS, `parallel` requests in flight, each
// worker on a kept (keep-alive) connection per server. Each piece is verified (chunk SHA-256;
// a delta's output must hash to the target chunks) and kept in the store as soon as it arrives, so
// a fetch that was interrupted resumes where it stopped. The file is assembled from the store into
// a temporary file beside `out_path`, checked against the whole-file SHA-256, fsynced and renamed
// over `out_path`: on any failure the existing file is untouched. Finally the store is trimmed to
// its size cap.
//
// Store layout (docs/modelpkg.md): STORE/chunks/HH/HASH (uncompressed), STORE/indexes/SHA.cidx.
//
// Thread-safety: blocking; runs its own worker threads; never call it on an io_context thread.
// The progress callback is called from those workers, one call at a time. Two fetches into
// the same store at once are safe (pieces are written atomically) but may download twice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "core/result.hpp"

namespace cairn::modelpkg {

struct FetchOptions {
  // PEM Ed25519 public key. Set: the index must come with a valid NAME-VERSION.cidx.sig.
  std::string public_key;
  // PEM CA bundle for https:// URLs (empty: the system store); verify_tls off only for tests.
  std::string ca_file;
  bool verify_tls = true;
  // Requests in flight. More hides latency on long links and costs a thread and a socket each.
  std::size_t parallel = 4;
  // Keep each worker's connection open between requests (net::HttpSession); off: a new
  // connection per request (for comparison).
  bool keep_alive = true;
  // Per-request limit; a chunk is at most 16 MiB, so this bounds a stalled link, not a slow one.
  int timeout_secs = 60;
  // Take deltas when smaller; off: chunks only (for comparison and as a last resort).
  bool use_deltas = true;
  // Cap on the chunk store; above it, chunks no kept index refers to are evicted, oldest
  // first. 0: no cap.
  std::uint64_t store_max_bytes = 2ULL * 1024 * 1024 * 1024;
  // Indexes kept in the store (the newest ones): their chunks are never evicted, and they are
  // the bases deltas can apply to. Two keep the serving model and the one before it.
  std::size_t keep_indexes = 2;
};

struct FetchProgress {
  std::uint64_t needed = 0;      // size of the model file
  std::uint64_t reused = 0;      // bytes of it already in the store
  std::uint64_t downloaded = 0;  // bytes received so far (index, chunks, deltas)
  std::uint64_t saved = 0;       // full compressed download minus what was downloaded
  std::size_t pieces_done = 0;
  std::size_t pieces_total = 0;
};

struct FetchSummary {
  std::string name;
  std::string version;
  std::string sha256;
  std::uint64_t needed = 0;
  std::uint64_t reused = 0;
  std::uint64_t downloaded = 0;
  std::uint64_t saved = 0;
  // What a plain download of every chunk plus the index would have moved.
  std::uint64_t full_download = 0;
  std::uint64_t index_bytes = 0;        // size of the index (.cidx)
  std::uint64_t index_delta_bytes = 0;  // bytes of the index delta it came as; 0: came whole
  std::size_t chunks = 0;
  std::size_t chunks_reused = 0;
  std::size_t chunks_downloaded = 0;
  std::size_t deltas_applied = 0;
  std::size_t requests = 0;     // HTTP requests made (index, signature, chunks, deltas)
  std::size_t connections = 0;  // connections opened for them

  // One line of JSON with every field above.
  std::string to_json() const;
};

using FetchProgressCallback = std::function<void(const FetchProgress&)>;

Result<FetchSummary> fetch_model(const std::string& index_url, const std::string& out_path,
                                 const std::string& store_dir, const FetchOptions& options = {},
                                 const FetchProgressCallback& progress = {});

// Keeps the newest `keep_indexes` indexes of the store and, while the chunks exceed
// `max_bytes`, deletes chunks none of them refers to, least recently used first.
Status trim_chunk_store(const std::string& store_dir, std::uint64_t max_bytes,
                        std::size_t keep_indexes);

}  // namespace cairn::modelpkg
