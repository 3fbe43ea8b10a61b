// WHERE conditions: the IoT Hub routing query language subset that edgeHub evaluates
// (docs/protocol.md §2.4). A condition is compiled once to a tree and evaluated per message
// with three-valued logic: a result of null or undefined means "no match".
//
// Property references: `name` is an application property; `$name` is an application property
// literally named "$name" if present, else `$body.path` is a JSON body query (only when
// contentType is application/json and contentEncoding utf-8/16/32), else a system property;
// `{$name}` is always a system property. All lookups are case-insensitive.
//
// Thread-safety: a compiled Condition is immutable and safe to share.
#pragma once

#include <memory>
#include <string_view>

#include "core/message.hpp"
#include "core/result.hpp"

namespace cairn::routing {

class Condition {
 public:
  virtual ~Condition() = default;
  // True only if the condition evaluates to boolean true for `m`.
  virtual bool evaluate(const Message& m) const = 0;
};

// Compiles `text`. Errors are errc::invalid_argument naming the 1-based column within `text`.
Result<std::shared_ptr<const Condition>> compile_condition(std::string_view text);

}  // namespace cairn::routing
