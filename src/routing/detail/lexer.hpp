// Tokenizer for WHERE conditions (and the sink string of INTO). Private to cairn::routing.
//
// Token rules follow the edgeHub lexer where it matters for real deployments: keywords are
// case-insensitive; identifiers may contain '.' and '-' (so `$dt-subject` and `a-b` are single
// names, write `a - b` for subtraction); `$`-names may also contain '[' and ']' for body paths;
// `/* ... */` comments are skipped. edgeHub's lexer accepts even more punctuation inside names
// (`a+b` is one name there); we do not, because such names are almost always a typo for an
// operator and an error is more helpful than a silent undefined.
//
// Thread-safety: a Lexer is a cursor over a caller-owned string; the text must outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace cairn::routing::detail {

// A problem at a byte offset of the text being parsed; turned into "column N: ..." by callers.
struct SyntaxError {
  std::size_t pos = 0;
  std::string message;
};

enum class Tok : std::uint8_t {
  kEnd,
  kError,
  kNumber,
  kString,
  kIdent,
  kSysProp,  // `$name`, text includes the '$'
  kLParen,
  kRParen,
  kLBrace,
  kRBrace,
  kComma,
  kPlus,
  kMinus,
  kStar,
  kSlash,
  kPercent,
  kConcat,    // ||
  kCoalesce,  // ??
  kEq,
  kNe,  // != or <>
  kLt,
  kLe,
  kGt,
  kGe,
  kAnd,
  kOr,
  kNot,
  kTrue,
  kFalse,
  kNull,
  kUndefined,
  kSelect,
  kFrom,
  kWhere,
  kInto,
};

struct Token {
  Tok kind = Tok::kEnd;
  std::size_t pos = 0;     // byte offset of the first character in the full text
  std::string_view text;   // spelling as written (quotes included for strings)
  double number = 0;       // kNumber only
  std::string_view error;  // kError only: a static description
};

class Lexer {
 public:
  // Starts reading `text` at byte offset `pos`.
  Lexer(std::string_view text, std::size_t pos) : text_(text), pos_(pos) {}

  // Returns the next token; kEnd at the end of the text (repeatedly), kError on a bad character,
  // unterminated string or comment, or malformed number.
  Token next();

 private:
  Token lex_number(std::size_t start);
  Token make(Tok kind, std::size_t start);
  Token fail(std::size_t start, std::string_view why);

  std::string_view text_;
  std::size_t pos_;
};

bool is_ident_start(char c);
bool is_ident_char(char c);

// Decodes a quoted literal as returned in Token::text: '..' or ".." with backslash escapes
// \" \' \\ \/ \b \f \n \r \t and \uXXXX (surrogate pairs combined, output UTF-8). `pos` is the
// offset of the opening quote, used for error positions.
std::variant<std::string, SyntaxError> decode_string(std::string_view quoted, std::size_t pos);

// "'text'" for error messages: truncated and with control characters replaced, so a hostile
// route cannot flood or corrupt a log line.
std::string quote_for_error(std::string_view text, std::size_t max_len = 64);
// How much of a route an error message repeats.
inline constexpr std::size_t kMaxEchoedText = 512;

// The same without quotes.
std::string sanitize_for_error(std::string_view text, std::size_t max_len);

}  // namespace cairn::routing::detail
