// JSON request bodies of the REST API, read without building a JSON document for their tensors.
//
// A request body is a small envelope (names, shapes, parameters) around tensor arrays that may
// hold hundreds of thousands of numbers. JsonEnvelope::parse builds a JSON document of the
// envelope only; each array that may be a tensor stays text, found by one quick scan, and is
// read straight into a tensor by tensor_from_json_text. A body is still accepted only when all
// of it is valid JSON (RFC 8259, exactly what nlohmann::json::accept accepts), within a nesting
// limit: every byte is checked once -- by the envelope parser, by the tensor reader that read
// an array in full, or, for the arrays nobody read, by check_unread() at the end of decoding.
//
// find_json_syntax_error is the strict checker behind it, and the one that says where a body
// is malformed ("at byte 812 (line 3, column 40): expected ',' or ']'").
//
// Thread-safety: plain values. A JsonEnvelope refers to the text it was parsed from, which
// must outlive it.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cairn::infer {

struct JsonSyntaxError {
  std::size_t offset = 0;  // byte of the text where it stops being JSON
  std::string reason;      // "expected ',' or ']'", "invalid UTF-8 in a string", ...
};

// The first place where `text` is not one JSON value, or nullopt when it is one. Agrees with
// nlohmann::json::accept (byte order mark skipped at the start; any 0x20..0x10FFFF character in
// strings as well-formed UTF-8 or \u escapes with paired surrogates; no control characters;
// numbers as RFC 8259 spells them, refused when they overflow a double; no NaN or Infinity;
// duplicate member names allowed) except for two things: arrays and objects nested deeper than
// `max_depth` are refused ("nested deeper than N levels"), and so is a NUL byte after the value
// (nlohmann's lexer takes NUL for the end of the input and ignores what follows).
std::optional<JsonSyntaxError> find_json_syntax_error(std::string_view text, std::size_t max_depth);

// The error a client gets for it: "the body is not valid JSON: <reason> at byte N (line L,
// column C)", or "JSON nested deeper than N levels". invalid_argument.
Error json_syntax_error(std::string_view text, const JsonSyntaxError& error);

// Which arrays stay text, given the nesting depth of the value (1: a member of the top-level
// object) and its member name ("" inside an array).
using KeepAsText = bool (*)(std::size_t depth, std::string_view key);
// A v2 inference request's tensors: {"inputs": [{"data": [...]}]} (and any "data" array at that
// depth, such as an output's, which is then only checked).
bool keep_v2_tensor_data(std::size_t depth, std::string_view key);
// A /score body's tensors: every array member of the top-level object.
bool keep_score_tensors(std::size_t depth, std::string_view key);

class JsonEnvelope {
 public:
  // Parses `text` into doc(), each array `keep` selects left as text. Refuses (invalid_argument,
  // saying where) a body that is not JSON or nests deeper than max_depth; the kept arrays' own
  // contents are checked later (check_unread). A repeated member name keeps its last value, as
  // nlohmann does; the values it replaced are still checked.
  static Result<JsonEnvelope> parse(std::string_view text, std::size_t max_depth, KeepAsText keep);

  // The envelope; each array kept as text is a binary value here (see kept_text).
  const nlohmann::json& doc() const { return doc_; }

  // The text of `value` when it is an array kept as text.
  std::optional<std::string_view> kept_text(const nlohmann::json& value) const;
  // Records that the kept array `value` was read in full by a reader that refuses anything but
  // valid JSON (tensor_from_json_text when it succeeds), so check_unread need not scan it again.
  void mark_read(const nlohmann::json& value);
  // Checks every kept array not marked read. Call it once decoding is over, whatever the
  // decoder concluded: a body that is not JSON is refused as such, before anything else.
  Status check_unread() const;

 private:
  struct Kept {
    std::size_t offset = 0;  // in text_
    std::size_t size = 0;
    std::size_t outer_depth = 0;  // arrays and objects open around it
    bool read = false;
  };
  friend class EnvelopeParser;

  std::string_view text_;
  std::size_t max_depth_ = 0;
  nlohmann::json doc_;
  std::vector<Kept> kept_;
};

}  // namespace cairn::infer
