// The IoT Edge deployment manifest (docs/agent.md "Manifest"): `{"modulesContent": {"$edgeAgent":
// {"properties.desired": ...}, "$edgeHub": {...}, "<module>": {...}}}`, or the same wrapped in
// `{"content": ...}` as `az iot edge` writes it.
//
// Parsing validates the whole document and collects every problem, each with the JSON path of
// the field ("modulesContent.$edgeAgent.properties.desired.modules.filter.restartPolicy"); a
// manifest with any problem yields no Deployment, so a deployment is all or nothing. There is
// no size ceiling on $edgeAgent (IoT Edge's 8 KB twin limit is a cloud-side artefact).
//
// cairnd plays edgeAgent and edgeHub itself, so `runtime` and `systemModules` may be left out
// (IoT Edge requires them); when given they are validated as IoT Edge does.
//
// $edgeHub's routes and store settings are validated by the hub (its own parser), through the
// `validate_edgehub` callback: the agent does not include the hub.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/runtime.hpp"
#include "core/result.hpp"

namespace cairn::agent {

enum class DesiredStatus { running, stopped };
enum class RestartPolicy { never, on_failure, on_unhealthy, always };
const char* to_string(DesiredStatus s) noexcept;
const char* to_string(RestartPolicy p) noexcept;
const char* to_string(ImagePullPolicy p) noexcept;

inline constexpr std::uint32_t kDefaultStartupOrder = 4294967295u;

struct ModuleDesired {
  std::string name;     // "filter"; system modules "edgeAgent", "edgeHub"
  bool system = false;  // systemModules.*: played by cairnd itself, never run by a runtime
  std::string type;     // "docker" or "process"
  std::string version;
  DesiredStatus status = DesiredStatus::running;
  RestartPolicy restart_policy = RestartPolicy::on_unhealthy;  // IoT Edge's code default
  ImagePullPolicy pull_policy = ImagePullPolicy::on_create;
  std::uint32_t startup_order = kDefaultStartupOrder;
  std::string image;
  nlohmann::json create_options = nlohmann::json::object();  // chunks joined and parsed
  std::string create_options_text;                           // as joined, for reporting
  std::vector<std::pair<std::string, std::string>> env;      // manifest order
  nlohmann::json settings;  // the settings object as given (reported back)
  nlohmann::json env_json;  // the env object as given (reported back)

  // The process runtime runs it: type "process", or an image that is an absolute path or a
  // file:// URL. Everything else goes to the docker runtime.
  bool process_runtime() const;
};

struct Deployment {
  std::string schema_version;  // $edgeAgent's
  nlohmann::json runtime;      // runtime object as given (reported back)
  std::map<std::string, RegistryCredential> registry_credentials;
  std::vector<ModuleDesired> system_modules;  // edgeAgent, edgeHub
  std::vector<ModuleDesired> modules;         // custom modules, by name
  nlohmann::json edgehub_desired;             // $edgeHub properties.desired, validated
  // Desired properties of custom modules given in the manifest (replace the twin's desired).
  std::map<std::string, nlohmann::json> module_twins;
  nlohmann::json document;  // the whole modulesContent, as validated (kept on disk)

  const ModuleDesired* find(const std::string& name) const;
  // The registry credential whose address is the image's registry host, if any.
  std::optional<RegistryCredential> credential_for(const std::string& image) const;
};

struct ManifestProblem {
  std::string path;  // JSON path of the offending field
  std::string message;
};

struct ManifestOutcome {
  std::optional<Deployment> deployment;  // set when problems is empty
  std::vector<ManifestProblem> problems;
  // All problems as one text, one per line: "PATH: MESSAGE".
  std::string describe() const;
};

// Returns an error message for bad $edgeHub desired properties, or "" when they are good.
using EdgeHubValidator = std::function<std::string(const nlohmann::json& edgehub_desired)>;

// `document` is the whole manifest ({"modulesContent": ...} or {"content": {...}}), or just the
// modulesContent object when `is_modules_content`.
ManifestOutcome parse_manifest(const nlohmann::json& document,
                               const EdgeHubValidator& validate_edgehub = {});
// Reads and parses a manifest file; JSON syntax errors name the file and position.
ManifestOutcome read_manifest(const std::string& path,
                              const EdgeHubValidator& validate_edgehub = {});
// Parses the $edgeAgent and $edgeHub desired properties as they arrive in twins (the cloud).
ManifestOutcome parse_twins(const nlohmann::json& edgeagent_desired,
                            const nlohmann::json& edgehub_desired,
                            const EdgeHubValidator& validate_edgehub = {});

// Joins `createOptions`, `createOptions01`… of a settings object (keys ordered as strings,
// case-insensitive) and splits a text back into 512-character chunks the same way.
std::string join_create_options(const nlohmann::json& settings);
nlohmann::json chunk_create_options(const std::string& text);

// A digest of what requires recreating a module (image, version, createOptions, env).
std::string config_hash(const ModuleDesired& m);

}  // namespace cairn::agent
