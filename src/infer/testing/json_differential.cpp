#include "infer/testing/json_differential.hpp"

#include <limits>
#include <vector>

namespace cairn::infer::testing {

namespace {

// The binary values standing for kept arrays, in document order.
void collect_kept(const nlohmann::json& v, std::vector<const nlohmann::json*>& out) {
  if (v.is_binary()) {
    out.push_back(&v);
  } else if (v.is_structured()) {
    for (const auto& child : v) collect_kept(child, out);
  }
}

// The envelope's document with each kept array replaced by nlohmann's reading of its text.
nlohmann::json restored(const nlohmann::json& v, const JsonEnvelope& envelope) {
  if (auto text = envelope.kept_text(v)) return nlohmann::json::parse(*text);
  if (v.is_object()) {
    auto out = nlohmann::json::object();
    for (const auto& [key, child] : v.items()) out[key] = restored(child, envelope);
    return out;
  }
  if (v.is_array()) {
    auto out = nlohmann::json::array();
    for (const auto& child : v) out.push_back(restored(child, envelope));
    return out;
  }
  return v;
}

// Strict: dump() tells 1 from 1.0, which operator== does not.
std::string text_of(const nlohmann::json& v) {
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Reading {
  std::optional<JsonEnvelope> envelope;  // parsed, kept arrays read where they could be
  bool accepted = false;
};

Reading read_as_rest(std::string_view body, KeepAsText keep, DataType dtype,
                     std::size_t max_depth) {
  Reading r;
  auto parsed = JsonEnvelope::parse(body, max_depth, keep);
  if (!parsed) return r;
  r.envelope = std::move(*parsed);
  std::vector<const nlohmann::json*> kept;
  collect_kept(r.envelope->doc(), kept);
  for (const auto* v : kept) {
    Tensor t;
    t.name = "t";
    t.dtype = dtype;
    if (tensor_from_json_text(*r.envelope->kept_text(*v), true, t)) r.envelope->mark_read(*v);
  }
  r.accepted = static_cast<bool>(r.envelope->check_unread());
  return r;
}

}  // namespace

bool rest_reading_accepts(std::string_view body, KeepAsText keep, DataType dtype,
                          std::size_t max_depth) {
  return read_as_rest(body, keep, dtype, max_depth).accepted;
}

std::optional<std::string> json_differential_mismatch(std::string_view body, KeepAsText keep,
                                                      DataType dtype, std::size_t max_depth) {
  // nlohmann's lexer takes a NUL byte for the end of the input, so it accepts
  // "{\"a\":1}\0anything"; a NUL is never valid JSON (not even in a string), and the REST
  // reading refuses it wherever it is.
  const bool nlohmann_accepts =
      nlohmann::json::accept(body) && body.find('\0') == std::string_view::npos;
  const auto unlimited = find_json_syntax_error(body, std::numeric_limits<std::size_t>::max());
  if (nlohmann_accepts != !unlimited) {
    return std::string("find_json_syntax_error ") + (unlimited ? "refuses" : "accepts") +
           " what nlohmann " + (nlohmann_accepts ? "accepts" : "refuses") +
           (unlimited ? ": " + unlimited->reason + " at " + std::to_string(unlimited->offset)
                      : std::string());
  }
  const auto limited = find_json_syntax_error(body, max_depth);
  if (!unlimited && limited && limited->reason.find("nested deeper") == std::string::npos) {
    return "the depth limit refuses a valid body for another reason: " + limited->reason;
  }
  const auto reading = read_as_rest(body, keep, dtype, max_depth);
  if (reading.accepted != !limited) {
    return std::string("the REST reading ") + (reading.accepted ? "accepts" : "refuses") +
           " what the checker " + (limited ? "refuses: " + limited->reason : "accepts");
  }
  if (!reading.accepted) return std::nullopt;

  const auto& envelope = *reading.envelope;
  const auto expected = nlohmann::json::parse(body);
  const auto got = restored(envelope.doc(), envelope);
  if (text_of(got) != text_of(expected)) {
    return "the envelope reads " + text_of(got) + ", nlohmann " + text_of(expected);
  }
  std::vector<const nlohmann::json*> kept;
  collect_kept(envelope.doc(), kept);
  for (const auto* v : kept) {
    const auto text = *envelope.kept_text(*v);
    Tensor fast;
    Tensor slow;
    fast.name = slow.name = "t";
    fast.dtype = slow.dtype = dtype;
    const auto fast_status = tensor_from_json_text(text, true, fast);
    const auto slow_status = tensor_from_json(nlohmann::json::parse(text), true, slow);
    if (static_cast<bool>(fast_status) != static_cast<bool>(slow_status)) {
      return "tensor " + std::string(text.substr(0, 80)) + ": the text reader " +
             (fast_status ? "accepts" : "refuses") + ", the document reader " +
             (slow_status ? "accepts" : "refuses: " + slow_status.error().message);
    }
    if (!fast_status) {
      if (fast_status.error().message != slow_status.error().message) {
        return "tensor " + std::string(text.substr(0, 80)) + ": errors differ: '" +
               fast_status.error().message + "' vs '" + slow_status.error().message + "'";
      }
      continue;
    }
    if (fast.data != slow.data || fast.strings != slow.strings || fast.shape != slow.shape) {
      return "tensor " + std::string(text.substr(0, 80)) + ": values differ";
    }
  }
  return std::nullopt;
}

}  // namespace cairn::infer::testing
