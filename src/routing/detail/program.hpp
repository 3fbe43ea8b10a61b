// A compiled WHERE condition: a flat tree of nodes plus its evaluator. Private to cairn::routing.
//
// Values are undefined, null, bool, number (double) or string, as in the IoT Hub query language.
// Strings are views: into the message, the compiled program, the parsed JSON body, or scratch
// storage owned by the per-evaluation EvalContext, so evaluation allocates only when it builds a
// new string (concat, lower, ...) or parses a JSON body.
//
// Thread-safety: a Program is immutable after construction; evaluate() may run concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/message.hpp"
#include "routing/condition.hpp"

namespace cairn::routing::detail {

enum class ValueType : std::uint8_t { kUndefined, kNull, kBool, kNumber, kString };

struct Value {
  ValueType type = ValueType::kUndefined;
  bool boolean = false;
  double number = 0;
  std::string_view string;

  static Value undefined() { return {}; }
  static Value null() { return {ValueType::kNull, false, 0, {}}; }
  static Value of(bool b) { return {ValueType::kBool, b, 0, {}}; }
  static Value of(double d);  // non-finite results become undefined
  static Value of(std::string_view s) { return {ValueType::kString, false, 0, s}; }
  static Value of(const char*) = delete;  // would silently pick of(bool)

  bool is_true() const { return type == ValueType::kBool && boolean; }
  bool is_false() const { return type == ValueType::kBool && !boolean; }
};

// Operators. Their precedence is the parser's business (parser.cpp, precedence()).
enum class Op : std::uint8_t {
  kNeg,
  kNot,
  kMul,
  kDiv,
  kMod,
  kAdd,
  kSub,
  kConcat,
  kLt,
  kLe,
  kGt,
  kGe,
  kEq,
  kNe,
  kAnd,       // n-ary
  kOr,        // n-ary
  kCoalesce,  // n-ary
};

enum class Fn : std::uint8_t {
  kAbs,
  kExp,
  kPower,
  kSquare,
  kCeiling,
  kFloor,
  kSign,
  kSqrt,
  kAsNumber,
  kIsBool,
  kIsDefined,
  kIsNull,
  kIsNumber,
  kIsString,
  kConcat,
  kLength,
  kLower,
  kUpper,
  kSubstring,
  kIndexOf,
  kStartsWith,
  kEndsWith,
  kContains,
  kTwinChangeIncludes,
};

struct FunctionInfo {
  std::string_view name;  // canonical lower-case spelling
  Fn fn;
  std::uint8_t min_args;
  std::uint8_t max_args;  // kVariadic = no upper bound
};
inline constexpr std::uint8_t kVariadic = 0xff;

// Case-insensitive lookup of a built-in; nullptr if there is none.
const FunctionInfo* find_function(std::string_view name);

enum class NodeKind : std::uint8_t {
  kLiteral,
  kAppProperty,     // name
  kDollarProperty,  // $name: app "$name", else $body query, else system property
  kSysProperty,     // {$name}
  kUnary,
  kBinary,
  kNary,  // AND / OR / ?? chains, flattened so long chains do not deepen the tree
  kCall,
};

// One step of a `$body.a.b[0]` path.
struct PathStep {
  std::string key;  // when !is_index
  std::uint64_t index = 0;
  bool is_index = false;
};

struct Node {
  NodeKind kind = NodeKind::kLiteral;
  Op op = Op::kNeg;
  Fn fn = Fn::kAbs;
  Value literal;         // kLiteral, except strings (their text lives in `text`)
  std::string text;      // string literal; app property name; "$name" as written
  std::string sys_name;  // system property to read (aliases resolved: cid -> correlationId)
  bool is_body = false;  // kDollarProperty: `$body.` query
  std::vector<PathStep> path;
  std::vector<std::uint32_t> args;  // child node indices
  std::uint32_t depth = 1;          // height of the subtree, capped by the parser
};

// The Condition that compile_condition() and Route::parse() hand out.
class Program final : public Condition {
 public:
  Program(std::vector<Node> nodes, std::uint32_t root) : nodes_(std::move(nodes)), root_(root) {}

  // True only if the condition evaluates to boolean true.
  bool evaluate(const Message& m) const override;

  // The result rendered as text: "undefined", "null", "true", "false", a number as printed by
  // %.17g, or a string in single quotes. For tests.
  std::string evaluate_for_test(const Message& m) const;

  const std::vector<Node>& nodes() const { return nodes_; }

 private:
  std::vector<Node> nodes_;
  std::uint32_t root_;
};

}  // namespace cairn::routing::detail
