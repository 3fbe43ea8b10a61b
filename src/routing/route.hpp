// IoT Edge routes: "[SELECT *] FROM <source> [WHERE <condition>] INTO <sink>", parsed once
// into an immutable Route that matches messages quickly.
//
// Grammar and semantics follow edgeHub (docs/protocol.md §2): keywords case-insensitive;
// FROM is a case-insensitive prefix match on the message source after trimming trailing '*'
// and '/' and appending one '/'; INTO is `$upstream` or
// `BrokeredEndpoint("/modules/{m}/inputs/{i}")`.
//
// Thread-safety: a parsed Route and Router are immutable and safe to share between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/message.hpp"
#include "core/result.hpp"
#include "routing/condition.hpp"

namespace cairn::routing {

// Priority given to routes written as plain strings (edgeHub RouteFactory.DefaultPriority): the
// lowest. Object-form routes use 0 (highest) .. 9.
inline constexpr std::int32_t kDefaultPriority = 2'000'000'000;

// Longest route (and standalone condition) text accepted; longer text is rejected before
// parsing so parse time and memory stay bounded.
inline constexpr std::size_t kMaxRouteTextBytes = 64 * 1024;

// System property messageType value that marks a twin change notification; message_source()
// gives such messages the source /twinChangeNotifications.
inline constexpr std::string_view kTwinChangeNotificationType = "twinChangeNotification";

// The queue names of an upstream endpoint that keeps one queue per sending identity start with
// it: "$upstream//{identity}". A module input's name never holds "//" (neither its module nor
// its input may be empty), so the two cannot meet.
inline constexpr std::string_view kUpstreamIdentityPrefix = "$upstream//";

struct Endpoint {
  enum class Kind { upstream, module_input };
  Kind kind = Kind::upstream;
  std::string module;  // module_input only
  // module_input: the input's name. upstream: the sending identity ("d" or "d/m") whose
  // messages the queue holds when the hub keeps one queue per identity; "" for the one shared
  // queue (routes always name that one; the hub picks the queue at ingest).
  std::string input;

  // Stable queue name: "$upstream", "$upstream//{identity}" or "{module}/{input}".
  std::string id() const;
  // The endpoint whose id() is `id`; nullopt for a name no endpoint has.
  static std::optional<Endpoint> from_id(std::string_view id);
  bool operator==(const Endpoint&) const = default;
};

// A route as written in the $edgeHub desired properties.
struct RouteSpec {
  std::string name;
  std::string text;
  std::int32_t priority = kDefaultPriority;
  std::uint32_t ttl_secs = 0;  // 0 = the store-and-forward default
};

class Route {
 public:
  // Parses `spec.text`. Errors are errc::invalid_argument with a message naming the route, the
  // 1-based column (byte offset + 1) of the problem and the text:
  //   "route 'r1' column 18: expected WHERE or INTO, found 'WHER' in: FROM /messages/* WHER ..."
  // Also rejects a priority outside 0..9 (other than kDefaultPriority) and text longer than
  // kMaxRouteTextBytes.
  static Result<Route> parse(const RouteSpec& spec);

  const std::string& name() const { return name_; }
  const std::string& text() const { return text_; }
  const std::string& source() const { return source_; }  // normalised, lower-case, ends with '/'
  const Endpoint& endpoint() const { return endpoint_; }
  std::int32_t priority() const { return priority_; }
  std::uint32_t ttl_secs() const { return ttl_secs_; }

  // True if the message's source matches FROM and the WHERE condition (if any) is true.
  // `source` is the message source as returned by message_source().
  bool matches(const Message& m, std::string_view source) const;

 private:
  std::string name_, text_, source_;
  std::shared_ptr<const Condition> condition_;  // null = no WHERE
  Endpoint endpoint_;
  std::int32_t priority_ = kDefaultPriority;
  std::uint32_t ttl_secs_ = 0;
};

// The source string of a message, from its system properties:
// "/messages/modules/{connectionModuleId}/outputs/{outputName}", "/messages/modules/{m}",
// or "/messages" for a leaf device (no connectionModuleId); "/twinChangeNotifications" if
// messageType is kTwinChangeNotificationType.
std::string message_source(const Message& m);

struct RouteMatch {
  Endpoint endpoint;
  std::int32_t priority = kDefaultPriority;
  std::uint32_t ttl_secs = 0;
};

// A set of routes. route() returns each endpoint at most once: when several routes send the
// message to the same endpoint it keeps the highest priority (lowest number) and that route's TTL
// (on a tie, the first such route in order). Endpoints appear in the order of the first route
// that matched them. create() rejects duplicate route names.
class Router {
 public:
  Router() = default;
  static Result<Router> create(const std::vector<RouteSpec>& specs);

  std::vector<RouteMatch> route(const Message& m) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace cairn::routing
