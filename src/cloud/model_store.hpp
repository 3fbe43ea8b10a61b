// ModelStore: cairn-cloud's model store — model versions pushed by `cairn cloud model push`,
// kept as one modelpkg publish directory (docs/modelpkg.md) under HOME/models and served from
// it as static files, so a deployment points a model's `url` at
// https://HOST:PORT/models/NAME-VERSION.cidx (modelpkg::index_file_name: NAME~VERSION.cidx when
// NAME has a '-') and devices fetch only what they lack.
//
// A push is three steps, each a REST call (rest_api.hpp, docs/cloud_api.md):
//   1. missing(): the new version's index is checked, and the answer is which of its chunks
//      the store lacks;
//   2. put_chunk() for each of them (chunks are content-addressed: a chunk any model or
//      version already brought is never uploaded again);
//   3. commit() of the index: checked (name, version, limits, every chunk present, the
//      chunks make the file the index's SHA-256 names), deltas from the last few versions of
//      the same name computed here (modelpkg::add_deltas), then the index written atomically,
//      last, so a reader never sees an index whose pieces are missing.
// Nothing a request sends is kept unless it checked out: a chunk is verified against its
// hash before it is written (temporary file + rename), an index that fails a check changes
// nothing. Versions are immutable: pushing other content under an existing name and version
// is refused.
//
// Thread-safety: put_chunk, missing, list and read run on the caller's thread (the io thread)
// and only read, touch or atomically create files. Everything that writes or deletes an index
// or a signature runs on the store's own thread, one job at a time and in the order asked:
// commits (deltas cost seconds of CPU), signatures, removals and the orphan sweep. So a
// signature can never land beside an index a removal is deleting, and a sweep never sees a
// commit half done. `done` is called from that thread.
//
// Chunks a push relies on: every chunk `missing` answers "present" for, and every chunk
// put_chunk is sent (new or already there), gets its modification time set to now, under the
// same lock the sweep takes to check a file's age and delete it. The sweep deletes only
// unreferenced chunks older than orphan_grace, so a push that commits within orphan_grace of
// its `missing` call keeps every chunk it needs; a slower one gets a clean "upload them first"
// refusal at commit and can simply be run again.
//
// Concurrent pushes of one name and version: commits are serialized, the first to commit wins;
// a later commit of other content is refused (already_exists, HTTP 409; versions are
// immutable), of the same content answers "unchanged". Its uploaded chunks are orphans the
// sweep takes later. A signature names the index bytes it signs (If-Match), so a
// signature made for an index that has since been removed and pushed again is refused.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/result.hpp"
#include "modelpkg/index.hpp"

namespace cairn::cloud {

struct ModelStoreOptions {
  std::string dir;  // HOME/models
  // Largest model version (the index's file size) accepted; a bigger one is refused before
  // any chunk of it is checked.
  // 1 GiB keeps the index of the largest model (~40 bytes per 64 KiB chunk) well inside the
  // REST API's 1 MiB request body limit.
  std::uint64_t max_model_bytes = 1024ULL * 1024 * 1024;
  // Cap on the store's files (chunks, deltas, indexes). A push whose new chunks, a chunk or an
  // index that would pass it is refused with limit_exceeded; deltas, which the store makes
  // itself, are counted but not refused.
  std::uint64_t max_store_bytes = 20ULL * 1024 * 1024 * 1024;
  // Earlier versions of the same name a pushed version gets deltas from.
  std::size_t delta_versions = 3;
  // zstd level of deltas (as `cairn model pack`).
  int zstd_level = 19;
  // Segment bytes one commit compresses into deltas at most, over all base versions (zstd -19
  // runs at a few MB/s: 256 MiB is about a minute of the store's thread). Segments past it get
  // no delta; devices fetch their chunks instead.
  std::uint64_t max_delta_input_bytes = 256ULL * 1024 * 1024;
  // A chunk or delta no index references is deleted by the orphan sweep (after a version is
  // removed, and when the store opens) once it is this old: a push in progress uploads its
  // chunks before it commits the index that references them.
  std::chrono::seconds orphan_grace{3600};
  // Commits waiting for the store's thread; more are refused (unavailable) until it catches up.
  std::size_t max_pending_commits = 4;
  // Entries of list() at most.
  std::size_t max_listed = 1000;
};

class ModelStore {
 public:
  // Creates the directory, removes temporary files a crash left and counts the bytes held.
  static Result<std::unique_ptr<ModelStore>> open(ModelStoreOptions options);
  ~ModelStore();  // finishes the job in progress, drops the queued ones (done: unavailable)
  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  // Checks the .cidx bytes of version `version` of `name` as commit() will (name, version,
  // size limit, not another version's content) and answers which of its chunks the store
  // lacks: {"missing": [hash...], "missingBytes", "unchanged": the same version is stored}.
  // A push that would not fit in the store is refused here, before anything is uploaded.
  Result<nlohmann::json> missing(const std::string& name, const std::string& version,
                                 std::string_view cidx) const;

