#include "routing/detail/parser.hpp"

#include <charconv>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/message.hpp"

namespace cairn::routing::detail {
namespace {

constexpr std::uint32_t kFail = std::numeric_limits<std::uint32_t>::max();

// Binary operators' binding strength (docs/protocol.md §2.4): higher binds tighter; 0 = not binary.
int precedence(Tok t) {
  switch (t) {
    case Tok::kCoalesce:
      return 1;
    case Tok::kOr:
      return 2;
    case Tok::kAnd:
      return 3;
    case Tok::kEq:
    case Tok::kNe:
      return 4;
    case Tok::kLt:
    case Tok::kLe:
    case Tok::kGt:
    case Tok::kGe:
      return 5;
    case Tok::kPlus:
    case Tok::kMinus:
    case Tok::kConcat:
      return 6;
    case Tok::kStar:
    case Tok::kSlash:
    case Tok::kPercent:
      return 7;
    default:
      return 0;
  }
}

Op binary_op(Tok t) {
  switch (t) {
    case Tok::kCoalesce:
      return Op::kCoalesce;
    case Tok::kOr:
      return Op::kOr;
    case Tok::kAnd:
      return Op::kAnd;
    case Tok::kEq:
      return Op::kEq;
    case Tok::kNe:
      return Op::kNe;
    case Tok::kLt:
      return Op::kLt;
    case Tok::kLe:
      return Op::kLe;
    case Tok::kGt:
      return Op::kGt;
    case Tok::kGe:
      return Op::kGe;
    case Tok::kPlus:
      return Op::kAdd;
    case Tok::kMinus:
      return Op::kSub;
    case Tok::kConcat:
      return Op::kConcat;
    case Tok::kStar:
      return Op::kMul;
    case Tok::kSlash:
      return Op::kDiv;
    case Tok::kPercent:
    default:  // unreachable: callers check precedence() first
      return Op::kMod;
  }
}

bool is_nary(Op op) { return op == Op::kAnd || op == Op::kOr || op == Op::kCoalesce; }

// Query-language names of system properties that differ from cairn's internal names.
std::string_view system_property_name(std::string_view name) {
  // `$cid` is the name edgeHub gives the correlation id received as MQTT `$.cid`.
  if (iequals(name, "cid")) return sysprop::kCorrelationId;
  return name;
}

// Splits "a.b[0][1].c" (the part after "$body.") into steps. Keys are non-empty and may not
// contain '[' or ']'; indices are decimal.
bool parse_body_path(std::string_view path, std::vector<PathStep>& steps) {
  std::size_t i = 0;
  for (;;) {
    std::size_t start = i;
    while (i < path.size() && path[i] != '.' && path[i] != '[' && path[i] != ']') ++i;
    if (i == start) return false;
    steps.push_back(PathStep{std::string(path.substr(start, i - start)), 0, false});
    while (i < path.size() && path[i] == '[') {
      std::size_t close = path.find(']', i);
      if (close == std::string_view::npos || close == i + 1) return false;
      std::uint64_t index = 0;
      auto [p, ec] = std::from_chars(path.data() + i + 1, path.data() + close, index);
      if (ec != std::errc() || p != path.data() + close) return false;
      steps.push_back(PathStep{{}, index, true});
      i = close + 1;
    }
    if (i == path.size()) return true;
    if (path[i] != '.') return false;
    ++i;
  }
}

class Parser {
 public:
  Parser(std::string_view text, std::size_t pos) : lexer_(text, pos) { advance(); }

  std::variant<ParsedCondition, SyntaxError> run(ConditionEnd end) {
    std::uint32_t root = parse_binary(1);
    if (root == kFail) return std::move(error_);
    if (cur_.kind == Tok::kError) return lexer_error();
    if (end == ConditionEnd::kInto) {
      if (cur_.kind != Tok::kInto) {
        return SyntaxError{cur_.pos, "expected INTO, found " + describe_token(cur_)};
      }
    } else if (cur_.kind != Tok::kEnd) {
      return SyntaxError{cur_.pos,
                         "expected an operator or end of condition, found " + describe_token(cur_)};
    }
    ParsedCondition out;
    out.end = cur_.pos;
    out.program = std::make_shared<const Program>(std::move(nodes_), root);
    return out;
  }

