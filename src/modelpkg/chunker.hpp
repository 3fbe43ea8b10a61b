// Splitting a model file into segments and chunks.
//
// A segment is either one tensor's data (ONNX initializer raw_data, TFLite buffer) of at least
// `min_tensor_segment` bytes, keyed by the tensor's name, or the bytes between such tensors
// (graph structure, names, small tensors), keyed "#N" by its position among those. Segments
// end on tensor boundaries, so an unchanged tensor is an unchanged set of chunks wherever it
// moved; deltas are made per segment (see delta.hpp).
//
// Inside a segment, chunk boundaries are content-defined: a gear rolling hash (as in FastCDC)
// cuts where its low bits are zero, between `min_chunk` and `max_chunk` bytes, so inserting
// bytes moves only the boundaries near the insertion.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "modelpkg/tensors.hpp"

namespace cairn::modelpkg {

struct ChunkingOptions {
  // Smaller chunks find more shared bytes but cost a 32-byte hash each in the index.
  std::size_t min_chunk = 16 * 1024;
  std::size_t average_chunk = 64 * 1024;  // a power of two
  std::size_t max_chunk = 256 * 1024;
  // Tensors smaller than this stay inside the surrounding segment: a chunk per bias vector
  // would make the index larger than what it saves.
  std::size_t min_tensor_segment = 4 * 1024;
};

struct Segment {
  std::string key;  // tensor name, or "#N" for the N-th segment between tensors
  std::size_t offset = 0;
  std::size_t size = 0;
  std::size_t element_size = 1;  // byte planes of its delta
  bool is_tensor = false;
};

struct ChunkSpan {
  std::size_t offset = 0;
  std::size_t size = 0;
};

// Covers [0, file_size) with consecutive non-empty segments.
std::vector<Segment> make_segments(std::size_t file_size, const TensorLayout& layout,
                                   const ChunkingOptions& options);

// Content-defined chunks of `data` (offsets relative to it); empty data has no chunks.
std::vector<ChunkSpan> cut_chunks(std::string_view data, const ChunkingOptions& options);

}  // namespace cairn::modelpkg
