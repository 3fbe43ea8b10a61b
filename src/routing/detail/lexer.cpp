#include "routing/detail/lexer.hpp"

#include <charconv>
#include <cmath>
#include <system_error>

#include "core/message.hpp"

namespace cairn::routing::detail {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex_digit(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Characters allowed after '$' besides identifier characters: body paths index arrays.
bool is_sys_char(char c) { return is_ident_char(c) || c == '[' || c == ']'; }

struct Keyword {
  std::string_view word;
  Tok kind;
};
constexpr Keyword kKeywords[] = {
    {"and", Tok::kAnd},
    {"or", Tok::kOr},
    {"not", Tok::kNot},
    {"true", Tok::kTrue},
    {"false", Tok::kFalse},
    {"null", Tok::kNull},
    {"undefined", Tok::kUndefined},
    {"select", Tok::kSelect},
    {"from", Tok::kFrom},
    {"where", Tok::kWhere},
    {"into", Tok::kInto},
};

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Reads 4 hex digits at `s[i]`; false if they are not there.
bool read_hex4(std::string_view s, std::size_t i, std::uint32_t& out) {
  if (i + 4 > s.size()) return false;
  out = 0;
  for (std::size_t k = i; k < i + 4; ++k) {
    char c = s[k];
    std::uint32_t d = 0;
    if (is_digit(c)) {
      d = static_cast<std::uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<std::uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<std::uint32_t>(c - 'A' + 10);
    } else {
      return false;
    }
    out = out * 16 + d;
  }
  return true;
}

}  // namespace

bool is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;  // UTF-8 names
}

bool is_ident_char(char c) { return is_ident_start(c) || is_digit(c) || c == '.' || c == '-'; }

Token Lexer::make(Tok kind, std::size_t start) {
  Token t;
  t.kind = kind;
  t.pos = start;
  t.text = text_.substr(start, pos_ - start);
  return t;
}

Token Lexer::fail(std::size_t start, std::string_view why) {
  Token t;
  t.kind = Tok::kError;
  t.pos = start;
  t.text = text_.substr(start, pos_ > start ? pos_ - start : 1);
  t.error = why;
  // Park at the end so a caller that keeps reading cannot loop on the same error.
  pos_ = text_.size();
  return t;
}

Token Lexer::next() {
  // Skip whitespace and comments.
  for (;;) {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
    if (pos_ + 1 < text_.size() && text_[pos_] == '/' && text_[pos_ + 1] == '*') {
      std::size_t start = pos_;
      auto close = text_.find("*/", pos_ + 2);
      if (close == std::string_view::npos) {
        pos_ = text_.size();
        return fail(start, "unterminated comment");
      }
      pos_ = close + 2;
      continue;
    }
    break;
  }
  const std::size_t start = pos_;
  if (pos_ >= text_.size()) return make(Tok::kEnd, start);

  const char c = text_[pos_];
  const char n = pos_ + 1 < text_.size() ? text_[pos_ + 1] : '\0';

  if (is_digit(c) || (c == '.' && is_digit(n))) return lex_number(start);

  if (is_ident_start(c)) {
    while (pos_ < text_.size() && is_ident_char(text_[pos_])) ++pos_;
    Token t = make(Tok::kIdent, start);
    for (const auto& k : kKeywords) {
      if (iequals(t.text, k.word)) {
        t.kind = k.kind;
        break;
      }
    }
    return t;
  }

  if (c == '$') {
    ++pos_;
    while (pos_ < text_.size() && is_sys_char(text_[pos_])) ++pos_;
    if (pos_ == start + 1) return fail(start, "expected a property name after '$'");
    return make(Tok::kSysProp, start);
  }

  if (c == '\'' || c == '"') {
    ++pos_;
    while (pos_ < text_.size() && text_[pos_] != c) {
      if (text_[pos_] == '\\') ++pos_;  // skip the escaped character, whatever it is
      ++pos_;
    }
    if (pos_ >= text_.size()) {
      pos_ = text_.size();
      return fail(start, "unterminated string");
    }
    ++pos_;  // closing quote
    return make(Tok::kString, start);
  }

  auto op = [&](Tok kind, std::size_t len) {
    pos_ += len;
    return make(kind, start);
  };
  switch (c) {
    case '(':
      return op(Tok::kLParen, 1);
    case ')':
      return op(Tok::kRParen, 1);
    case '{':
      return op(Tok::kLBrace, 1);
    case '}':
      return op(Tok::kRBrace, 1);
    case ',':
      return op(Tok::kComma, 1);
    case '+':
      return op(Tok::kPlus, 1);
    case '-':
      return op(Tok::kMinus, 1);
    case '*':
      return op(Tok::kStar, 1);
    case '/':
      return op(Tok::kSlash, 1);
    case '%':
      return op(Tok::kPercent, 1);
    case '=':
      return op(Tok::kEq, 1);
    case '<':
      if (n == '=') return op(Tok::kLe, 2);
      if (n == '>') return op(Tok::kNe, 2);
      return op(Tok::kLt, 1);
    case '>':
      if (n == '=') return op(Tok::kGe, 2);
      return op(Tok::kGt, 1);
    case '!':
      if (n == '=') return op(Tok::kNe, 2);
      break;
    case '|':
      if (n == '|') return op(Tok::kConcat, 2);
      break;
    case '?':
      if (n == '?') return op(Tok::kCoalesce, 2);
      break;
    default:
      break;
  }
  ++pos_;
  return fail(start, "unexpected character");
}