 private:
  void advance() { cur_ = lexer_.next(); }

  std::uint32_t fail(std::size_t pos, std::string message) {
    if (!failed_) {
      failed_ = true;
      error_ = SyntaxError{pos, std::move(message)};
    }
    return kFail;
  }

  SyntaxError lexer_error() const {
    return SyntaxError{cur_.pos, std::string(cur_.error) + " " + quote_for_error(cur_.text)};
  }

  std::uint32_t fail_here(std::string_view expected) {
    if (cur_.kind == Tok::kError) {
      auto e = lexer_error();
      return fail(e.pos, std::move(e.message));
    }
    return fail(cur_.pos, "expected " + std::string(expected) + ", found " + describe_token(cur_));
  }

  std::uint32_t add(Node n, std::size_t pos) {
    std::uint32_t depth = 0;
    for (auto a : n.args) depth = std::max(depth, nodes_[a].depth);
    n.depth = depth + 1;
    if (n.depth > kMaxDepth) return fail(pos, "expression is too deeply nested");
    nodes_.push_back(std::move(n));
    return static_cast<std::uint32_t>(nodes_.size() - 1);
  }

  // binary := unary (op binary)*, climbing by precedence; operators are left-associative.
  std::uint32_t parse_binary(int min_prec) {
    std::uint32_t lhs = parse_unary();
    if (lhs == kFail) return kFail;
    for (;;) {
      const int prec = precedence(cur_.kind);
      if (prec == 0 || prec < min_prec) return lhs;
      const Token op_tok = cur_;
      const Op op = binary_op(op_tok.kind);
      advance();
      std::uint32_t rhs = parse_binary(prec + 1);
      if (rhs == kFail) return kFail;
      if (is_nary(op) && nodes_[lhs].kind == NodeKind::kNary && nodes_[lhs].op == op) {
        // AND, OR and ?? are associative: extend the chain instead of nesting it.
        nodes_[lhs].args.push_back(rhs);
        nodes_[lhs].depth = std::max(nodes_[lhs].depth, nodes_[rhs].depth + 1);
        if (nodes_[lhs].depth > kMaxDepth)
          return fail(op_tok.pos, "expression is too deeply nested");
        continue;
      }
      Node n;
      n.kind = is_nary(op) ? NodeKind::kNary : NodeKind::kBinary;
      n.op = op;
      n.args = {lhs, rhs};
      lhs = add(std::move(n), op_tok.pos);
      if (lhs == kFail) return kFail;
    }
  }

  std::uint32_t parse_unary() {
    if (++nesting_ > kMaxNesting) return fail(cur_.pos, "expression is too deeply nested");
    std::uint32_t result = kFail;
    if (cur_.kind == Tok::kMinus || cur_.kind == Tok::kNot) {
      const Token op_tok = cur_;
      advance();
      std::uint32_t operand = parse_unary();
      if (operand != kFail) {
        Node n;
        n.kind = NodeKind::kUnary;
        n.op = op_tok.kind == Tok::kMinus ? Op::kNeg : Op::kNot;
        n.args = {operand};
        result = add(std::move(n), op_tok.pos);
      }
    } else {
      result = parse_primary();
    }
    --nesting_;
    return result;
  }

  std::uint32_t literal(Value v) {
    Node n;
    n.literal = v;
    const std::size_t pos = cur_.pos;
    advance();
    return add(std::move(n), pos);
  }