  // Stores the chunk file `body` (one zstd frame, or the raw bytes) under `hash` once it is
  // checked to be that chunk. {"hash", "storedBytes", "new": false when it was there already}.
  Result<nlohmann::json> put_chunk(const std::string& hash, std::string_view body);

  using CommitDone = std::function<void(Result<nlohmann::json>)>;
  // Queues the commit of version `version` of `name` with the .cidx bytes `cidx`. `done` gets
  // {"name", "version", "size", "sha256", "chunks", "deltas", "deltaBytes", "indexBytes",
  // "index": "models/NAME-VERSION.cidx", "unchanged"} or the reason it was refused.
  void commit(std::string name, std::string version, std::string cidx, CommitDone done);

  // Queues storing `signature` (base64 of a 64-byte Ed25519 signature, as `cairn model pack
  // --sign-key` writes it) as INDEX.cidx.sig beside the stored index of that version. The
  // store holds no publisher key and does not check the signature: the publisher signs the
  // index bytes the store committed, and devices configured with the publisher's public key
  // check it. `if_match` (HTTP If-Match: empty, "*", or entity tags) names the SHA-256 (hex) of
  // the index bytes that were signed: another stored index is refused (cancelled, HTTP 412).
  // Runs on the store's thread, after the commits and removals queued before it. `done` gets
  // {"name", "version", "signatureBytes"}; not_found without that version; a bad signature is
  // refused at once.
  void put_signature(const std::string& name, const std::string& version,
                     std::string_view signature, std::string if_match, CommitDone done);

  // Queues the removal of version `version` of `name`: its index and signature go, then the
  // orphan sweep deletes the chunks and deltas no remaining index references. Runs on the
  // store's thread (after the commits queued before it). `done` gets {"name", "version",
  // "removedChunks", "removedDeltas", "freedBytes"}; not_found if there is no such version.
  void remove(std::string name, std::string version, CommitDone done);

  // {"models": [{"name", "version", "size", "sha256", "chunks", "deltas", "index"}], sorted
  // by name then push time; "usedBytes", "maxBytes"}.
  Result<nlohmann::json> list() const;

  // The bytes of the published file at `relative_path` (INDEX.cidx[.sig], chunks/HH/HASH,
  // deltas/TO/FROM-SEG); not_found for anything else, so no path leads outside the store or to
  // a temporary file. An index (or its signature) is also found under the NAME-VERSION.cidx
  // name earlier releases gave it, when exactly one stored version had that name.
  Result<std::string> read(const std::string& relative_path) const;

  std::uint64_t used_bytes() const { return used_bytes_.load(); }
  const ModelStoreOptions& options() const { return options_; }

 private:
  explicit ModelStore(ModelStoreOptions options);
  struct Checked {
    modelpkg::ModelIndex index;
    std::optional<modelpkg::ModelIndex> existing;  // the same version, already stored
    std::size_t existing_bytes = 0;
  };
  Result<Checked> check_new(const std::string& name, const std::string& version,
                            std::string_view cidx) const;
  Result<nlohmann::json> commit_now(const std::string& name, const std::string& version,
                                    const std::string& cidx);
  Result<nlohmann::json> remove_now(const std::string& name, const std::string& version);
  Result<nlohmann::json> sign_now(const std::string& name, const std::string& version,
                                  const std::string& signature, const std::string& if_match);
  // The stored index of `name` `version`, checked to be of that name and version.
  Result<std::string> read_index(const std::string& name, const std::string& version) const;
  // Renames indexes written under legacy_index_file_name to index_file_name and deletes
  // signatures whose index is gone (a re-push must not inherit them). At open.
  void migrate_names();
  // The file an index (or signature) named by legacy_index_file_name is stored under now, if
  // exactly one stored version had that legacy name.
  std::optional<std::string> current_index_name(std::string_view legacy_file) const;
  // Deletes chunk and delta files no index references and older than orphan_grace.
  nlohmann::json sweep_orphans();
  // Sets a stored chunk's modification time to now (so the sweep spares it); false if absent.
  bool touch_chunk(const std::string& hash) const;
  Status reserve(std::uint64_t bytes, std::string_view what) const;
  enum class JobKind { commit, remove, sign };
  struct Job {
    JobKind kind = JobKind::commit;
    std::string name, version;
    std::string body;      // the index (commit) or the signature text (sign)
    std::string if_match;  // sign: the SHA-256 of the index signed, as an If-Match value
    CommitDone done;
  };
  void queue(Job job);
  void run();

  ModelStoreOptions options_;
  std::atomic<std::uint64_t> used_bytes_{0};
  // Held by the sweep from checking an unreferenced chunk's age to deleting it, and by
  // missing/put_chunk while they check that a chunk exists and touch it: a chunk a push was
  // just told is there cannot go before its new time is set.
  mutable std::mutex chunk_mu_;
  std::mutex mu_;  // guards jobs_ and stopping_
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace cairn::cloud
