#include "routing/detail/program.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <forward_list>
#include <string>

#include <nlohmann/json.hpp>

namespace cairn::routing::detail {
namespace {

constexpr FunctionInfo kFunctions[] = {
    {"abs", Fn::kAbs, 1, 1},
    {"exp", Fn::kExp, 1, 1},
    {"power", Fn::kPower, 2, 2},
    {"square", Fn::kSquare, 1, 1},
    {"ceiling", Fn::kCeiling, 1, 1},
    {"floor", Fn::kFloor, 1, 1},
    {"sign", Fn::kSign, 1, 1},
    {"sqrt", Fn::kSqrt, 1, 1},
    {"as_number", Fn::kAsNumber, 1, 1},
    {"is_bool", Fn::kIsBool, 1, 1},
    {"is_defined", Fn::kIsDefined, 1, 1},
    {"is_null", Fn::kIsNull, 1, 1},
    {"is_number", Fn::kIsNumber, 1, 1},
    {"is_string", Fn::kIsString, 1, 1},
    {"concat", Fn::kConcat, 2, kVariadic},
    {"length", Fn::kLength, 1, 1},
    {"lower", Fn::kLower, 1, 1},
    {"upper", Fn::kUpper, 1, 1},
    {"substring", Fn::kSubstring, 2, 3},
    {"index_of", Fn::kIndexOf, 2, 2},
    {"starts_with", Fn::kStartsWith, 2, 2},
    {"ends_with", Fn::kEndsWith, 2, 2},
    {"contains", Fn::kContains, 2, 2},
    {"twin_change_includes", Fn::kTwinChangeIncludes, 1, 1},
};

using Json = nlohmann::json;

// Bytes of new strings (concat, ||, lower, upper) one evaluation may build.
constexpr std::size_t kMaxScratchBytes = 1 << 20;

// Lengths and positions count Unicode code points of the UTF-8 text (continuation bytes are not
// counted), so "é" has length 1. Invalid UTF-8 is counted the same way and never read past the
// end, which keeps hostile property values harmless.
bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

std::size_t code_points(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return !is_continuation(c); }));
}

// Byte offset of code point number `cp` (or s.size() if there are fewer).
std::size_t byte_offset(std::string_view s, std::size_t cp) {
  std::size_t seen = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (is_continuation(s[i])) continue;
    if (seen == cp) return i;
    ++seen;
  }
  return s.size();
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool is_whole(double d) { return std::floor(d) == d; }

// Decodes a UTF-16/UTF-32 body (little-endian unless a big-endian BOM says otherwise; .NET's
// Encoding.Unicode and UTF32 are little-endian) and parses it as JSON.
template <class CharT>
Json parse_wide(std::string_view bytes) {
  constexpr std::size_t kWidth = sizeof(CharT);
  auto byte = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i]));
  };
  bool big_endian = false;
  if (bytes.size() >= kWidth) {
    std::uint32_t le = 0, be = 0;
    for (std::size_t k = 0; k < kWidth; ++k) {
      le |= byte(k) << (8 * k);
      be = (be << 8) | byte(k);
    }
    if (le == 0xFEFF) {
      bytes.remove_prefix(kWidth);
    } else if (be == 0xFEFF) {
      big_endian = true;
      bytes.remove_prefix(kWidth);
    }
  }
  if (bytes.size() % kWidth != 0) return Json(Json::value_t::discarded);
  std::basic_string<CharT> wide;
  wide.reserve(bytes.size() / kWidth);
  for (std::size_t i = 0; i < bytes.size(); i += kWidth) {
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < kWidth; ++k) {
      v |= big_endian ? byte(i + k) << (8 * (kWidth - 1 - k)) : byte(i + k) << (8 * k);
    }
    if (v > 0x10FFFF) return Json(Json::value_t::discarded);
    wide.push_back(static_cast<CharT>(v));
  }
  return Json::parse(wide, nullptr, /*allow_exceptions=*/false);
}

// The body as JSON, or a discarded value when the message does not declare a JSON body in a
// supported encoding (IoT Hub only queries bodies with contentType application/json and
// contentEncoding utf-8/16/32) or the body does not parse.
Json parse_json_body(const Message& m) {
  auto type = m.system.get(sysprop::kContentType);
  auto encoding = m.system.get(sysprop::kContentEncoding);
  if (!type || !encoding || !iequals(*type, "application/json")) {
    return Json(Json::value_t::discarded);
  }
  if (iequals(*encoding, "utf-8")) return Json::parse(m.body, nullptr, /*allow_exceptions=*/false);
  if (iequals(*encoding, "utf-16")) return parse_wide<char16_t>(m.body);
  if (iequals(*encoding, "utf-32")) return parse_wide<char32_t>(m.body);
  return Json(Json::value_t::discarded);
}

