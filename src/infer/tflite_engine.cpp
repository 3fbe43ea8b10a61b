// TensorFlow Lite models through Arm NN's TfLiteParser (Arm NN 20.08 in Debian 12). Arm NN
// supports one subgraph and a subset of the TFLite operators; its parser reports what it cannot
// handle with exceptions, some of them plain std:: ones (std::out_of_range), so every call into
// Arm NN is inside a try block that catches everything.
#include "infer/engine.hpp"

#ifdef CAIRN_HAVE_ARMNN

#include <mutex>

#include "core/log.hpp"
#include <armnn/ArmNN.hpp>
#include <armnnTfLiteParser/ITfLiteParser.hpp>

namespace cairn::infer {

namespace {

constexpr std::string_view kLog = "infer";

std::optional<DataType> from_armnn(armnn::DataType t) {
  switch (t) {
    case armnn::DataType::Float32:
      return DataType::kFp32;
    case armnn::DataType::Float16:
      return DataType::kFp16;
    case armnn::DataType::BFloat16:
      return DataType::kBf16;
    case armnn::DataType::QAsymmU8:
      return DataType::kUint8;
    case armnn::DataType::QAsymmS8:
    case armnn::DataType::QSymmS8:
      return DataType::kInt8;
    case armnn::DataType::QSymmS16:
      return DataType::kInt16;
    case armnn::DataType::Signed32:
      return DataType::kInt32;
    case armnn::DataType::Boolean:
      return DataType::kBool;
    default:
      return std::nullopt;
  }
}

struct Binding {
  armnn::LayerBindingId id;
  armnn::TensorInfo info;
};

Result<TensorInfo> describe(const std::string& name, const armnn::TensorInfo& info) {
  auto dtype = from_armnn(info.GetDataType());
  if (!dtype) {
    return make_error(errc::invalid_argument,
                      "tensor '" + name + "' has an Arm NN data type cairn-infer does not marshal");
  }
  TensorInfo out{name, *dtype, {}};
  const auto& shape = info.GetShape();
  for (unsigned i = 0; i < shape.GetNumDimensions(); ++i) out.shape.push_back(shape[i]);
  return out;
}

class TfliteEngine final : public Engine {
 public:
  TfliteEngine(armnn::IRuntimePtr runtime, armnn::NetworkId id, std::vector<Binding> in,
               std::vector<Binding> out, std::vector<TensorInfo> in_info,
               std::vector<TensorInfo> out_info)
      : runtime_(std::move(runtime)),
        network_(id),
        in_bindings_(std::move(in)),
        out_bindings_(std::move(out)),
        inputs_(std::move(in_info)),
        outputs_(std::move(out_info)) {}
  ~TfliteEngine() override { runtime_->UnloadNetwork(network_); }

  std::string_view kind() const override { return "armnn-tflite"; }
  const std::vector<TensorInfo>& inputs() const override { return inputs_; }
  const std::vector<TensorInfo>& outputs() const override { return outputs_; }

  Result<std::vector<Tensor>> run(std::span<const Tensor> inputs) override {
    CAIRN_TRY(check_inputs(inputs_, inputs));
    armnn::InputTensors in;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      for (const auto& t : inputs) {
        if (t.name == inputs_[i].name) {
          in.emplace_back(in_bindings_[i].id,
                          armnn::ConstTensor(in_bindings_[i].info, t.data.data()));
        }
      }
    }
    std::vector<Tensor> out(outputs_.size());
    armnn::OutputTensors out_tensors;
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      out[i].name = outputs_[i].name;
      out[i].dtype = outputs_[i].dtype;
      out[i].shape = outputs_[i].shape;
      out[i].data.assign(out_bindings_[i].info.GetNumBytes(), '\0');
      out_tensors.emplace_back(out_bindings_[i].id,
                               armnn::Tensor(out_bindings_[i].info, out[i].data.data()));
    }
    try {
      std::lock_guard lock(run_mutex_);
      if (runtime_->EnqueueWorkload(network_, in, out_tensors) != armnn::Status::Success) {
        return make_error(errc::internal, "armnn: EnqueueWorkload failed");
      }
    } catch (const std::exception& e) {
      return make_error(errc::internal, std::string("armnn: ") + e.what());
    }
    return out;
  }

 private:
  armnn::IRuntimePtr runtime_;
  armnn::NetworkId network_;
  std::vector<Binding> in_bindings_;
  std::vector<Binding> out_bindings_;
  std::vector<TensorInfo> inputs_;
  std::vector<TensorInfo> outputs_;
  // Arm NN 20.08 shares one working memory per loaded network between runs.
  std::mutex run_mutex_;
};

