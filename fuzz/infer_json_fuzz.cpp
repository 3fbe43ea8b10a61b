// libFuzzer target: arbitrary bytes as a REST request body of cairn-infer.
//
// The first byte picks the envelope (a v2 inference request or a /score body) and the type the
// tensors are read as; the rest is the body. The REST reading (JsonEnvelope, tensor_from_json_text,
// check_unread) must accept exactly what nlohmann::json::accept accepts within the nesting limit,
// and agree with nlohmann on every value it reads (testing::json_differential_mismatch). Any
// disagreement aborts, which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "infer/testing/json_differential.hpp"

namespace {

using cairn::infer::DataType;

constexpr DataType kTypes[] = {DataType::kFp32,  DataType::kFp64,  DataType::kFp16,
                               DataType::kBf16,  DataType::kInt64, DataType::kInt8,
                               DataType::kUint8, DataType::kBool,  DataType::kBytes};

// As RestOptions::max_json_depth.
constexpr std::size_t kMaxDepth = 64;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto choice = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto keep =
      (choice & 1) ? cairn::infer::keep_score_tensors : cairn::infer::keep_v2_tensor_data;
  const auto dtype = kTypes[(choice >> 1) % std::size(kTypes)];
  if (auto mismatch =
          cairn::infer::testing::json_differential_mismatch(body, keep, dtype, kMaxDepth)) {
    std::fprintf(stderr, "infer_json_fuzz: %s\n", mismatch->c_str());
    std::abort();
  }
  return 0;
}
