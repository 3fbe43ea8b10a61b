// The $edgeHub desired properties of a deployment manifest (docs/protocol.md §1.3): the
// routes and the store-and-forward settings. Validated as a whole: a manifest with one bad
// route changes nothing.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"
#include "routing/route.hpp"

namespace cairn::hub {

struct EdgeHubConfig {
  std::string schema_version;
  std::vector<routing::RouteSpec> routes;
  std::int64_t ttl_secs = 7200;       // negative = forever
  std::uint64_t max_store_bytes = 0;  // storeLimits.maxSizeBytes; 0 = not set
};

// From `{"schemaVersion": ..., "routes": {...}, "storeAndForwardConfiguration": {...}}`.
Result<EdgeHubConfig> parse_edgehub_desired(const nlohmann::json& desired);

// Reads a deployment manifest file ({"modulesContent": ...} or {"content": {"modulesContent":
// ...}}) and returns its $edgeHub desired properties. Errors name the file.
Result<nlohmann::json> read_edgehub_desired(const std::string& manifest_path);

}  // namespace cairn::hub
