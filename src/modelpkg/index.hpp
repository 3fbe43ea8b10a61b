// The model index: what a published model version is made of, and where its pieces live.
//
// A published directory (any static HTTP server can serve it) holds:
//   NAME-VERSION.cidx         the index: zstd-compressed JSON (see docs/modelpkg.md)
//   NAME-VERSION.cidx.sig     optional Ed25519 signature of the .cidx bytes, base64
//   chunks/HH/HASH            one chunk: HASH is the SHA-256 (hex) of its uncompressed bytes,
//                             HH its first two digits; zstd-compressed unless the index says
//                             "raw"
//   deltas/TO16/FROM16-SEG    the delta of segment SEG from the version whose file SHA-256
//                             starts with FROM16 to the one starting with TO16 (delta.hpp)
// Paths in the index are relative to the index's own URL, so the tree can move.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace cairn::modelpkg {

// Limits on what an index may make a fetcher allocate or do; a larger index is rejected.
inline constexpr std::size_t kMaxIndexBytes = 16 * 1024 * 1024;      // compressed .cidx
inline constexpr std::size_t kMaxIndexJsonBytes = 64 * 1024 * 1024;  // decompressed
inline constexpr std::size_t kMaxChunkBytes = 16 * 1024 * 1024;      // one chunk, uncompressed
inline constexpr std::uint64_t kMaxModelBytes = 16ULL * 1024 * 1024 * 1024;

struct ChunkRef {
  std::string hash;  // SHA-256 of the uncompressed bytes, 64 lowercase hex digits
  std::uint64_t size = 0;
  bool compressed = true;         // zstd on the wire; false: stored raw (did not shrink)
  std::uint64_t stored_size = 0;  // bytes of the chunk file
};

struct SegmentRef {
  std::string key;  // tensor name or "#N" (chunker.hpp)
  std::size_t chunk_count = 0;
  std::size_t element_size = 1;
};

// How a delta codes its segment (delta.hpp), and so what of the earlier version it needs.
enum class DeltaKind {
  xor_planes,     // format 1: the segment with the same key and size
  masked_planes,  // format 2: the same
  prefix,         // format 3: prefix_segments() of the earlier version
  floats,         // format 4: the segment with the same key and size
};

struct DeltaEntry {
  std::size_t segment = 0;  // index into ModelIndex::segments
  std::uint64_t size = 0;   // bytes of the delta file
  DeltaKind kind = DeltaKind::xor_planes;
};

// Deltas from one earlier version to this one.
struct DeltaSet {
  std::string from_version;
  std::string from_sha256;  // whole-file SHA-256 of that version: what a device must hold
  std::vector<DeltaEntry> entries;
};

struct ModelIndex {
  std::string name;
  std::string version;
  std::string format;  // "onnx", "tflite", "opaque"
  std::uint64_t size = 0;
  std::string sha256;  // of the whole file, hex
  std::vector<ChunkRef> chunks;
  std::vector<SegmentRef> segments;  // in file order; their chunk counts add up to chunks.size()
  std::vector<DeltaSet> deltas;

  // Byte offset of each chunk in the file, plus a final entry equal to size.
  std::vector<std::uint64_t> chunk_offsets() const;
  // First chunk of each segment, plus a final entry equal to chunks.size().
  std::vector<std::size_t> segment_starts() const;
  // The segments whose bytes, in file order, are the prefix a format-3 delta for a segment
  // keyed `key` refers into: every `#N` segment (the bytes between tensors) and the segment
  // keyed `key`, if any. Empty when they add up to more than kMaxPrefixBytes.
  std::vector<std::size_t> prefix_segments(std::string_view key) const;
};

// Cap on the prefix of a format-3 delta: the device reads that much of the earlier version.
inline constexpr std::uint64_t kMaxPrefixBytes = 32 * 1024 * 1024;

// The .cidx bytes: compact JSON, zstd level 19.
Result<std::string> encode_index(const ModelIndex& index);
// Parses and checks a .cidx: shape, limits, hashes, that chunks add up to `size` and
// segments to the chunk list. Anything else is an error naming what is wrong.
Result<ModelIndex> decode_index(std::string_view cidx);

// Names and versions are [A-Za-z0-9._-]{1,128}, not starting with '.' (they become file names).
Status check_label(std::string_view value, std::string_view what);

// The index file of a version: NAME-VERSION.cidx when NAME has no '-', NAME~VERSION.cidx when it
// has one. '~' is in no name or version, and a NAME-VERSION file name splits at its first '-',
// so no two (name, version) pairs share a file ("a-b" version "c" is a-b~c.cidx, "a" version
// "b-c" is a-b-c.cidx), while the names of models without '-' keep their NAME-VERSION URLs.
std::string index_file_name(std::string_view name, std::string_view version);
// The file name every index had before: NAME-VERSION.cidx, which two pairs can share. Only read
// to find and rename (or serve) indexes written by earlier releases.
std::string legacy_index_file_name(std::string_view name, std::string_view version);
std::string chunk_path(std::string_view hash);
std::string delta_path(std::string_view to_sha256, std::string_view from_sha256,
                       std::size_t segment);

// Index deltas: an index sent as a delta against an index the device holds.
//   deltas/INDEX_FILE/FROM16    INDEX_FILE as index_file_name() (the name the device fetches),
//                               FROM16 the first 16 hex digits of the SHA-256 of the held
//                               index's .cidx bytes
// Format: "CIXD", format byte 1, three zero bytes, the SHA-256 of the new .cidx bytes (32
// bytes), then one zstd frame of the new index's JSON referring back into the old one's, both
// with every quoted hash as byte 0x01 and its 32 bytes (docs/modelpkg.md). The
// device re-encodes that JSON as encode_index() does and keeps the result only when it hashes
// to the header: the exact bytes the publisher wrote (and signed).
std::string index_delta_path(std::string_view index_file, std::string_view from_cidx_sha256);
Result<std::string> make_index_delta(std::string_view old_cidx, std::string_view new_cidx);
// The new .cidx bytes; corruption when the delta does not decode against `old_cidx` or what it
// makes does not hash to its header.
Result<std::string> apply_index_delta(std::string_view old_cidx, std::string_view delta);

}  // namespace cairn::modelpkg
