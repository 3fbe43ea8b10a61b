// Where the weights are inside a model file: the byte ranges of tensor data in ONNX
// (ModelProto.graph.initializer[].raw_data, read with a minimal protobuf wire-format reader) and
// TFLite (Model.buffers[].data, read with a minimal flatbuffer reader) files.
//
// The chunker puts chunk boundaries on these ranges so an unchanged tensor stays an unchanged
// set of chunks wherever it moved, and pack builds per-tensor deltas from them. A file that is
// neither format, or does not parse, simply has no tensors: it is then chunked as opaque bytes.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::modelpkg {

enum class ModelFormat { kOpaque, kOnnx, kTflite };
std::string_view to_string(ModelFormat f);

struct TensorRegion {
  std::string name;  // initializer name (ONNX), tensor name or "buffer#N" (TFLite)
  std::size_t offset = 0;
  std::size_t size = 0;
  // Bytes per element (4 for float32, 1 for int8): deltas split the data into this many planes.
  std::size_t element_size = 1;
};

struct TensorLayout {
  ModelFormat format = ModelFormat::kOpaque;
  // Sorted by offset, non-overlapping, non-empty, inside the file.
  std::vector<TensorRegion> tensors;
};

// Never fails: malformed input yields an opaque layout (or the tensors found before the damage
// are dropped too, so a half-parsed file never produces wrong boundaries).
TensorLayout find_tensors(std::string_view file);

}  // namespace cairn::modelpkg
