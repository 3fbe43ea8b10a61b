// InputMapping: how a raw JSON record (a sensor reading such as
//   {"machine":{"temperature":…,"pressure":…},"ambient":{…},"timeCreated":"…"})
// becomes a model's input tensors, so that a route can send readings straight to cairn-infer.
// A model's twin entry carries it as "inputMapping" (docs/infer.md, "Raw records"):
//
//   "inputMapping": {"reading": ["machine.temperature", "machine.pressure"]}
//   "inputMapping": {"reading": {"fields": [...], "datatype": "FP32", "shape": [1, 2]}}
//
// Each key is a model input; its fields, in order, are the tensor's elements (row-major). A
// field is a dot-separated path of object keys; a segment of digits indexes an array.
//
// Three steps, each with its own errors: parse() checks the twin's JSON (any entry, any model);
// bind() checks it against a loaded model's inputs and fixes each tensor's dtype and shape (a
// mapping that does not fit fails that version's load); map() turns one record into tensors
// (a record that does not fit is refused with the field and the reason).
//
// Thread-safety: immutable after parse/bind; map() may run on many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"
#include "infer/tensor.hpp"

namespace cairn::infer {

struct InputMappingLimits {
  static constexpr std::size_t kMaxInputs = 64;        // mapped inputs per model
  static constexpr std::size_t kMaxFields = 4096;      // fields per input
  static constexpr std::size_t kMaxPathBytes = 256;    // one field's path
  static constexpr std::size_t kMaxPathSegments = 16;  // nesting one path may reach
};

class InputMapping {
 public:
  struct Field {
    std::string path;                   // as written, for messages
    std::vector<std::string> segments;  // path split at '.'
  };
  struct Input {
    std::string name;
    std::vector<Field> fields;
    std::optional<DataType> dtype;    // as stated; after bind(), the model's
    std::vector<std::int64_t> shape;  // as stated (empty: not stated); after bind(), the tensor's
  };

  // Parses the twin's "inputMapping" object. Errors are invalid_argument and name the member,
  // e.g. `inputMapping.reading.fields[2]: ...`.
  static Result<InputMapping> parse(const nlohmann::json& j);

  // The mapping for a model with these inputs: every model input mapped, no unknown name, a
  // dtype that records can give (numbers, BOOL from true/false, BYTES from strings) and a shape
  // that the fields fill. A shape not stated is the model's with each open dimension 1, except
  // the last open one, which takes what the fields need (so [-1, 4] takes 4 fields as [1, 4]).
  Result<InputMapping> bind(const std::vector<TensorInfo>& signature) const;

  // The input tensors of one record (after bind()). Errors are invalid_argument naming the field:
  // missing, or a value the input's dtype cannot take.
  Result<std::vector<Tensor>> map(const nlohmann::json& record) const;

  const std::vector<Input>& inputs() const { return inputs_; }
  // The twin JSON it was parsed from (equal mappings have equal sources).
  const nlohmann::json& source() const { return source_; }
  // {"input": {"fields": [...], "datatype": "FP32", "shape": [1, 4]}, ...}: what is in force.
  nlohmann::json to_json() const;

 private:
  std::vector<Input> inputs_;
  nlohmann::json source_;
};

}  // namespace cairn::infer
