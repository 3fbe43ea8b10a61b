// The seam between cairn-infer and an inference library. An Engine is one loaded model: its
// input and output signatures, and `run`. Two implementations: ONNX Runtime (onnx_engine.cpp)
// and TensorFlow Lite through Arm NN's TfLiteParser (tflite_engine.cpp, when built with Arm NN).
//
// load_engine picks the implementation from the file's bytes (never from its name) and turns
// every failure of the library, C++ exceptions included, into an Error carrying the library's
// own reason.
//
// Thread-safety: run() may be called from several threads at once; the engine serialises
// internally when its library requires it. Signatures are immutable after load.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "infer/tensor.hpp"

namespace cairn::infer {

enum class ModelFormat { kUnknown, kOnnx, kTflite };
std::string_view to_string(ModelFormat f) noexcept;

// Recognises a TFLite flatbuffer by its "TFL3" file identifier (bytes 4..8) and an ONNX model
// by the protobuf field tags a ModelProto starts with. Anything else is kUnknown.
ModelFormat detect_format(std::string_view bytes) noexcept;

struct EngineOptions {
  // ONNX Runtime threads for one run (intra) and across independent graph branches (inter).
  // 0 lets ORT choose (one per core): fastest alone, but several models then oversubscribe.
  int intra_op_threads = 1;
  int inter_op_threads = 1;
  // "disable", "basic", "extended" or "all". "all" costs load time and gains run time.
  std::string graph_optimization = "all";
  // ORT execution providers in preference order ("cpu" is always last). Ones this build of ORT
  // lacks are an error at load, not a silent fallback.
  std::vector<std::string> execution_providers;
  // Arm NN backends in preference order; empty: CpuAcc, GpuAcc, CpuRef, whichever are present.
  std::vector<std::string> armnn_backends;
};

class Engine {
 public:
  virtual ~Engine() = default;
  // "onnxruntime" or "armnn-tflite".
  virtual std::string_view kind() const = 0;
  virtual const std::vector<TensorInfo>& inputs() const = 0;
  virtual const std::vector<TensorInfo>& outputs() const = 0;
  // Runs the model. `inputs` must name every model input once, in any order, with the model's
  // dtype and a shape compatible with its signature (checked here; invalid_argument otherwise).
  // Returns every output, in signature order. Errors from the library are errc::internal with
  // its message.
  virtual Result<std::vector<Tensor>> run(std::span<const Tensor> inputs) = 0;
};

// Loads a model from memory; `origin` names it in error messages.
Result<std::unique_ptr<Engine>> load_engine(std::string_view bytes, const EngineOptions& options,
                                            const std::string& origin);
// Reads the file and loads it.
Result<std::unique_ptr<Engine>> load_engine_file(const std::string& path,
                                                 const EngineOptions& options);

// Checks `inputs` against a signature: every input present once, dtype and shape compatible.
Status check_inputs(const std::vector<TensorInfo>& signature, std::span<const Tensor> inputs);

// Implementations, called by load_engine.
Result<std::unique_ptr<Engine>> load_onnx_engine(std::string_view bytes,
                                                 const EngineOptions& options,
                                                 const std::string& origin);
Result<std::unique_ptr<Engine>> load_tflite_engine(std::string_view bytes,
                                                   const EngineOptions& options,
                                                   const std::string& origin);

}  // namespace cairn::infer
