// ONNX Runtime behind the Engine interface. ORT's C++ API throws Ort::Exception; every call
// into it is inside a try block here, so nothing escapes this file.
#include <cstdlib>
#include <exception>

#include "core/log.hpp"
#include "infer/engine.hpp"
#include <onnxruntime_cxx_api.h>

namespace cairn::infer {

namespace {

constexpr std::string_view kLog = "infer";

// One Ort::Env for the process: it owns ORT's logging and global thread state.
Ort::Env& ort_env() {
  static Ort::Env* env = [] {
    // Upstream builds send telemetry on Linux unless told not to, before the first Env.
    ::setenv("ORT_DISABLE_TELEMETRY", "1", 0);
    auto* e = new Ort::Env(ORT_LOGGING_LEVEL_ERROR, "cairn-infer");
    e->DisableTelemetryEvents();
    return e;
  }();
  return *env;
}

std::optional<DataType> from_onnx(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return DataType::kFp32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return DataType::kFp64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return DataType::kFp16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return DataType::kBf16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return DataType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
      return DataType::kInt16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return DataType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return DataType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return DataType::kUint8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
      return DataType::kUint16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
      return DataType::kUint32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
      return DataType::kUint64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return DataType::kBool;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING:
      return DataType::kBytes;
    default:
      return std::nullopt;
  }
}

ONNXTensorElementDataType to_onnx(DataType t) {
  switch (t) {
    case DataType::kFp32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DataType::kFp64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DataType::kFp16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DataType::kBf16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    case DataType::kInt8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DataType::kInt16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DataType::kInt32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DataType::kInt64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DataType::kUint8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DataType::kUint16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case DataType::kUint32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32;
    case DataType::kUint64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64;
    case DataType::kBool:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    case DataType::kBytes:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

Result<GraphOptimizationLevel> parse_optimization(const std::string& name) {
  if (name == "disable") return ORT_DISABLE_ALL;
  if (name == "basic") return ORT_ENABLE_BASIC;
  if (name == "extended") return ORT_ENABLE_EXTENDED;
  if (name == "all" || name.empty()) return ORT_ENABLE_ALL;
  return make_error(errc::invalid_argument, "graph optimisation level '" + name +
                                                "' is not one of disable, basic, extended, all");
}

// Reads one signature entry; errors on non-tensor values (sequences, maps, optionals).
Result<TensorInfo> describe(const Ort::TypeInfo& type, std::string name) {
  if (type.GetONNXType() != ONNX_TYPE_TENSOR) {
    return make_error(
        errc::invalid_argument,
        "'" + name + "' is not a tensor (sequences, maps and optionals are not served)");
  }
  auto tensor = type.GetTensorTypeAndShapeInfo();
  auto dtype = from_onnx(tensor.GetElementType());
  if (!dtype) {
    return make_error(errc::invalid_argument,
                      "'" + name + "' has element type " +
                          std::to_string(static_cast<int>(tensor.GetElementType())) +
                          ", which cairn-infer does not marshal");
  }
  return TensorInfo{std::move(name), *dtype, tensor.GetShape()};
}

class OnnxEngine final : public Engine {
 public:
  OnnxEngine(Ort::Session session, std::vector<TensorInfo> in, std::vector<TensorInfo> out)
      : session_(std::move(session)), inputs_(std::move(in)), outputs_(std::move(out)) {
    for (const auto& o : outputs_) output_names_.push_back(o.name.c_str());
  }

  std::string_view kind() const override { return "onnxruntime"; }
  const std::vector<TensorInfo>& inputs() const override { return inputs_; }
  const std::vector<TensorInfo>& outputs() const override { return outputs_; }

  Result<std::vector<Tensor>> run(std::span<const Tensor> inputs) override {
    CAIRN_TRY(check_inputs(inputs_, inputs));
    try {
      return run_checked(inputs);
    } catch (const std::exception& e) {
      return make_error(errc::internal, std::string("onnxruntime: ") + e.what());
    }
  }

 private:
  Result<std::vector<Tensor>> run_checked(std::span<const Tensor> inputs) {
    static const Ort::MemoryInfo cpu =
        Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::AllocatorWithDefaultOptions allocator;
    std::vector<Ort::Value> values;
    std::vector<const char*> names;
    values.reserve(inputs.size());
    for (const auto& t : inputs) {
      names.push_back(t.name.c_str());
      if (t.dtype == DataType::kBytes) {
        auto v = Ort::Value::CreateTensor(allocator, t.shape.data(), t.shape.size(),
                                          ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING);
        std::vector<const char*> ptrs;
        ptrs.reserve(t.strings.size());
        for (const auto& s : t.strings) ptrs.push_back(s.c_str());
        if (!ptrs.empty()) v.FillStringTensor(ptrs.data(), ptrs.size());
        values.push_back(std::move(v));
      } else {
        // ORT reads the caller's buffer in place; it never writes to an input.
        values.push_back(Ort::Value::CreateTensor(cpu, const_cast<char*>(t.data.data()),
                                                  t.data.size(), t.shape.data(), t.shape.size(),
                                                  to_onnx(t.dtype)));
      }
    }
    auto results = session_.Run(Ort::RunOptions{nullptr}, names.data(), values.data(),
                                values.size(), output_names_.data(), output_names_.size());
    std::vector<Tensor> out;
    out.reserve(results.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
      auto& v = results[i];
      if (!v.IsTensor()) {
        return make_error(errc::internal, "output '" + outputs_[i].name + "' is not a tensor");
      }
      auto info = v.GetTensorTypeAndShapeInfo();
      auto dtype = from_onnx(info.GetElementType());
      if (!dtype) return make_error(errc::internal, "output '" + outputs_[i].name + "': bad type");
      Tensor t;
      t.name = outputs_[i].name;
      t.dtype = *dtype;
      t.shape = info.GetShape();
      const std::size_t count = info.GetElementCount();
      if (t.dtype == DataType::kBytes) {
        const std::size_t total = v.GetStringTensorDataLength();
        std::string buffer(total, '\0');
        std::vector<std::size_t> offsets(count);
        if (count) v.GetStringTensorContent(buffer.data(), total, offsets.data(), count);
        for (std::size_t k = 0; k < count; ++k) {
          const std::size_t end = k + 1 < count ? offsets[k + 1] : total;
          t.strings.push_back(buffer.substr(offsets[k], end - offsets[k]));
        }
      } else {
        const auto* p = static_cast<const char*>(v.GetTensorRawData());
        t.data.assign(p, count * element_size(t.dtype));
      }
      out.push_back(std::move(t));
    }
    return out;
  }

  Ort::Session session_;
  std::vector<TensorInfo> inputs_;
  std::vector<TensorInfo> outputs_;
  std::vector<const char*> output_names_;
};

}  // namespace

Result<std::unique_ptr<Engine>> load_onnx_engine(std::string_view bytes,
                                                 const EngineOptions& options,
                                                 const std::string& origin) {
  auto level = parse_optimization(options.graph_optimization);
  if (!level) return level.error();
  try {
    Ort::SessionOptions so;
    so.SetIntraOpNumThreads(options.intra_op_threads);
    so.SetInterOpNumThreads(options.inter_op_threads);
    so.SetGraphOptimizationLevel(*level);
    if (options.inter_op_threads > 1) so.SetExecutionMode(ORT_PARALLEL);
    for (const auto& ep : options.execution_providers) {
      if (ep == "cpu" || ep == "CPUExecutionProvider") continue;
      so.AppendExecutionProvider(ep, {});
    }
    Ort::Session session(ort_env(), bytes.data(), bytes.size(), so);
    Ort::AllocatorWithDefaultOptions allocator;
    std::vector<TensorInfo> inputs;
    std::vector<TensorInfo> outputs;
    for (std::size_t i = 0; i < session.GetInputCount(); ++i) {
      auto info =
          describe(session.GetInputTypeInfo(i), session.GetInputNameAllocated(i, allocator).get());
      if (!info)
        return make_error(errc::invalid_argument, origin + ": input " + info.error().message);
      inputs.push_back(std::move(*info));
    }
    for (std::size_t i = 0; i < session.GetOutputCount(); ++i) {
      auto info = describe(session.GetOutputTypeInfo(i),
                           session.GetOutputNameAllocated(i, allocator).get());
      if (!info) {
        return make_error(errc::invalid_argument, origin + ": output " + info.error().message);
      }
      outputs.push_back(std::move(*info));
    }
    log::debug(kLog, "onnxruntime loaded {}: {} inputs, {} outputs", origin, inputs.size(),
               outputs.size());
    return std::unique_ptr<Engine>(
        new OnnxEngine(std::move(session), std::move(inputs), std::move(outputs)));
  } catch (const std::exception& e) {
    return make_error(errc::invalid_argument, origin + ": onnxruntime: " + e.what());
  }
}

}  // namespace cairn::infer
