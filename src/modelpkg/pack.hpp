// Packing a model file into a publish directory: chunks, deltas from earlier versions, index.
//
//   auto summary = pack_model("det.onnx", {.name = "det", .version = "2", .out_dir = "pub"});
//
// Chunks already in the directory (from any model or version) are not written again. For each
// of the `delta_versions` most recently packed other versions of the same name in `out_dir`,
// every segment that changed gets a delta (delta.hpp) when the delta is smaller than the
// segment's chunks. The index is written last (atomically), so a reader never sees an index
// whose pieces are missing. See docs/modelpkg.md for the layout.
//
// Thread-safety: one pack per directory at a time (two packs of different versions at once may
// miss each other's deltas, nothing worse).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "modelpkg/chunker.hpp"
#include "modelpkg/index.hpp"

namespace cairn::modelpkg {

struct PackOptions {
  std::string name;
  std::string version;
  std::string out_dir;
  ChunkingOptions chunking = {};
  // zstd level of chunks and deltas: 19 packs slower (seconds for a 5 MB model) but every
  // device downloads less; decompression speed barely depends on it.
  int zstd_level = 19;
  // Earlier versions to write deltas from: each costs pack time and disk, and helps devices
  // that are that many versions behind.
  std::size_t delta_versions = 3;
  // PEM Ed25519 private key; when set, NAME-VERSION.cidx.sig is written beside the index.
  std::string signing_key;
};

struct PackSummary {
  std::string index_path;
  std::uint64_t index_bytes = 0;
  std::string format;  // "onnx", "tflite", "opaque"
  std::size_t tensors = 0;
  std::size_t chunks = 0;
  std::size_t chunks_written = 0;  // new chunk files
  std::uint64_t chunk_bytes = 0;   // stored bytes of all chunks of this version
  std::size_t deltas_written = 0;
  std::uint64_t delta_bytes = 0;
  std::size_t index_deltas_written = 0;
  std::uint64_t index_delta_bytes = 0;
  ModelIndex index;
};

Result<PackSummary> pack_model(const std::string& model_path, const PackOptions& options);

struct DeltaSummary {
  std::size_t written = 0;
  std::uint64_t bytes = 0;
  std::size_t skipped = 0;  // changed segments left without a delta by max_input_bytes
};

// Sets `index.deltas` to deltas from the `delta_versions` most recently packed other versions
// of its name in `dir` (newest first), writing a delta file for each segment that changed when
// it is smaller than the segment's chunks. `dir` must hold the chunks of `index` and of those
// versions. pack_model does this; so does a model store that receives chunks and an index.
// `max_input_bytes` (0: no cap) bounds the segment bytes compressed into deltas, summed over
// the versions: the CPU one call may spend. Segments past it get no delta (devices fetch
// their chunks), newest base version first.
Result<DeltaSummary> add_deltas(const std::string& dir, ModelIndex& index, int zstd_level,
                                std::size_t delta_versions, std::uint64_t max_input_bytes = 0);

// Writes deltas/INDEX_FILE/FROM16 (index.hpp): `cidx`, the encoded `index` about to be
// published, as a delta against the index of each of the `delta_versions` most recently packed
// other versions of its name in `dir` (newest first), when smaller than `cidx`; and removes the
// ones an earlier publication of this version left. Call it before writing the index itself.
Result<DeltaSummary> add_index_deltas(const std::string& dir, const ModelIndex& index,
                                      std::string_view cidx, std::size_t delta_versions);

// Reads one chunk of a publish (or store) directory: decompresses and checks its hash.
Result<std::string> read_chunk(const std::string& dir, const ChunkRef& chunk);

// OK when the chunks of `index` in `dir` are all there, each matches its hash, and together
// they make the file the index's SHA-256 names (invalid_argument otherwise).
Status verify_model(const std::string& dir, const ModelIndex& index);

}  // namespace cairn::modelpkg
