#include "infer/json_envelope.hpp"

#include <charconv>
#include <cstdint>

namespace cairn::infer {

namespace {

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool digit(char c) { return c >= '0' && c <= '9'; }

constexpr std::string_view kByteOrderMark = "\xEF\xBB\xBF";

// The strict checker: one pass, no recursion (a stack of open brackets, at most max_depth).
// Its verdicts follow nlohmann's lexer and parser (input/lexer.hpp, input/parser.hpp of 3.11).
class JsonChecker {
 public:
  JsonChecker(std::string_view text, std::size_t max_depth) : text_(text), max_depth_(max_depth) {}

  std::optional<JsonSyntaxError> run() {
    if (text_.starts_with(kByteOrderMark)) pos_ = kByteOrderMark.size();
    if (check()) return std::nullopt;
    return std::move(error_);
  }

 private:
  bool fail(std::string reason) { return fail_at(pos_, std::move(reason)); }
  bool fail_at(std::size_t offset, std::string reason) {
    error_ = JsonSyntaxError{offset, std::move(reason)};
    return false;
  }
  // "found 'x'" / "found byte 0x80" / "found the end of the text", for messages.
  std::string found() const {
    if (pos_ >= text_.size()) return "found the end of the text";
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x20 && c < 0x7f) return std::string("found '") + static_cast<char>(c) + "'";
    static constexpr char kHex[] = "0123456789abcdef";
    return std::string("found byte 0x") + kHex[c >> 4] + kHex[c & 15];
  }

  void space() {
    while (pos_ < text_.size() && json_space(text_[pos_])) ++pos_;
  }

  bool check() {
    space();
    for (;;) {
      // A value starts at pos_.
      if (pos_ >= text_.size()) return fail("expected a value, found the end of the text");
      const char c = text_[pos_];
      if (c == '[' || c == '{') {
        if (open_.size() >= max_depth_) {
          return fail("nested deeper than " + std::to_string(max_depth_) + " levels");
        }
        open_.push_back(c);
        ++pos_;
        space();
        const char close = c == '[' ? ']' : '}';
        if (pos_ < text_.size() && text_[pos_] == close) {
          ++pos_;
          open_.pop_back();
        } else if (c == '{') {
          if (!member_name()) return false;
          continue;
        } else {
          continue;  // the array's first value
        }
      } else if (!scalar()) {
        return false;
      }
      // After a value: closing brackets, then ',' and the next value (or the end).
      for (;;) {
        space();
        if (open_.empty()) {
          return pos_ == text_.size() ||
                 fail("expected the end of the text after the value, " + found());
        }
        const bool array = open_.back() == '[';
        if (pos_ < text_.size() && text_[pos_] == (array ? ']' : '}')) {
          ++pos_;
          open_.pop_back();
          continue;
        }
        if (pos_ >= text_.size() || text_[pos_] != ',') {
          return fail(std::string(array ? "expected ',' or ']', " : "expected ',' or '}', ") +
                      found());
        }
        ++pos_;
        space();
        if (!array && !member_name()) return false;
        break;
      }
    }
  }

  // A member name and its ':', up to the value.
  bool member_name() {
    if (pos_ >= text_.size() || text_[pos_] != '"') {
      return fail("expected a member name in double quotes, " + found());
    }
    if (!string()) return false;
    space();
    if (pos_ >= text_.size() || text_[pos_] != ':') {
      return fail("expected ':' after a member name, " + found());
    }
    ++pos_;
    space();
    return true;
  }

  bool scalar() {
    const char c = text_[pos_];
    if (c == '"') return string();
    if (c == '-' || digit(c)) return number();
    for (std::string_view word : {"true", "false", "null"}) {
      if (c == word.front()) {
        if (text_.substr(pos_, word.size()) != word) {
          return fail("invalid literal (expected " + std::string(word) + ")");
        }
        pos_ += word.size();
        return true;
      }
    }
    return fail("expected a value, " + found());
  }

  bool in_range(std::size_t at, unsigned lo, unsigned hi) const {
    if (at >= text_.size()) return false;
    const auto b = static_cast<unsigned char>(text_[at]);
    return b >= lo && b <= hi;
  }

  bool hex4(std::size_t at, unsigned& out) const {
    out = 0;
    for (std::size_t i = 0; i < 4; ++i) {
      if (at + i >= text_.size()) return false;
      const char h = text_[at + i];
      unsigned v;
      if (h >= '0' && h <= '9') {
        v = static_cast<unsigned>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v = static_cast<unsigned>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v = static_cast<unsigned>(h - 'A' + 10);
      } else {
        return false;
      }
      out = out * 16 + v;
    }
    return true;
  }

