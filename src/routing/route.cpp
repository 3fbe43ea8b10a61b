#include "routing/route.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <variant>

#include "routing/detail/lexer.hpp"
#include "routing/detail/parser.hpp"

namespace cairn::routing {
namespace {

using detail::Lexer;
using detail::Tok;
using detail::Token;

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Characters of a FROM path segment: the edgeHub ID characters minus '*', which is only
// accepted as a whole final segment.
bool is_path_char(char c) {
  if (is_space(c)) return false;
  switch (c) {
    case '/':
    case '*':
    case '(':
    case ')':
    case '<':
    case '>':
    case '@':
    case ',':
    case ';':
    case ':':
    case '\\':
    case '"':
    case '\'':
    case '[':
    case ']':
    case '?':
    case '=':
    case '{':
    case '}':
      return false;
    default:
      return true;
  }
}

// The pieces of a message's source, so Router::route can assemble it without allocating.
struct SourceParts {
  std::array<std::string_view, 4> parts{};
  std::size_t count = 0;

  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < count; ++i) n += parts[i].size();
    return n;
  }
  void copy_to(char* out) const {
    for (std::size_t i = 0; i < count; ++i) out = std::copy(parts[i].begin(), parts[i].end(), out);
  }
};

SourceParts source_parts(const Message& m) {
  SourceParts s;
  auto type = m.system.get(sysprop::kMessageType);
  if (type && iequals(*type, kTwinChangeNotificationType)) {
    s.parts[0] = "/twinChangeNotifications";
    s.count = 1;
    return s;
  }
  auto module = m.system.get(sysprop::kConnectionModuleId);
  if (!module || module->empty()) {
    s.parts[0] = "/messages";
    s.count = 1;
    return s;
  }
  s.parts[0] = "/messages/modules/";
  s.parts[1] = *module;
  s.count = 2;
  auto output = m.system.get(sysprop::kOutputName);
  if (output && !output->empty()) {
    s.parts[2] = "/outputs/";
    s.parts[3] = *output;
    s.count = 4;
  }
  return s;
}

// FROM matching (edgeHub BaseMessageSource): `prefix` is the route's normalised source
// (lower-case, ending in '/'), compared case-insensitively with the message source plus one
// trailing '/'. The '/' is what keeps module "m" from matching "m2".
bool source_matches(std::string_view prefix, std::string_view source) {
  if (prefix.size() > source.size() + 1) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const char c = i < source.size() ? ascii_lower(source[i]) : '/';
    if (c != prefix[i]) return false;
  }
  return true;
}

class RouteParser {
 public:
  explicit RouteParser(const RouteSpec& spec) : spec_(spec), text_(spec.text) {}

  Error error(std::size_t pos, const std::string& message) const {
    return make_error(errc::invalid_argument,
                      "route " + detail::quote_for_error(spec_.name) + " column " +
                          std::to_string(pos + 1) + ": " + message +
                          " in: " + detail::sanitize_for_error(text_, detail::kMaxEchoedText));
  }

  Token peek() const { return Lexer(text_, pos_).next(); }
  void consume(const Token& t) { pos_ = t.pos + t.text.size(); }
  Error expected(std::string_view what) const {
    return error(peek_pos(),
                 "expected " + std::string(what) + ", found " + detail::describe_token(peek()));
  }
  std::size_t peek_pos() const { return peek().pos; }

  Status parse() {
    Token t = peek();
    if (t.kind == Tok::kSelect) {
      consume(t);
      t = peek();
      if (t.kind != Tok::kStar) return expected("'*' after SELECT");
      consume(t);
      t = peek();
    }
    if (t.kind != Tok::kFrom) return expected("FROM");
    consume(t);

    auto source = parse_source();
    if (!source) return std::move(source).error();
    source_ = std::move(*source);

    t = peek();
    if (t.kind == Tok::kWhere) {
      consume(t);
      auto parsed = detail::parse_condition(text_, pos_, detail::ConditionEnd::kInto);
      if (auto* e = std::get_if<detail::SyntaxError>(&parsed)) return error(e->pos, e->message);
      auto& ok = std::get<detail::ParsedCondition>(parsed);
      condition_ = std::move(ok.program);
      pos_ = ok.end;
      t = peek();
    }
    if (t.kind != Tok::kInto) {
      return expected(condition_ ? "INTO" : "WHERE or INTO");
    }
    consume(t);

    auto endpoint = parse_sink();
    if (!endpoint) return std::move(endpoint).error();
    endpoint_ = std::move(*endpoint);

    t = peek();
    if (t.kind != Tok::kEnd) {
      return error(t.pos, "unexpected " + detail::describe_token(t) + " after the endpoint");
    }
    return {};
  }

