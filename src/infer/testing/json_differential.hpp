// A differential check of the REST API's JSON reading against nlohmann's, shared by the unit
// tests and the libFuzzer target (fuzz/infer_json_fuzz.cpp).
//
// For one request body it reads the body as the REST API does (JsonEnvelope::parse, each kept
// array through tensor_from_json_text as a tensor of `dtype`, then check_unread) and demands:
//   * find_json_syntax_error accepts exactly what nlohmann::json::accept accepts (no depth
//     limit; a body with a NUL byte refused, which nlohmann accepts after a complete value),
//     and with the depth limit refuses only for depth;
//   * the REST reading accepts exactly what find_json_syntax_error accepts with the limit;
//   * when it accepts, the envelope with its kept arrays put back equals nlohmann's document,
//     and each kept array read as a tensor gives the same verdict, bytes, shape and error
//     message as tensor_from_json on nlohmann's value of it.
//
// Thread-safety: plain functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "infer/json_envelope.hpp"
#include "infer/tensor.hpp"

namespace cairn::infer::testing {

// What differs, or nullopt when everything agrees.
std::optional<std::string> json_differential_mismatch(std::string_view body, KeepAsText keep,
                                                      DataType dtype, std::size_t max_depth);

// Whether the REST reading accepts `body` (the decision the check above compares).
bool rest_reading_accepts(std::string_view body, KeepAsText keep, DataType dtype,
                          std::size_t max_depth);

}  // namespace cairn::infer::testing