  bool string() {
    const std::size_t start = pos_++;
    for (;;) {
      if (pos_ >= text_.size()) return fail_at(start, "string not terminated");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c == '\\') {
        if (!escape()) return false;
        continue;
      }
      if (c < 0x20) return fail("control character in a string (it must be escaped)");
      if (c < 0x80) {
        ++pos_;
        continue;
      }
      // UTF-8 as RFC 3629 allows it: no overlong forms, no surrogates, nothing above U+10FFFF.
      std::size_t len = 0;
      if (c >= 0xC2 && c <= 0xDF) {
        len = in_range(pos_ + 1, 0x80, 0xBF) ? 2 : 0;
      } else if (c >= 0xE0 && c <= 0xEF) {
        const unsigned lo = c == 0xE0 ? 0xA0 : 0x80;
        const unsigned hi = c == 0xED ? 0x9F : 0xBF;
        len = in_range(pos_ + 1, lo, hi) && in_range(pos_ + 2, 0x80, 0xBF) ? 3 : 0;
      } else if (c >= 0xF0 && c <= 0xF4) {
        const unsigned lo = c == 0xF0 ? 0x90 : 0x80;
        const unsigned hi = c == 0xF4 ? 0x8F : 0xBF;
        len = in_range(pos_ + 1, lo, hi) && in_range(pos_ + 2, 0x80, 0xBF) &&
                      in_range(pos_ + 3, 0x80, 0xBF)
                  ? 4
                  : 0;
      }
      if (len == 0) return fail("invalid UTF-8 in a string");
      pos_ += len;
    }
  }

  bool escape() {
    const std::size_t at = pos_;
    if (pos_ + 1 >= text_.size()) return fail_at(at, "string not terminated");
    switch (text_[pos_ + 1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        pos_ += 2;
        return true;
      case 'u':
        break;
      default:
        return fail_at(at, "invalid escape in a string");
    }
    unsigned unit = 0;
    if (!hex4(pos_ + 2, unit)) return fail_at(at, "\\u must be followed by four hex digits");
    pos_ += 6;
    if (unit >= 0xDC00 && unit <= 0xDFFF) {
      return fail_at(at, "\\u escape of a low surrogate without a high one before it");
    }
    if (unit >= 0xD800 && unit <= 0xDBFF) {
      unsigned low = 0;
      if (pos_ + 1 >= text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u' ||
          !hex4(pos_ + 2, low) || low < 0xDC00 || low > 0xDFFF) {
        return fail_at(at, "\\u escape of a high surrogate without a low one after it");
      }
      pos_ += 6;
    }
    return true;
  }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, whose value must not overflow a double:
  // nlohmann reads such a number as infinity and refuses it.
  bool number() {
    const std::size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    if (pos_ >= text_.size() || !digit(text_[pos_])) return fail("expected a digit after '-'");
    const std::size_t int_start = pos_;
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < text_.size() && digit(text_[pos_])) ++pos_;
    }
    const std::size_t int_end = pos_;
    std::size_t frac_start = pos_;
    std::size_t frac_end = pos_;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      frac_start = ++pos_;
      if (pos_ >= text_.size() || !digit(text_[pos_])) {
        return fail("expected a digit after '.', " + found());
      }
      while (pos_ < text_.size() && digit(text_[pos_])) ++pos_;
      frac_end = pos_;
    }
    std::int64_t exponent = 0;
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      bool negative = false;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) {
        negative = text_[pos_++] == '-';
      }
      if (pos_ >= text_.size() || !digit(text_[pos_])) {
        return fail("expected a digit in the exponent, " + found());
      }
      for (; pos_ < text_.size() && digit(text_[pos_]); ++pos_) {
        if (exponent < 1'000'000'000) exponent = exponent * 10 + (text_[pos_] - '0');
      }
      if (negative) exponent = -exponent;
    }
    // The decimal exponent of the leading significant digit: below 308 the value is below
    // 1e308 < DBL_MAX; above it the value overflows; at 308 from_chars decides.
    std::int64_t lead = 0;
    if (text_[int_start] != '0') {
      lead = static_cast<std::int64_t>(int_end - int_start) - 1 + exponent;
    } else {
      std::size_t i = frac_start;
      while (i < frac_end && text_[i] == '0') ++i;
      if (i == frac_end) return true;  // zero
      lead = -static_cast<std::int64_t>(i - frac_start) - 1 + exponent;
    }
    if (lead < 308) return true;
    double value = 0;
    const auto r = std::from_chars(text_.data() + start, text_.data() + pos_, value);
    if (lead > 308 || r.ec == std::errc::result_out_of_range) {
      return fail_at(start, "number overflows a double");
    }
    return true;
  }

  std::string_view text_;
  std::size_t max_depth_;
  std::size_t pos_ = 0;
  std::string open_;  // '[' or '{' for each open array and object
  JsonSyntaxError error_;
};

}  // namespace