Token Lexer::lex_number(std::size_t start) {
  auto digits = [&] {
    std::size_t from = pos_;
    while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    return pos_ - from;
  };
  auto at = [&](std::size_t i) { return i < text_.size() ? text_[i] : '\0'; };

  double value = 0;
  if (at(pos_) == '0' && (at(pos_ + 1) == 'x' || at(pos_ + 1) == 'X')) {
    pos_ += 2;
    std::size_t from = pos_;
    while (pos_ < text_.size() && is_hex_digit(text_[pos_])) ++pos_;
    if (pos_ == from) return fail(start, "invalid hex number");
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(text_.data() + from, text_.data() + pos_, v, 16);
    (void)p;
    if (ec != std::errc()) return fail(start, "number out of range");
    value = static_cast<double>(v);
  } else {
    digits();
    if (at(pos_) == '.') {
      ++pos_;
      if (digits() == 0) return fail(start, "invalid number");
    }
    if (at(pos_) == 'e' || at(pos_) == 'E') {
      ++pos_;
      if (at(pos_) == '+' || at(pos_) == '-') ++pos_;
      if (digits() == 0) return fail(start, "invalid number");
    }
    auto [p, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, value);
    if (ec != std::errc() || p != text_.data() + pos_ || !std::isfinite(value)) {
      return fail(start, "number out of range");
    }
  }
  // "12abc" or "1.2.3" is a typo, not a number followed by a name.
  char after = at(pos_);
  if (is_ident_start(after) || is_digit(after) || after == '.') {
    while (pos_ < text_.size() && is_ident_char(text_[pos_])) ++pos_;
    return fail(start, "invalid number");
  }
  Token t = make(Tok::kNumber, start);
  t.number = value;
  return t;
}

std::variant<std::string, SyntaxError> decode_string(std::string_view quoted, std::size_t pos) {
  std::string out;
  if (quoted.size() < 2) return SyntaxError{pos, "unterminated string"};
  std::string_view body = quoted.substr(1, quoted.size() - 2);
  out.reserve(body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    const std::size_t esc_pos = pos + 1 + i;
    if (i + 1 >= body.size()) return SyntaxError{esc_pos, "invalid escape in string"};
    char e = body[++i];
    switch (e) {
      case '"':
        out.push_back('"');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '/':
        out.push_back('/');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        std::uint32_t cp = 0;
        if (!read_hex4(body, i + 1, cp))
          return SyntaxError{esc_pos, "invalid \\u escape in string"};
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          std::uint32_t lo = 0;
          if (i + 2 < body.size() && body[i + 1] == '\\' && body[i + 2] == 'u' &&
              read_hex4(body, i + 3, lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
          } else {
            return SyntaxError{esc_pos, "unpaired surrogate in string"};
          }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return SyntaxError{esc_pos, "unpaired surrogate in string"};
        }
        append_utf8(out, cp);
        break;
      }
      default:
        return SyntaxError{esc_pos, "invalid escape in string"};
    }
  }
  return out;
}

std::string sanitize_for_error(std::string_view text, std::size_t max_len) {
  std::string out;
  const std::size_t n = text.size() < max_len ? text.size() : max_len;
  out.reserve(n + 3);
  for (std::size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    out.push_back(c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c));
  }
  if (n < text.size()) out += "...";
  return out;
}

std::string quote_for_error(std::string_view text, std::size_t max_len) {
  // Appending in place (rather than "'" + s + "'") also avoids a GCC 12 -O3 -Wrestrict false
  // positive on operator+.
  std::string out = "'";
  out += sanitize_for_error(text, max_len);
  out += '\'';
  return out;
}

}  // namespace cairn::routing::detail
