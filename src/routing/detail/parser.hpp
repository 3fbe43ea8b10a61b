// Recursive-descent / precedence-climbing parser for WHERE conditions. Private to
// cairn::routing; used by compile_condition() and by Route::parse() for the text between WHERE
// and INTO (positions are byte offsets into the full route so errors point at the right column).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>
#include <variant>

#include "routing/detail/lexer.hpp"
#include "routing/detail/program.hpp"

namespace cairn::routing::detail {

// Nesting of parentheses, unary operators and function calls; deeper input is rejected so a
// hostile route cannot exhaust the stack.
inline constexpr int kMaxNesting = 64;
// Height of the expression tree (long AND/OR/?? chains are flattened and do not count).
inline constexpr std::uint32_t kMaxDepth = 256;

enum class ConditionEnd {
  kEndOfText,  // compile_condition(): the condition is the whole text
  kInto,       // Route::parse(): the condition stops at the INTO keyword
};

struct ParsedCondition {
  std::shared_ptr<const Program> program;
  std::size_t end = 0;  // offset of the INTO keyword (kInto) or the text size (kEndOfText)
};

// Parses the condition that starts at byte offset `pos` of `text`.
std::variant<ParsedCondition, SyntaxError> parse_condition(std::string_view text, std::size_t pos,
                                                           ConditionEnd end);

// "'x'" or "end of input", for "expected ..., found ..." messages.
std::string describe_token(const Token& t);

}  // namespace cairn::routing::detail