  std::string source_;
  std::shared_ptr<const Condition> condition_;
  Endpoint endpoint_;

 private:
  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }

  // path := ('/' segment)+ where segment is a name or, last, '*'. Returns the normalised source:
  // trailing '*' and '/' trimmed, lower-cased, one '/' appended ("/*" becomes "/").
  Result<std::string> parse_source() {
    skip_space();
    if (pos_ >= text_.size() || text_[pos_] != '/') {
      return expected("a source path such as /messages/*");
    }
    std::string out;
    bool wildcard = false;
    while (pos_ < text_.size() && text_[pos_] == '/') {
      if (wildcard) return error(pos_, "'*' must be the last segment of the source path");
      ++pos_;
      if (pos_ < text_.size() && text_[pos_] == '*') {
        wildcard = true;
        ++pos_;
        continue;
      }
      const std::size_t start = pos_;
      while (pos_ < text_.size() && is_path_char(text_[pos_])) ++pos_;
      if (pos_ == start) {
        return error(pos_, "expected a path segment after '/', found " + next_char());
      }
      out.push_back('/');
      for (std::size_t i = start; i < pos_; ++i) out.push_back(ascii_lower(text_[i]));
    }
    if (pos_ < text_.size() && !is_space(text_[pos_])) {
      return error(pos_, "unexpected " + next_char() + " in the source path");
    }
    out.push_back('/');
    return out;
  }

  std::string next_char() const {
    if (pos_ >= text_.size()) return "end of input";
    return detail::quote_for_error(text_.substr(pos_, 1));
  }

  // sink := '$upstream' | BrokeredEndpoint '(' STRING ')'
  Result<Endpoint> parse_sink() {
    Token t = peek();
    if (t.kind == Tok::kSysProp) {
      if (!iequals(t.text, "$upstream")) {
        return error(t.pos, "unsupported endpoint " + detail::quote_for_error(t.text) +
                                " (only $upstream and BrokeredEndpoint(\"...\") are supported)");
      }
      consume(t);
      return Endpoint{};
    }
    if (t.kind != Tok::kIdent || !iequals(t.text, "BrokeredEndpoint")) {
      return expected("an endpoint ($upstream or BrokeredEndpoint(\"/modules/<m>/inputs/<i>\"))");
    }
    consume(t);
    t = peek();
    if (t.kind != Tok::kLParen) return expected("'(' after BrokeredEndpoint");
    consume(t);
    const Token str = peek();
    if (str.kind != Tok::kString) return expected("a quoted endpoint address");
    consume(str);
    t = peek();
    if (t.kind != Tok::kRParen) return expected("')'");
    consume(t);

    auto decoded = detail::decode_string(str.text, str.pos);
    if (auto* e = std::get_if<detail::SyntaxError>(&decoded)) return error(e->pos, e->message);
    std::string_view address = std::get<std::string>(decoded);
    // edgeHub trims leading and trailing '/' and expects exactly modules/<m>/inputs/<i>.
    while (!address.empty() && address.front() == '/') address.remove_prefix(1);
    while (!address.empty() && address.back() == '/') address.remove_suffix(1);
    std::array<std::string_view, 4> parts{};
    std::size_t count = 0;
    bool too_many = false;
    for (std::size_t start = 0;;) {
      const std::size_t slash = address.find('/', start);
      if (count == parts.size()) {
        too_many = true;
        break;
      }
      parts[count++] = address.substr(
          start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
    if (too_many || count != 4 || !iequals(parts[0], "modules") || !iequals(parts[2], "inputs") ||
        parts[1].empty() || parts[3].empty()) {
      return error(str.pos, "endpoint address " + detail::quote_for_error(str.text) +
                                " must be \"/modules/<module>/inputs/<input>\"");
    }
    Endpoint e;
    e.kind = Endpoint::Kind::module_input;
    e.module = std::string(parts[1]);
    e.input = std::string(parts[3]);
    return e;
  }

  const RouteSpec& spec_;
  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace

std::string Endpoint::id() const {
  if (kind == Kind::upstream) {
    return input.empty() ? std::string("$upstream") : std::string(kUpstreamIdentityPrefix) + input;
  }
  return module + "/" + input;
}

std::optional<Endpoint> Endpoint::from_id(std::string_view id) {
  if (id == "$upstream") return Endpoint{Kind::upstream, "", ""};
  if (id.starts_with(kUpstreamIdentityPrefix)) {
    std::string_view identity = id.substr(kUpstreamIdentityPrefix.size());
    if (identity.empty()) return std::nullopt;
    return Endpoint{Kind::upstream, "", std::string(identity)};
  }
  auto slash = id.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == id.size()) return std::nullopt;
  return Endpoint{Kind::module_input, std::string(id.substr(0, slash)),
                  std::string(id.substr(slash + 1))};
}

Result<Route> Route::parse(const RouteSpec& spec) {
  RouteParser p(spec);
  if (spec.priority != kDefaultPriority && (spec.priority < 0 || spec.priority > 9)) {
    return make_error(errc::invalid_argument, "route " + detail::quote_for_error(spec.name) +
                                                  ": priority " + std::to_string(spec.priority) +
                                                  " is outside 0-9");
  }
  if (spec.text.size() > kMaxRouteTextBytes) {
    return make_error(errc::invalid_argument, "route " + detail::quote_for_error(spec.name) +
                                                  " is longer than " +
                                                  std::to_string(kMaxRouteTextBytes) + " bytes");
  }
  auto parsed = p.parse();
  if (!parsed) return std::move(parsed).error();
  Route r;
  r.name_ = spec.name;
  r.text_ = spec.text;
  r.source_ = std::move(p.source_);
  r.condition_ = std::move(p.condition_);
  r.endpoint_ = std::move(p.endpoint_);
  r.priority_ = spec.priority;
  r.ttl_secs_ = spec.ttl_secs;
  return r;
}

bool Route::matches(const Message& m, std::string_view source) const {
  if (!source_matches(source_, source)) return false;
  return !condition_ || condition_->evaluate(m);
}

std::string message_source(const Message& m) {
  const SourceParts parts = source_parts(m);
  std::string out(parts.size(), '\0');
  parts.copy_to(out.data());
  return out;
}

Result<Router> Router::create(const std::vector<RouteSpec>& specs) {
  Router router;
  router.routes_.reserve(specs.size());
  for (const auto& spec : specs) {
    for (const auto& existing : router.routes_) {
      if (existing.name() == spec.name) {
        return make_error(errc::invalid_argument,
                          "duplicate route name " + detail::quote_for_error(spec.name));
      }
    }
    auto route = Route::parse(spec);
    if (!route) return std::move(route).error();
    router.routes_.push_back(std::move(*route));
  }
  return router;
}

std::vector<RouteMatch> Router::route(const Message& m) const {
  // Hot path: build the source once per message, on the stack when it fits (module and output
  // names are short), instead of allocating a string per message.
  const SourceParts parts = source_parts(m);
  std::array<char, 256> buffer;
  std::string heap;
  std::string_view source;
  const std::size_t size = parts.size();
  if (size <= buffer.size()) {
    parts.copy_to(buffer.data());
    source = std::string_view(buffer.data(), size);
  } else {
    heap.resize(size);
    parts.copy_to(heap.data());
    source = heap;
  }

  std::vector<RouteMatch> out;
  for (const auto& r : routes_) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const RouteMatch& x) { return x.endpoint == r.endpoint(); });
    // A route that cannot raise the priority of an endpoint already chosen changes nothing, so
    // its condition is not evaluated at all.
    if (it != out.end() && it->priority <= r.priority()) continue;
    if (!r.matches(m, source)) continue;
    if (it == out.end()) {
      out.push_back(RouteMatch{r.endpoint(), r.priority(), r.ttl_secs()});
    } else {
      it->priority = r.priority();
      it->ttl_secs = r.ttl_secs();
    }
  }
  return out;
}

}  // namespace cairn::routing