std::optional<JsonSyntaxError> find_json_syntax_error(std::string_view text,
                                                      std::size_t max_depth) {
  return JsonChecker(text, max_depth).run();
}

Error json_syntax_error(std::string_view text, const JsonSyntaxError& error) {
  if (error.reason.starts_with("nested deeper than")) {
    return make_error(errc::invalid_argument, "JSON " + error.reason);
  }
  std::size_t line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < error.offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return make_error(errc::invalid_argument,
                    "the body is not valid JSON: " + error.reason + " at byte " +
                        std::to_string(error.offset) + " (line " + std::to_string(line) +
                        ", column " + std::to_string(error.offset - line_start + 1) + ")");
}

bool keep_v2_tensor_data(std::size_t depth, std::string_view key) {
  return depth == 3 && key == "data";
}
bool keep_score_tensors(std::size_t depth, std::string_view) { return depth == 1; }

// Recursive descent over the envelope (nesting bounded by max_depth), as strict as nlohmann's
// parser: anything it does not read itself -- a string with escapes or non-ASCII bytes, a
// number that is not a plain integer -- it hands to nlohmann token by token. Kept arrays are
// only scanned for their end here (see skip()).
class EnvelopeParser {
 public:
  EnvelopeParser(JsonEnvelope& out, KeepAsText keep) : out_(out), text_(out.text_), keep_(keep) {}

  bool parse() {
    if (text_.starts_with(kByteOrderMark)) pos_ = kByteOrderMark.size();  // as nlohmann
    return value(out_.doc_, 0, "") && (space(), pos_ == text_.size());
  }

 private:
  void space() {
    while (pos_ < text_.size() && json_space(text_[pos_])) ++pos_;
  }

  bool value(nlohmann::json& out, std::size_t depth, std::string_view key) {
    space();
    if (pos_ >= text_.size()) return false;
    const char c = text_[pos_];
    if ((c == '{' || c == '[') && ++open_ > out_.max_depth_) return false;
    if (c == '{') return object(out, depth);
    if (c == '[') {
      if (keep_(depth, key)) {
        const std::size_t start = pos_;
        if (!skip()) return false;
        out = nlohmann::json::binary({}, out_.kept_.size());
        out_.kept_.push_back({start, pos_ - start, open_ - 1, false});
        --open_;
        return true;
      }
      return array(out, depth);
    }
    if (c == '"') {
      std::string s;
      if (!string(&s)) return false;
      out = std::move(s);
      return true;
    }
    const std::size_t start = pos_;
    if (!scalar()) return false;
    return token(text_.substr(start, pos_ - start), out);
  }

