#include "hub/edgehub_config.hpp"

#include <fstream>
#include <sstream>

#include "routing/routes_config.hpp"

namespace cairn::hub {

Result<EdgeHubConfig> parse_edgehub_desired(const nlohmann::json& desired) {
  if (!desired.is_object()) {
    return make_error(errc::invalid_argument, "$edgeHub properties.desired must be an object");
  }
  EdgeHubConfig out;
  auto sv = desired.find("schemaVersion");
  if (sv == desired.end() || !sv->is_string()) {
    return make_error(errc::invalid_argument, "$edgeHub: schemaVersion (a string) is required");
  }
  out.schema_version = sv->get<std::string>();
  auto routes = desired.find("routes");
  if (routes != desired.end()) {
    auto specs = routing::parse_routes_config(*routes, out.schema_version);
    if (!specs) return make_error(errc::invalid_argument, "$edgeHub: " + specs.error().message);
    out.routes = std::move(*specs);
  }
  auto sf = desired.find("storeAndForwardConfiguration");
  if (sf != desired.end()) {
    if (!sf->is_object()) {
      return make_error(errc::invalid_argument,
                        "$edgeHub: storeAndForwardConfiguration must be an object");
    }
    auto ttl = sf->find("timeToLiveSecs");
    if (ttl != sf->end()) {
      if (!ttl->is_number_integer()) {
        return make_error(
            errc::invalid_argument,
            "$edgeHub: storeAndForwardConfiguration.timeToLiveSecs must be an integer");
      }
      out.ttl_secs = ttl->get<std::int64_t>();
    }
    auto limits = sf->find("storeLimits");
    if (limits != sf->end()) {
      auto max = limits->is_object() ? limits->find("maxSizeBytes") : limits->end();
      if (max == limits->end() || !max->is_number_unsigned()) {
        return make_error(errc::invalid_argument,
                          "$edgeHub: storeLimits.maxSizeBytes must be a non-negative integer");
      }
      out.max_store_bytes = max->get<std::uint64_t>();
    }
  }
  return out;
}

Result<nlohmann::json> read_edgehub_desired(const std::string& manifest_path) {
  std::ifstream in(manifest_path);
  if (!in) return make_error(errc::not_found, manifest_path + ": cannot open the manifest");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    return make_error(errc::invalid_argument, manifest_path + ": not valid JSON: " + e.what());
  }
  if (doc.is_object() && doc.contains("content")) doc = doc["content"];
  if (!doc.is_object() || !doc.contains("modulesContent") || !doc["modulesContent"].is_object()) {
    return make_error(errc::invalid_argument,
                      manifest_path + ": expected {\"modulesContent\": {...}}");
  }
  const auto& mc = doc["modulesContent"];
  auto hub = mc.find("$edgeHub");
  if (hub == mc.end() || !hub->is_object() || !hub->contains("properties.desired")) {
    return make_error(
        errc::invalid_argument,
        manifest_path + ": modulesContent.$edgeHub[\"properties.desired\"] is required");
  }
  return (*hub)["properties.desired"];
}

}  // namespace cairn::hub
