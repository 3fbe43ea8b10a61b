#include "routing/routes_config.hpp"

#include <cstdint>
#include <limits>
#include <string>

#include "routing/detail/lexer.hpp"

namespace cairn::routing {
namespace {

using Json = nlohmann::json;

Error config_error(const std::string& message) {
  return make_error(errc::invalid_argument, "$edgeHub routes: " + message);
}

std::string quote_name(std::string_view s) { return detail::quote_for_error(s); }

// ^[^\.\$# ]+$ from the az iot edge deployment schema.
bool valid_route_name(std::string_view name) {
  return !name.empty() && name.find_first_of(".$# ") == std::string_view::npos;
}

// A non-negative integer JSON value no larger than `max`. Floats ("1.0"), strings and negatives
// are rejected rather than coerced, as the edgeHub config parser does.
bool integer_up_to(const Json& v, std::uint64_t max, std::uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<std::uint64_t>();
  } else if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if (i < 0) return false;
    out = static_cast<std::uint64_t>(i);
  } else {
    return false;
  }
  return out <= max;
}

}  // namespace

Result<std::vector<RouteSpec>> parse_routes_config(const Json& routes,
                                                   std::string_view schema_version) {
  const bool v1_0 = schema_version == "1.0";
  if (!v1_0 && schema_version != "1.1" && schema_version != "1.2" && schema_version != "1.3") {
    return make_error(errc::invalid_argument, "unsupported $edgeHub schemaVersion " +
                                                  quote_name(schema_version) +
                                                  " (supported: 1.0, 1.1, 1.2, 1.3)");
  }
  if (!routes.is_object()) return config_error("'routes' must be an object");

  std::vector<RouteSpec> specs;
  specs.reserve(routes.size());
  for (auto it = routes.begin(); it != routes.end(); ++it) {
    const std::string& name = it.key();
    const Json& value = it.value();
    if (!valid_route_name(name)) {
      return config_error("route name " + quote_name(name) +
                          " is invalid: it must be non-empty and must not contain '.', '$', '#' "
                          "or ' '");
    }
    RouteSpec spec;
    spec.name = name;
    if (value.is_string()) {
      spec.text = value.get<std::string>();
    } else if (value.is_object()) {
      if (v1_0) {
        return config_error(
            "route " + quote_name(name) +
            ": routes with priority/timeToLiveSecs need schemaVersion 1.1 or later");
      }
      bool have_route = false;
      for (auto field = value.begin(); field != value.end(); ++field) {
        const std::string& key = field.key();
        const Json& v = field.value();
        std::uint64_t n = 0;
        if (key == "route") {
          if (!v.is_string())
            return config_error("route " + quote_name(name) + ": 'route' must be a string");
          spec.text = v.get<std::string>();
          have_route = true;
        } else if (key == "priority") {
          if (!integer_up_to(v, 9, n)) {
            return config_error("route " + quote_name(name) +
                                ": 'priority' must be an integer 0-9");
          }
          spec.priority = static_cast<std::int32_t>(n);
        } else if (key == "timeToLiveSecs") {
          if (!integer_up_to(v, std::numeric_limits<std::uint32_t>::max(), n)) {
            return config_error("route " + quote_name(name) +
                                ": 'timeToLiveSecs' must be an integer 0-4294967295");
          }
          spec.ttl_secs = static_cast<std::uint32_t>(n);
        } else {
          // Unknown fields are rejected: a typo such as "priorty" would otherwise silently
          // give the route the default priority.
          return config_error("route " + quote_name(name) + ": unknown field " + quote_name(key) +
                              " (expected route, priority, timeToLiveSecs)");
        }
      }
      if (!have_route) return config_error("route " + quote_name(name) + ": missing 'route'");
    } else {
      return config_error("route " + quote_name(name) +
                          (v1_0 ? " must be a string" : " must be a string or an object"));
    }
    // Parse now so one bad route rejects the whole configuration, naming the route.
    auto parsed = Route::parse(spec);
    if (!parsed) return std::move(parsed).error();
    specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace cairn::routing