Result<std::unique_ptr<Engine>> load(std::string_view bytes, const EngineOptions& options,
                                     const std::string& origin) {
  armnn::IRuntime::CreationOptions runtime_options;
  armnn::IRuntimePtr runtime = armnn::IRuntime::Create(runtime_options);
  const auto supported = runtime->GetDeviceSpec().GetSupportedBackends();
  std::vector<armnn::BackendId> backends;
  const std::vector<std::string> preferred =
      options.armnn_backends.empty() ? std::vector<std::string>{"CpuAcc", "GpuAcc", "CpuRef"}
                                     : options.armnn_backends;
  for (const auto& name : preferred) {
    if (supported.count(armnn::BackendId(name))) backends.emplace_back(name);
  }
  if (backends.empty()) {
    // Arm NN crashes loading a network with no backend; refuse first.
    return make_error(errc::unavailable,
                      origin +
                          ": no Arm NN backend available (install libarmnn-cpuref-backend22 "
                          "or an accelerated backend)");
  }
  auto parser = armnnTfLiteParser::ITfLiteParser::Create();
  std::vector<std::uint8_t> content(bytes.begin(), bytes.end());
  armnn::INetworkPtr network = parser->CreateNetworkFromBinary(content);
  if (parser->GetSubgraphCount() != 1) {
    return make_error(errc::invalid_argument,
                      origin + ": Arm NN supports models with one subgraph, this one has " +
                          std::to_string(parser->GetSubgraphCount()));
  }
  std::vector<std::string> messages;
  armnn::IOptimizedNetworkPtr optimized =
      armnn::Optimize(*network, backends, runtime->GetDeviceSpec(), armnn::OptimizerOptions(),
                      armnn::Optional<std::vector<std::string>&>(messages));
  if (!optimized) {
    std::string why;
    for (const auto& m : messages) why += (why.empty() ? "" : "; ") + m;
    return make_error(errc::invalid_argument,
                      origin + ": Arm NN cannot optimise the network: " + why);
  }
  armnn::NetworkId id = 0;
  std::string load_error;
  if (runtime->LoadNetwork(id, std::move(optimized), load_error, armnn::INetworkProperties()) !=
      armnn::Status::Success) {
    return make_error(errc::invalid_argument,
                      origin + ": Arm NN cannot load the network: " + load_error);
  }
  std::vector<Binding> in_bindings;
  std::vector<Binding> out_bindings;
  std::vector<TensorInfo> in_info;
  std::vector<TensorInfo> out_info;
  for (const auto& name : parser->GetSubgraphInputTensorNames(0)) {
    auto b = parser->GetNetworkInputBindingInfo(0, name);
    auto info = describe(name, b.second);
    if (!info) return make_error(errc::invalid_argument, origin + ": " + info.error().message);
    in_bindings.push_back({b.first, runtime->GetInputTensorInfo(id, b.first)});
    in_info.push_back(std::move(*info));
  }
  for (const auto& name : parser->GetSubgraphOutputTensorNames(0)) {
    auto b = parser->GetNetworkOutputBindingInfo(0, name);
    auto info = describe(name, b.second);
    if (!info) return make_error(errc::invalid_argument, origin + ": " + info.error().message);
    out_bindings.push_back({b.first, runtime->GetOutputTensorInfo(id, b.first)});
    out_info.push_back(std::move(*info));
  }
  log::debug(kLog, "armnn loaded {} on {}", origin, backends.front().Get());
  return std::unique_ptr<Engine>(new TfliteEngine(std::move(runtime), id, std::move(in_bindings),
                                                  std::move(out_bindings), std::move(in_info),
                                                  std::move(out_info)));
}

}  // namespace

Result<std::unique_ptr<Engine>> load_tflite_engine(std::string_view bytes,
                                                   const EngineOptions& options,
                                                   const std::string& origin) {
  try {
    return load(bytes, options, origin);
  } catch (const std::exception& e) {
    return make_error(errc::invalid_argument, origin + ": Arm NN TfLiteParser: " + e.what());
  } catch (...) {
    return make_error(errc::invalid_argument, origin + ": Arm NN TfLiteParser failed");
  }
}

}  // namespace cairn::infer

#else  // !CAIRN_HAVE_ARMNN

namespace cairn::infer {

Result<std::unique_ptr<Engine>> load_tflite_engine(std::string_view, const EngineOptions&,
                                                   const std::string& origin) {
  return make_error(errc::unavailable,
                    origin + ": TFLite model, but this cairn-infer was built without Arm NN");
}

}  // namespace cairn::infer

#endif
