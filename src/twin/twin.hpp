// Twin documents: the desired / reported / tags sections of a module or device twin, their
// versions, and the rules for changing them.
//
// A change is a JSON merge patch (RFC 7386): members present are added or replaced (objects
// merge recursively), a null member deletes, absent members stay. Every patch that comes from
// outside is checked against IoT Hub's limits first (docs/protocol.md §4):
//
//   nesting depth       10 levels of objects/arrays below the section root (IoT Hub's own
//                       example: "one" ... "ten" nested objects holding "property": "value")
//   property name       1..1024 UTF-8 bytes; no control characters (C0, DEL, C1), no Unicode
//                       whitespace, no '.', '$' or '#'
//   string value        at most 4096 UTF-8 bytes, valid UTF-8
//   integer             -4503599627370496 .. 4503599627370495 (+-2^52)
//   value types         object, array, string, number (finite), bool, null; arrays may not
//                       contain null, objects inside arrays may not have null members
//   whole patch         at most 32 KiB serialized (compact JSON)
//   section             desired/reported at most 32 KiB, tags at most 8 KiB, counted the IoT Hub
//                       way (see section_size)
//
// A patch failing any rule is rejected as a whole with errc::invalid_argument or
// errc::limit_exceeded and a message naming the offending path ("reported.a.b: ...") and
// changes nothing.
//
// Nothing here throws on bad input: nlohmann exceptions (invalid UTF-8 on dump, parse errors)
// are caught and turned into errors. Functions that walk a document recursively (diff,
// merge_patch, section_size, comparisons) expect documents of sane depth: run validate_patch on
// anything from outside first, and read JSON text through parse_json, which caps nesting.
//
// Thread-safety: free functions are pure. A Twin is a plain value; guard a shared one
// externally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cairn::twin {

using json = nlohmann::json;

inline constexpr std::size_t kMaxSectionBytes = 32 * 1024;  // desired / reported, IoT Hub counting
inline constexpr std::size_t kMaxTagsBytes = 8 * 1024;
inline constexpr std::size_t kMaxPatchBytes = 32 * 1024;  // serialized patch, edgeHub's check
inline constexpr int kMaxDepth = 10;
inline constexpr std::size_t kMaxNameBytes = 1024;
inline constexpr std::size_t kMaxStringBytes = 4096;
inline constexpr std::int64_t kMinInteger = -4503599627370496;  // -2^52
inline constexpr std::int64_t kMaxInteger = 4503599627370495;   // 2^52 - 1
// parse_json's default nesting cap: far above any valid twin (a section is 10 levels, plus
// "properties"/"desired"/"$metadata" wrappers) and far below what would exhaust the stack.
inline constexpr int kMaxParseDepth = 64;

// Checks a patch (or a whole section) for desired/reported/tags against the rules above. Paths
// in messages start at "patch" ("patch.a.b: nesting deeper than 10 levels"). A top-level
// "$version" member is allowed and ignored (clients echo it); any other '$' name is an error.
Status validate_patch(const json& patch);
// Same, with paths starting at `section` ("reported.a.b: ...").
Status validate_patch(const json& patch, std::string_view section);

// RFC 7386 merge patch: members replace, objects merge recursively, null deletes. A patch that
// is not an object replaces the target whole. Does not treat '$' names specially.
void merge_patch(json& target, const json& patch);

// Folds `later` into `earlier` so that one patch does the work of both, as edgeHub collapses
// the reported patches waiting for the cloud: members of `later` replace those of `earlier`,
// objects in both merge recursively, and null is kept as a value (it must still delete in the
// target). Exact except where `earlier` deletes or replaces an object that `later` then sets
// to an object: the result merges into the target's object instead of replacing it.
void compose_patches(json& earlier, const json& later);

// The merge patch that turns `from` into `to`: members missing from `to` become null, changed
// objects are diffed recursively, arrays and scalars are replaced whole. Returns an empty object
// when both are equal objects. When either side is not an object the result is `to` itself.
// Numbers compare by kind too: 1 and 1.0 differ. merge_patch(from, diff(from, to)) == to holds
// whenever `to` has no null-valued object members outside arrays, which is always true of a
// twin section (merge patches cannot express such members).
json diff(const json& from, const json& to);

// Size of a section as IoT Hub counts it: for every object member the UTF-8 length of its name
// plus the size of its value; strings count their UTF-8 length, numbers 8, booleans 4, null 4;
// objects and arrays the sum of their contents. Members whose name starts with '$' ($version,
// $metadata) are not counted.
std::size_t section_size(const json& section);

// Reads JSON text from outside. Never throws: errc::invalid_argument with "line L, column C"
// for syntax errors, invalid UTF-8, numbers out of range, or nesting deeper than `max_depth`.
Result<json> parse_json(std::string_view text, int max_depth = kMaxParseDepth);

// Compact serialization that never throws: invalid UTF-8 (only possible in documents built in
// code, never in parsed ones) is replaced by U+FFFD.
std::string dump_json(const json& value);

// The body of a refused twin request (the status goes in the response topic), in IoT Hub's
// shape: {"errorCode": N, "message": ...}. The SDKs fail a request only when the body carries
// an errorCode (the Node SDK ignores the status), so every error answer must have one.
// errorCode is IoT Hub's six-digit code for the status (docs/protocol.md §4).
std::string error_body(int status, std::string_view message);

struct Twin {
  json desired = json::object();  // without "$version"/"$metadata"
  json reported = json::object();
  json tags = json::object();
  std::int64_t desired_version = 1;  // IoT Hub starts both sections at 1
  std::int64_t reported_version = 1;
  std::int64_t version = 1;  // whole-document version, bumps on every change (service "version")

  // {"desired":{...,"$version":n},"reported":{...,"$version":m}}: the MQTT GET body.
  json device_view() const;
  // Parses a GET body (what a cloud returns): both sections objects with an integer $version
  // >= 0. Top-level '$' members of the sections ($version, $metadata) are dropped; the content
  // is taken as the cloud has it, not re-validated. An integer "version" at the top, as in the
  // service's full twin, is kept; otherwise version stays 1. errc::invalid_argument otherwise.
  static Result<Twin> from_device_view(const json& view);

  // Validate + merge + reported_version++ + version++; the merged section must stay within
  // kMaxSectionBytes. Versions bump even when the patch changes nothing, as IoT Hub's do. On any
  // error nothing changes.
  Status patch_reported(const json& patch);
  // Same for desired; returns the patch as delivered to devices: the patch plus
  // "$version": new desired_version.
  Result<json> patch_desired(const json& patch);
  // Replaces desired wholesale (service "replace twin"); returns the delivered patch (diff +
  // "$version"). Null members of `desired` are dropped; a top-level "$version" is ignored.
  Result<json> replace_desired(const json& desired);
  // Tags are never delivered to devices, so only `version` bumps. Limit kMaxTagsBytes.
  Status patch_tags(const json& patch);
  Status replace_tags(const json& tags);

  // The patch that brings a client holding `older_desired` (top-level '$' members ignored) up
  // to date: diff + "$version"; std::nullopt when nothing differs.
  std::optional<json> desired_patch_since(const json& older_desired) const;

  // Storage form (one JSON text holding everything incl. versions) and back. parse() gives
  // errc::corruption for anything that does not decode.
  std::string serialize() const;
  static Result<Twin> parse(std::string_view text);

  friend bool operator==(const Twin&, const Twin&) = default;
};

}  // namespace cairn::twin