  std::uint32_t parse_primary() {
    switch (cur_.kind) {
      case Tok::kNumber:
        return literal(Value::of(cur_.number));
      case Tok::kTrue:
        return literal(Value::of(true));
      case Tok::kFalse:
        return literal(Value::of(false));
      case Tok::kNull:
        return literal(Value::null());
      case Tok::kUndefined:
        return literal(Value::undefined());
      case Tok::kString: {
        auto decoded = decode_string(cur_.text, cur_.pos);
        if (auto* e = std::get_if<SyntaxError>(&decoded)) return fail(e->pos, e->message);
        Node n;
        n.literal = Value::of(std::string_view());
        n.text = std::move(std::get<std::string>(decoded));
        const std::size_t pos = cur_.pos;
        advance();
        return add(std::move(n), pos);
      }
      case Tok::kLParen: {
        advance();
        std::uint32_t inner = parse_binary(1);
        if (inner == kFail) return kFail;
        if (cur_.kind != Tok::kRParen) return fail_here("')'");
        advance();
        return inner;
      }
      case Tok::kLBrace: {
        // {$name}: always the system property, even if an app property "$name" exists.
        const std::size_t pos = cur_.pos;
        advance();
        if (cur_.kind != Tok::kSysProp) return fail_here("a system property like $contentType");
        Node n;
        n.kind = NodeKind::kSysProperty;
        n.text = std::string(cur_.text);
        n.sys_name = std::string(system_property_name(cur_.text.substr(1)));
        advance();
        if (cur_.kind != Tok::kRBrace) return fail_here("'}'");
        advance();
        return add(std::move(n), pos);
      }
      case Tok::kSysProp:
        return dollar_property();
      case Tok::kIdent: {
        Lexer ahead = lexer_;
        if (ahead.next().kind == Tok::kLParen) return function_call();
        Node n;
        n.kind = NodeKind::kAppProperty;
        n.text = std::string(cur_.text);
        const std::size_t pos = cur_.pos;
        advance();
        return add(std::move(n), pos);
      }
      default:
        return fail_here("an expression");
    }
  }

  std::uint32_t dollar_property() {
    Node n;
    n.kind = NodeKind::kDollarProperty;
    n.text = std::string(cur_.text);
    const std::string_view name = cur_.text.substr(1);
    constexpr std::string_view kBody = "body.";
    if (name.size() >= kBody.size() && iequals(name.substr(0, kBody.size()), kBody)) {
      n.is_body = true;
      if (!parse_body_path(name.substr(kBody.size()), n.path)) {
        return fail(cur_.pos, "invalid $body path " + quote_for_error(cur_.text) +
                                  " (expected $body.a.b[0].c)");
      }
    } else {
      n.sys_name = std::string(system_property_name(name));
    }
    const std::size_t pos = cur_.pos;
    advance();
    return add(std::move(n), pos);
  }

  std::uint32_t function_call() {
    const Token name = cur_;
    const FunctionInfo* info = find_function(name.text);
    if (info == nullptr) return fail(name.pos, "unknown function " + quote_for_error(name.text));
    advance();  // name
    advance();  // '('
    Node n;
    n.kind = NodeKind::kCall;
    n.fn = info->fn;
    if (cur_.kind != Tok::kRParen) {
      for (;;) {
        std::uint32_t a = parse_binary(1);
        if (a == kFail) return kFail;
        n.args.push_back(a);
        if (cur_.kind == Tok::kComma) {
          advance();
          continue;
        }
        if (cur_.kind != Tok::kRParen) return fail_here("',' or ')'");
        break;
      }
    }
    advance();  // ')'
    const std::size_t count = n.args.size();
    if (count < info->min_args || (info->max_args != kVariadic && count > info->max_args)) {
      std::string want = std::to_string(info->min_args);
      if (info->max_args == kVariadic) {
        want += " or more arguments";
      } else {
        if (info->max_args != info->min_args) want += " to " + std::to_string(info->max_args);
        want += info->max_args == 1 ? " argument" : " arguments";
      }
      return fail(name.pos, "function " + std::string(info->name) + " takes " + want + ", got " +
                                std::to_string(count));
    }
    return add(std::move(n), name.pos);
  }

  Lexer lexer_;
  Token cur_;
  std::vector<Node> nodes_;
  int nesting_ = 0;
  bool failed_ = false;
  SyntaxError error_;
};

}  // namespace

std::string describe_token(const Token& t) {
  if (t.kind == Tok::kEnd) return "end of input";
  return quote_for_error(t.text);
}

std::variant<ParsedCondition, SyntaxError> parse_condition(std::string_view text, std::size_t pos,
                                                           ConditionEnd end) {
  Parser p(text, pos);
  return p.run(end);
}

}  // namespace cairn::routing::detail
