// Reads the `routes` object of $edgeHub desired properties into RouteSpecs.
//
// Accepts schemaVersion "1.0" (string routes only) and "1.1".."1.3" (string or
// {"route": ..., "priority": 0-9, "timeToLiveSecs": 0-4294967295}). Route names must match
// ^[^\.\$# ]+$. Every route is also parsed, so one bad route rejects the whole set with a
// message naming it.
//
// Thread-safety: pure function.
#pragma once

#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"
#include "routing/route.hpp"

namespace cairn::routing {

Result<std::vector<RouteSpec>> parse_routes_config(const nlohmann::json& routes,
                                                   std::string_view schema_version);

}  // namespace cairn::routing