class Evaluator {
 public:
  Evaluator(const std::vector<Node>& nodes, const Message& m) : nodes_(nodes), m_(m) {}

  Value eval(std::uint32_t index) {
    const Node& n = nodes_[index];
    switch (n.kind) {
      case NodeKind::kLiteral:
        return n.literal.type == ValueType::kString ? Value::of(std::string_view(n.text))
                                                    : n.literal;
      case NodeKind::kAppProperty:
        return property(m_.app, n.text);
      case NodeKind::kDollarProperty:
        // edgeHub order: an app property literally named "$x" wins, then $body, then system.
        if (auto v = m_.app.get(n.text)) return Value::of(*v);
        if (n.is_body) return body_query(n);
        return property(m_.system, n.sys_name);
      case NodeKind::kSysProperty:
        return property(m_.system, n.sys_name);
      case NodeKind::kUnary:
        return unary(n.op, eval(n.args[0]));
      case NodeKind::kBinary:
        return binary(n.op, eval(n.args[0]), eval(n.args[1]));
      case NodeKind::kNary:
        return nary(n);
      case NodeKind::kCall:
        return call(n);
    }
    return Value::undefined();
  }

 private:
  static Value property(const Properties& props, std::string_view name) {
    auto v = props.get(name);
    return v ? Value::of(*v) : Value::undefined();
  }

  // Stores a built string for the rest of the evaluation. Returns undefined once the
  // evaluation has built more than kMaxScratchBytes: a chain of `x || x || ...` over a large
  // property would otherwise copy quadratically many bytes for every message.
  Value keep(std::string s) {
    scratch_bytes_ += s.size();
    if (scratch_bytes_ > kMaxScratchBytes) return Value::undefined();
    scratch_.push_front(std::move(s));
    return Value::of(std::string_view(scratch_.front()));
  }

  const Json& body() {
    // Parsed at most once per evaluation, and only if a $body query is actually reached.
    if (!body_loaded_) {
      body_loaded_ = true;
      body_ = parse_json_body(m_);
    }
    return body_;
  }

  Value body_query(const Node& n) {
    const Json* cur = &body();
    for (const auto& step : n.path) {
      if (step.is_index) {
        if (!cur->is_array() || step.index >= cur->size()) return Value::undefined();
        cur = &(*cur)[static_cast<std::size_t>(step.index)];
      } else {
        if (!cur->is_object()) return Value::undefined();
        auto it = cur->find(step.key);  // JSON keys are case-sensitive, unlike properties
        if (it == cur->end()) return Value::undefined();
        cur = &*it;
      }
    }
    switch (cur->type()) {
      case Json::value_t::null:
        return Value::null();
      case Json::value_t::boolean:
        return Value::of(cur->get<bool>());
      case Json::value_t::number_integer:
      case Json::value_t::number_unsigned:
      case Json::value_t::number_float:
        return Value::of(cur->get<double>());
      case Json::value_t::string:
        return Value::of(std::string_view(cur->get_ref<const std::string&>()));
      default:
        return Value::undefined();  // objects and arrays are not values in the query language
    }
  }

  static Value unary(Op op, Value v) {
    if (op == Op::kNeg) {
      return v.type == ValueType::kNumber ? Value::of(-v.number) : Value::undefined();
    }
    return v.type == ValueType::kBool ? Value::of(!v.boolean) : Value::undefined();
  }

  // Comparisons are defined only between values of the same type; anything else, including any
  // comparison with undefined, is undefined. This is the IoT Hub rule, and it matters for
  // application properties: they are always strings, so `temp > 30` with temp="35" is undefined
  // (no match) and has to be written `as_number(temp) > 30`.
  static Value compare(Op op, Value l, Value r) {
    if (l.type == ValueType::kUndefined || l.type != r.type) return Value::undefined();
    int cmp = 0;
    bool ordered = true;
    switch (l.type) {
      case ValueType::kNull:
        ordered = false;
        break;
      case ValueType::kBool:
        cmp = static_cast<int>(l.boolean) - static_cast<int>(r.boolean);
        ordered = false;
        break;
      case ValueType::kNumber:
        cmp = l.number < r.number ? -1 : (l.number > r.number ? 1 : 0);
        break;
      case ValueType::kString: {
        int c = l.string.compare(r.string);  // ordinal, like .NET string.CompareOrdinal
        cmp = c < 0 ? -1 : (c > 0 ? 1 : 0);
        break;
      }
      case ValueType::kUndefined:
        return Value::undefined();
    }
    switch (op) {
      case Op::kEq:
        return Value::of(cmp == 0);
      case Op::kNe:
        return Value::of(cmp != 0);
      default:
        break;
    }
    if (!ordered) return Value::undefined();
    switch (op) {
      case Op::kLt:
        return Value::of(cmp < 0);
      case Op::kLe:
        return Value::of(cmp <= 0);
      case Op::kGt:
        return Value::of(cmp > 0);
      case Op::kGe:
        return Value::of(cmp >= 0);
      default:
        return Value::undefined();
    }
  }