  bool object(nlohmann::json& out, std::size_t depth) {
    out = nlohmann::json::object();
    ++pos_;
    space();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      --open_;
      return true;
    }
    for (;;) {
      space();
      std::string key;
      if (pos_ >= text_.size() || text_[pos_] != '"' || !string(&key)) return false;
      space();
      if (pos_ >= text_.size() || text_[pos_] != ':') return false;
      ++pos_;
      nlohmann::json member;
      if (!value(member, depth + 1, key)) return false;
      out[key] = std::move(member);  // a repeated name keeps the last value, as nlohmann does
      space();
      if (pos_ >= text_.size()) return false;
      if (text_[pos_] == '}') {
        ++pos_;
        --open_;
        return true;
      }
      if (text_[pos_] != ',') return false;
      ++pos_;
    }
  }

  bool array(nlohmann::json& out, std::size_t depth) {
    out = nlohmann::json::array();
    ++pos_;
    space();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      --open_;
      return true;
    }
    for (;;) {
      nlohmann::json element;
      if (!value(element, depth + 1, "")) return false;
      out.push_back(std::move(element));
      space();
      if (pos_ >= text_.size()) return false;
      if (text_[pos_] == ']') {
        ++pos_;
        --open_;
        return true;
      }
      if (text_[pos_] != ',') return false;
      ++pos_;
    }
  }

  // A string token; its value into `out` unless null. Plain ASCII is taken as is; escapes,
  // control characters and UTF-8 are nlohmann's to check and decode.
  bool string(std::string* out) {
    const std::size_t start = pos_++;
    bool plain = true;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '\\') {
        plain = false;
        ++pos_;  // the escaped character cannot end the string
      } else if (c < 0x20 || c >= 0x80) {
        plain = false;
      }
      ++pos_;
    }
    if (pos_ >= text_.size()) return false;
    ++pos_;
    const auto token_text = text_.substr(start, pos_ - start);
    if (plain) {
      if (out) out->assign(token_text.substr(1, token_text.size() - 2));
      return true;
    }
    auto j = nlohmann::json::parse(token_text, nullptr, false);
    if (!j.is_string()) return false;
    if (out) *out = j.get<std::string>();
    return true;
  }

  static bool delimiter(char c) {
    switch (c) {
      case ',':
      case ']':
      case '}':
      case ' ':
      case '\t':
      case '\n':
      case '\r':
        return true;
      default:
        return false;
    }
  }

  // A number or literal token, up to the next delimiter; its syntax is checked by token().
  bool scalar() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && !delimiter(text_[pos_])) ++pos_;
    return pos_ > start;
  }

  static bool token(std::string_view t, nlohmann::json& out) {
    if (t == "true" || t == "false") {
      out = t == "true";
      return true;
    }
    if (t == "null") {
      out = nullptr;
      return true;
    }
    // Plain integers (shapes, sizes) here; anything else as nlohmann reads it.
    const bool negative = t.front() == '-';
    const auto digits = t.substr(negative ? 1 : 0);
    if (!digits.empty() && digits.size() <= 18 &&
        digits.find_first_not_of("0123456789") == std::string_view::npos &&
        (digits.size() == 1 || digits.front() != '0')) {
      std::int64_t v = 0;
      std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (negative) {
        out = -v;
      } else {
        out = static_cast<std::uint64_t>(v);
      }
      return true;
    }
    // nlohmann reads the token as a whole input: it would skip a byte order mark before it
    // and stop at a NUL byte ("\xEF\xBB\xBF1" and "1\0x" would both be 1).
    if (!(negative || digit(t.front())) || t.find('\0') != std::string_view::npos) return false;
    out = nlohmann::json::parse(t, nullptr, false);
    return !out.is_discarded() && out.is_number();
  }

  // Finds the end of an array kept as text: its matching ']', strings and nesting (bounded by
  // max_depth) respected. Only the end: in valid JSON that is the right one, and the array's
  // contents are checked by whoever reads them (the tensor reader, which takes nothing but
  // valid JSON) or, when nobody does, by check_unread(). Checking them here as well would cost
  // a second pass over every tensor.
  bool skip() {
    std::size_t open = 0;
    while (pos_ < text_.size()) {
      const char c = text_[pos_++];
      if (c == '"') {
        while (pos_ < text_.size() && text_[pos_] != '"') pos_ += text_[pos_] == '\\' ? 2 : 1;
        if (pos_++ >= text_.size()) return false;
      } else if (c == '[' || c == '{') {
        // The outer '[' was counted by value().
        if (open++ && ++open_ > out_.max_depth_) return false;
      } else if (c == ']' || c == '}') {
        if (--open == 0) return true;
        --open_;
      }
    }
    return false;
  }

  JsonEnvelope& out_;
  std::string_view text_;
  KeepAsText keep_;
  std::size_t pos_ = 0;
  std::size_t open_ = 0;  // arrays and objects open at pos_
};

Result<JsonEnvelope> JsonEnvelope::parse(std::string_view text, std::size_t max_depth,
                                         KeepAsText keep) {
  JsonEnvelope e;
  e.text_ = text;
  e.max_depth_ = max_depth;
  if (EnvelopeParser(e, keep).parse()) return e;
  // Refused: the strict checker says where (it reads the body the same way).
  if (auto error = find_json_syntax_error(text, max_depth)) return json_syntax_error(text, *error);
  return make_error(errc::invalid_argument, "the body is not valid JSON");
}

std::optional<std::string_view> JsonEnvelope::kept_text(const nlohmann::json& value) const {
  if (!value.is_binary() || value.get_binary().subtype() >= kept_.size()) return std::nullopt;
  const auto& k = kept_[value.get_binary().subtype()];
  return text_.substr(k.offset, k.size);
}

void JsonEnvelope::mark_read(const nlohmann::json& value) {
  if (value.is_binary() && value.get_binary().subtype() < kept_.size()) {
    kept_[value.get_binary().subtype()].read = true;
  }
}

Status JsonEnvelope::check_unread() const {
  for (const auto& k : kept_) {
    if (k.read) continue;
    auto error = find_json_syntax_error(text_.substr(k.offset, k.size), max_depth_ - k.outer_depth);
    if (error) {
      error->offset += k.offset;
      if (error->reason.starts_with("nested deeper than")) {
        error->reason = "nested deeper than " + std::to_string(max_depth_) + " levels";
      }
      return json_syntax_error(text_, *error);
    }
  }
  return {};
}

}  // namespace cairn::infer
