#include "infer/engine.hpp"

#include <fstream>
#include <sstream>

namespace cairn::infer {

std::string_view to_string(ModelFormat f) noexcept {
  switch (f) {
    case ModelFormat::kOnnx:
      return "onnx";
    case ModelFormat::kTflite:
      return "tflite";
    case ModelFormat::kUnknown:
      break;
  }
  return "unknown";
}

ModelFormat detect_format(std::string_view bytes) noexcept {
  if (bytes.size() >= 8 && bytes.substr(4, 4) == "TFL3") return ModelFormat::kTflite;
  if (bytes.size() < 2) return ModelFormat::kUnknown;
  // A serialized ModelProto is a sequence of fields; writers emit them in field order, so the
  // first byte is the tag of a low-numbered ModelProto field: ir_version (1, varint),
  // producer_name/version, domain (2..4, bytes), model_version (5, varint), doc_string (6),
  // graph (7), opset_import (8) or metadata_props (14).
  switch (static_cast<unsigned char>(bytes[0])) {
    case 0x08:
    case 0x12:
    case 0x1a:
    case 0x22:
    case 0x28:
    case 0x32:
    case 0x3a:
    case 0x42:
    case 0x72:
      return ModelFormat::kOnnx;
    default:
      return ModelFormat::kUnknown;
  }
}

Status check_inputs(const std::vector<TensorInfo>& signature, std::span<const Tensor> inputs) {
  if (inputs.size() != signature.size()) {
    std::string names;
    for (const auto& s : signature) names += (names.empty() ? "" : ", ") + s.name;
    return make_error(errc::invalid_argument,
                      "the model takes " + std::to_string(signature.size()) + " input(s) (" +
                          names + "), got " + std::to_string(inputs.size()));
  }
  for (const auto& info : signature) {
    const Tensor* found = nullptr;
    for (const auto& t : inputs) {
      if (t.name == info.name) found = &t;
    }
    if (!found) return make_error(errc::invalid_argument, "input '" + info.name + "' is missing");
    if (found->dtype != info.dtype) {
      return make_error(errc::invalid_argument, "input '" + info.name + "' must be " +
                                                    std::string(to_string(info.dtype)) + ", got " +
                                                    std::string(to_string(found->dtype)));
    }
    bool shape_ok = found->shape.size() == info.shape.size();
    for (std::size_t i = 0; shape_ok && i < info.shape.size(); ++i) {
      shape_ok = info.shape[i] < 0 || info.shape[i] == found->shape[i];
    }
    if (!shape_ok) {
      return make_error(errc::invalid_argument, "input '" + info.name + "' must have shape " +
                                                    shape_text(info.shape) + " (-1: any), got " +
                                                    shape_text(found->shape));
    }
    CAIRN_TRY(found->check_consistent());
  }
  return {};
}

Result<std::unique_ptr<Engine>> load_engine(std::string_view bytes, const EngineOptions& options,
                                            const std::string& origin) {
  switch (detect_format(bytes)) {
    case ModelFormat::kOnnx:
      return load_onnx_engine(bytes, options, origin);
    case ModelFormat::kTflite:
      return load_tflite_engine(bytes, options, origin);
    case ModelFormat::kUnknown:
      break;
  }
  return make_error(errc::invalid_argument,
                    origin +
                        ": not a model cairn-infer can load (neither an ONNX protobuf nor a "
                        "TFLite flatbuffer; " +
                        std::to_string(bytes.size()) + " bytes)");
}

Result<std::unique_ptr<Engine>> load_engine_file(const std::string& path,
                                                 const EngineOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::not_found, path + ": cannot open");
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return make_error(errc::io_error, path + ": read failed");
  return load_engine(content.str(), options, path);
}

}  // namespace cairn::infer