  Value binary(Op op, Value l, Value r) {
    switch (op) {
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe:
      case Op::kEq:
      case Op::kNe:
        return compare(op, l, r);
      case Op::kConcat:
        if (l.type != ValueType::kString || r.type != ValueType::kString) return Value::undefined();
        if (l.string.size() + r.string.size() > kMaxScratchBytes) return Value::undefined();
        return keep(std::string(l.string).append(r.string));
      default:
        break;
    }
    if (l.type != ValueType::kNumber || r.type != ValueType::kNumber) return Value::undefined();
    switch (op) {
      case Op::kMul:
        return Value::of(l.number * r.number);
      // Division by zero is undefined rather than infinity: there is no infinity literal, and
      // a route should not match on a value nobody can write.
      case Op::kDiv:
        return r.number == 0 ? Value::undefined() : Value::of(l.number / r.number);
      case Op::kMod:
        return r.number == 0 ? Value::undefined() : Value::of(std::fmod(l.number, r.number));
      case Op::kAdd:
        return Value::of(l.number + r.number);
      case Op::kSub:
        return Value::of(l.number - r.number);
      default:
        return Value::undefined();
    }
  }

  // Kleene logic: AND is false if any operand is false, true if all are true, else undefined;
  // OR mirrors it. Non-boolean operands count as undefined. Evaluation stops at the first
  // deciding operand, which also avoids parsing the body when an earlier test already decides.
  Value nary(const Node& n) {
    if (n.op == Op::kCoalesce) {
      for (auto a : n.args) {
        Value v = eval(a);
        if (v.type != ValueType::kUndefined) return v;  // null is defined, as in Cosmos SQL
      }
      return Value::undefined();
    }
    const bool is_and = n.op == Op::kAnd;
    bool unknown = false;
    for (auto a : n.args) {
      Value v = eval(a);
      if (is_and ? v.is_false() : v.is_true()) return Value::of(!is_and);
      if (v.type != ValueType::kBool) unknown = true;
    }
    return unknown ? Value::undefined() : Value::of(is_and);
  }

  template <class F>
  Value math1(const Node& n, F f) {
    Value v = eval(n.args[0]);
    return v.type == ValueType::kNumber ? Value::of(f(v.number)) : Value::undefined();
  }

  static Value parse_number(std::string_view s) {
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    double d = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return Value::undefined();
    return Value::of(d);
  }

