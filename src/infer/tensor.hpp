// Tensors as cairn-infer moves them between the wire and an engine: a name, an element type,
// a shape and the elements. Numeric elements are kept as packed little-endian bytes (the
// layout ONNX Runtime, Arm NN and the KServe v2 binary extension all use), strings as a vector.
//
// Also here: the KServe v2 datatype names ("FP32", "BYTES"...), and conversion between tensors
// and JSON (flat or nested arrays; FP16/BF16 through float; NaN and infinities as the strings
// "NaN", "Infinity", "-Infinity" because JSON has no literal for them).
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cairn::infer {

enum class DataType {
  kBool,
  kUint8,
  kUint16,
  kUint32,
  kUint64,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kBf16,
  kFp32,
  kFp64,
  kBytes,  // strings; ONNX "string"
};

// "FP32", "BYTES", ... (KServe v2 names).
std::string_view to_string(DataType t) noexcept;
std::optional<DataType> parse_datatype(std::string_view name) noexcept;
// Bytes per element; 0 for kBytes.
std::size_t element_size(DataType t) noexcept;

struct Tensor {
  std::string name;
  DataType dtype = DataType::kFp32;
  std::vector<std::int64_t> shape;
  std::string data;                  // packed elements (every type but kBytes)
  std::vector<std::string> strings;  // kBytes elements

  // Product of the shape (1 for a scalar); nullopt on negative dims or overflow.
  std::optional<std::size_t> element_count() const;
  // Checks that data (or strings) holds exactly element_count() elements.
  Status check_consistent() const;
};

// Describes one model input or output; -1 marks a dimension the model leaves open.
struct TensorInfo {
  std::string name;
  DataType dtype = DataType::kFp32;
  std::vector<std::int64_t> shape;
};

nlohmann::json to_json(const TensorInfo& info);
// "[-1,4]": a shape in error messages.
std::string shape_text(const std::vector<std::int64_t>& shape);

// Fills `out.data`/`out.strings` from the JSON array `data` (flat or nested, as KServe allows),
// converting every element to `out.dtype`. With `infer_shape`, out.shape is taken from the
// nesting (a nested array must be rectangular); otherwise the element count must match
// out.shape. Errors are invalid_argument and name the first bad element.
Status tensor_from_json(const nlohmann::json& data, bool infer_shape, Tensor& out);

// tensor_from_json on the JSON text of the value (a megabyte-sized tensor has hundreds of
// thousands of numbers: no JSON document is built for them). Numbers go straight into
// out.data with std::from_chars, following the same rules. Whatever this reader does not take
// on its own -- BYTES, escaped strings, an element of the wrong kind, arrays that are not
// rectangular, anything malformed -- goes through tensor_from_json, so the values accepted and
// the errors given are the same either way. `text` must be one JSON value.
Status tensor_from_json_text(std::string_view text, bool infer_shape, Tensor& out);

// The elements as a flat JSON array, or nested by the shape when `nested`.
nlohmann::json tensor_to_json(const Tensor& t, bool nested);

// Appends tensor_to_json(t, nested) as JSON text, written straight from the packed elements
// with std::to_chars. Floating elements are written as the shortest text that reads back as
// the same value of their own type (FP32 "0.1", not the double "0.10000000149011612").
void append_tensor_json(std::string& out, const Tensor& t, bool nested);

// KServe v2 binary form of BYTES tensors: each element as a 4-byte little-endian length and
// the bytes. Numeric tensors are their `data` as is.
std::string bytes_to_binary(const std::vector<std::string>& strings);
Result<std::vector<std::string>> bytes_from_binary(std::string_view raw, std::size_t count);

// Half-precision conversions (round to nearest even).
float fp16_to_float(std::uint16_t h) noexcept;
std::uint16_t float_to_fp16(float f) noexcept;
float bf16_to_float(std::uint16_t h) noexcept;
std::uint16_t float_to_bf16(float f) noexcept;

}  // namespace cairn::infer