  Value call(const Node& n) {
    auto arg = [&](std::size_t k) { return eval(n.args[k]); };
    switch (n.fn) {
      case Fn::kAbs:
        return math1(n, [](double x) { return std::fabs(x); });
      case Fn::kExp:
        return math1(n, [](double x) { return std::exp(x); });
      case Fn::kSquare:
        return math1(n, [](double x) { return x * x; });
      case Fn::kCeiling:
        return math1(n, [](double x) { return std::ceil(x); });
      case Fn::kFloor:
        return math1(n, [](double x) { return std::floor(x); });
      case Fn::kSign:
        return math1(n, [](double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); });
      case Fn::kSqrt:
        return math1(n, [](double x) { return std::sqrt(x); });  // NaN -> undefined
      case Fn::kPower: {
        Value b = arg(0), e = arg(1);
        if (b.type != ValueType::kNumber || e.type != ValueType::kNumber) return Value::undefined();
        return Value::of(std::pow(b.number, e.number));
      }
      case Fn::kAsNumber: {
        Value v = arg(0);
        if (v.type == ValueType::kNumber) return v;
        if (v.type == ValueType::kString) return parse_number(v.string);
        return Value::undefined();
      }
      case Fn::kIsBool:
        return Value::of(arg(0).type == ValueType::kBool);
      case Fn::kIsDefined:
        return Value::of(arg(0).type != ValueType::kUndefined);
      case Fn::kIsNull:
        return Value::of(arg(0).type == ValueType::kNull);
      case Fn::kIsNumber:
        return Value::of(arg(0).type == ValueType::kNumber);
      case Fn::kIsString:
        return Value::of(arg(0).type == ValueType::kString);
      case Fn::kConcat: {
        std::string out;
        for (auto a : n.args) {
          Value v = eval(a);
          if (v.type != ValueType::kString) return Value::undefined();
          if (out.size() + v.string.size() > kMaxScratchBytes) return Value::undefined();
          out.append(v.string);
        }
        return keep(std::move(out));
      }
      case Fn::kLength: {
        Value v = arg(0);
        if (v.type != ValueType::kString) return Value::undefined();
        return Value::of(static_cast<double>(code_points(v.string)));
      }
      case Fn::kLower:
      case Fn::kUpper: {
        // ASCII only: property names and ids are ASCII, and full Unicode case mapping would
        // need ICU for little gain.
        Value v = arg(0);
        if (v.type != ValueType::kString) return Value::undefined();
        std::string out(v.string);
        for (auto& c : out) c = n.fn == Fn::kLower ? ascii_lower(c) : ascii_upper(c);
        return keep(std::move(out));
      }
      case Fn::kSubstring: {
        // substring(s, start[, length]) with a 0-based start, both in code points. Indices
        // must be non-negative whole numbers; a range past the end is clipped.
        Value s = arg(0), start = arg(1);
        Value len = n.args.size() > 2 ? arg(2) : Value::undefined();
        if (s.type != ValueType::kString || start.type != ValueType::kNumber) {
          return Value::undefined();
        }
        if (start.number < 0 || !is_whole(start.number)) return Value::undefined();
        if (n.args.size() > 2 &&
            (len.type != ValueType::kNumber || len.number < 0 || !is_whole(len.number))) {
          return Value::undefined();
        }
        const auto total = static_cast<double>(code_points(s.string));
        if (start.number >= total) return Value::of(std::string_view());
        const auto first = static_cast<std::size_t>(start.number);
        const std::size_t begin = byte_offset(s.string, first);
        std::size_t end = s.string.size();
        if (n.args.size() > 2 && start.number + len.number < total) {
          end = byte_offset(s.string, first + static_cast<std::size_t>(len.number));
        }
        return Value::of(s.string.substr(begin, end - begin));
      }
      case Fn::kIndexOf:
      case Fn::kStartsWith:
      case Fn::kEndsWith:
      case Fn::kContains: {
        Value s = arg(0), t = arg(1);
        if (s.type != ValueType::kString || t.type != ValueType::kString) {
          return Value::undefined();
        }
        switch (n.fn) {
          case Fn::kStartsWith:
            return Value::of(s.string.starts_with(t.string));
          case Fn::kEndsWith:
            return Value::of(s.string.ends_with(t.string));
          case Fn::kContains:
            return Value::of(s.string.find(t.string) != std::string_view::npos);
          default:
            break;
        }
        auto at = s.string.find(t.string);
        if (at == std::string_view::npos) return Value::of(-1.0);
        return Value::of(static_cast<double>(code_points(s.string.substr(0, at))));
      }
      case Fn::kTwinChangeIncludes:
        // Twin change notifications are not routed yet (message_source() never yields
        // /twinChangeNotifications for a real patch), so there is no patch to inspect: the
        // result is undefined, which never matches. The argument is still parsed so routes
        // written for edgeHub are accepted.
        return Value::undefined();
    }
    return Value::undefined();
  }

  const std::vector<Node>& nodes_;
  const Message& m_;
  bool body_loaded_ = false;
  Json body_;
  // Strings built during this evaluation; forward_list keeps them at stable addresses and
  // allocates nothing until a string is actually built.
  std::forward_list<std::string> scratch_;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace

Value Value::of(double d) {
  if (!std::isfinite(d)) return Value::undefined();
  return {ValueType::kNumber, false, d, {}};
}

const FunctionInfo* find_function(std::string_view name) {
  for (const auto& f : kFunctions) {
    if (iequals(f.name, name)) return &f;
  }
  return nullptr;
}

bool Program::evaluate(const Message& m) const {
  Evaluator e(nodes_, m);
  return e.eval(root_).is_true();
}

std::string Program::evaluate_for_test(const Message& m) const {
  Evaluator e(nodes_, m);
  Value v = e.eval(root_);
  switch (v.type) {
    case ValueType::kUndefined:
      return "undefined";
    case ValueType::kNull:
      return "null";
    case ValueType::kBool:
      return v.boolean ? "true" : "false";
    case ValueType::kNumber: {
      char buf[64];
      auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v.number);
      (void)ec;
      return std::string(buf, p);
    }
    case ValueType::kString:
      return "'" + std::string(v.string) + "'";
  }
  return "?";
}

}  // namespace cairn::routing::detail
