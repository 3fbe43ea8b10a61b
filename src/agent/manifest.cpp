#include "agent/manifest.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/crypto.hpp"

namespace cairn::agent {

using nlohmann::json;

const char* to_string(DesiredStatus s) noexcept {
  return s == DesiredStatus::running ? "running" : "stopped";
}
const char* to_string(RestartPolicy p) noexcept {
  switch (p) {
    case RestartPolicy::never:
      return "never";
    case RestartPolicy::on_failure:
      return "on-failure";
    case RestartPolicy::on_unhealthy:
      return "on-unhealthy";
    case RestartPolicy::always:
      return "always";
  }
  return "on-unhealthy";
}
const char* to_string(ImagePullPolicy p) noexcept {
  return p == ImagePullPolicy::never ? "never" : "on-create";
}

bool ModuleDesired::process_runtime() const {
  return type == "process" || image.starts_with("/") || image.starts_with("file://");
}

const ModuleDesired* Deployment::find(const std::string& name) const {
  for (const auto& m : modules) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::optional<RegistryCredential> Deployment::credential_for(const std::string& image) const {
  auto slash = image.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto host = image.substr(0, slash);
  for (const auto& [name, cred] : registry_credentials) {
    if (cred.address == host) return cred;
  }
  return std::nullopt;
}

std::string ManifestOutcome::describe() const {
  std::string out;
  for (const auto& p : problems) {
    if (!out.empty()) out += "\n";
    out += p.path + ": " + p.message;
  }
  return out;
}

namespace {

bool valid_module_name(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
  });
}

// ^[^\+#$\s\.]+$
bool valid_env_name(const std::string& name) {
  return !name.empty() && std::none_of(name.begin(), name.end(), [](char c) {
    return c == '+' || c == '#' || c == '$' || c == '.' ||
           std::isspace(static_cast<unsigned char>(c)) != 0;
  });
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

bool is_create_options_key(const std::string& key) {
  constexpr std::string_view base = "createoptions";
  if (key.size() < base.size()) return false;
  for (std::size_t i = 0; i < base.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(key[i])) != base[i]) return false;
  }
  return std::all_of(key.begin() + static_cast<std::ptrdiff_t>(base.size()), key.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
}

class Parser {
 public:
  explicit Parser(std::vector<ManifestProblem>& problems) : problems_(problems) {}

  void problem(const std::string& path, std::string message) {
    problems_.push_back({path, std::move(message)});
  }

  // Returns the member or null; reports a wrong type.
  const json* member(const json& obj, const std::string& path, const char* key, json::value_t type,
                     bool required, const char* what) {
    auto it = obj.find(key);
    std::string where = path + "." + key;
    if (it == obj.end() || (it->is_null() && !required)) {
      if (required) problem(where, fmt::format("required ({})", what));
      return nullptr;
    }
    bool ok = it->type() == type ||
              (type == json::value_t::number_integer && it->is_number_integer()) ||
              (type == json::value_t::number_unsigned && it->is_number_unsigned());
    if (!ok) {
      problem(where, fmt::format("must be {}", what));
      return nullptr;
    }
    return &*it;
  }

  std::string string_member(const json& obj, const std::string& path, const char* key,
                            bool required, const std::string& fallback = {}) {
    auto* v = member(obj, path, key, json::value_t::string, required, "a string");
    return v ? v->get<std::string>() : fallback;
  }

  void schema_version(const json& desired, const std::string& path) {
    if (!desired.contains("schemaVersion")) {
      problem(path + ".schemaVersion", "required (a string)");
      return;
    }
    auto sv = string_member(desired, path, "schemaVersion", true);
    if (!desired["schemaVersion"].is_string()) return;
    // A .NET Version (2 to 4 numeric parts): major 1, not above 1.1.0.
    std::vector<std::string> parts;
    std::stringstream in(sv);
    for (std::string part; std::getline(in, part, '.');) parts.push_back(part);
    if (sv.empty() || sv.back() == '.' || parts.size() < 2 || parts.size() > 4 ||
        !std::all_of(parts.begin(), parts.end(), all_digits)) {
      problem(path + ".schemaVersion",
              "'" + sv + "' is not a version (expected \"1.0\" or \"1.1\")");
      return;
    }
    std::vector<long> n;
    for (const auto& part : parts) n.push_back(std::stol(part));
    n.resize(4, 0);
    bool ok = n[0] == 1 && (n[1] == 0 || (n[1] == 1 && n[2] == 0 && n[3] == 0));
    if (!ok) {
      problem(path + ".schemaVersion",
              "'" + sv + "' is not supported (supported: 1.0 and 1.1; major 1, at most 1.1.0)");
    }
  }

  void module(const json& obj, const std::string& path, const std::string& name, bool system,
              ModuleDesired& out) {
    out.name = name;
    out.system = system;
    if (!obj.is_object()) {
      problem(path, "must be an object");
      return;
    }
    out.type = string_member(obj, path, "type", true);
    if (!out.type.empty() && out.type != "docker" && out.type != "process") {
      problem(path + ".type",
              "'" + out.type + "' is not a module type (\"docker\" or \"process\")");
    }
    out.version = string_member(obj, path, "version", false);
    bool agent = system && name == "edgeAgent";
    if (!agent) {
      auto status = string_member(obj, path, "status", system, "running");
      if (status == "running") {
        out.status = DesiredStatus::running;
      } else if (status == "stopped") {
        out.status = DesiredStatus::stopped;
      } else if (!status.empty()) {
        problem(path + ".status",
                "'" + status + "' is not a desired status (\"running\" or \"stopped\")");
      }
      auto policy = string_member(obj, path, "restartPolicy", system, "on-unhealthy");
      if (policy == "never") {
        out.restart_policy = RestartPolicy::never;
      } else if (policy == "on-failure") {
        out.restart_policy = RestartPolicy::on_failure;
      } else if (policy == "on-unhealthy") {
        out.restart_policy = RestartPolicy::on_unhealthy;
      } else if (policy == "always") {
        out.restart_policy = RestartPolicy::always;
      } else if (!policy.empty()) {
        problem(path + ".restartPolicy",
                "'" + policy +
                    "' is not a restart policy (\"never\", \"on-failure\", \"on-unhealthy\", "
                    "\"always\")");
      }
      if (auto it = obj.find("startupOrder"); it != obj.end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<std::int64_t>() < 0 ||
            it->get<std::int64_t>() > 4294967295LL) {
          problem(path + ".startupOrder", "must be an integer from 0 to 4294967295");
        } else {
          out.startup_order = static_cast<std::uint32_t>(it->get<std::int64_t>());
        }
      }
    } else if (obj.contains("startupOrder")) {
      problem(path + ".startupOrder", "edgeAgent always starts first; startupOrder is not allowed");
    }
    auto pull = string_member(obj, path, "imagePullPolicy", false, "on-create");
    if (pull == "on-create") {
      out.pull_policy = ImagePullPolicy::on_create;
    } else if (pull == "never") {
      out.pull_policy = ImagePullPolicy::never;
    } else {
      problem(path + ".imagePullPolicy",
              "'" + pull + "' is not a pull policy (\"on-create\" or \"never\")");
    }

    const json* settings = member(obj, path, "settings", json::value_t::object, true, "an object");
    if (settings) {
      out.settings = *settings;
      std::string spath = path + ".settings";
      out.image = string_member(*settings, spath, "image", true);
      if (settings->contains("image") && settings->at("image").is_string() && out.image.empty()) {
        problem(spath + ".image", "must not be empty");
      }
      for (const auto& [key, value] : settings->items()) {
        if (is_create_options_key(key) && !value.is_string()) {
          problem(spath + "." + key, "must be a string holding JSON (a Docker create body)");
        }
      }
      out.create_options_text = join_create_options(*settings);
      if (!out.create_options_text.empty() && out.create_options_text != "null") {
        try {
          out.create_options = json::parse(out.create_options_text);
          if (!out.create_options.is_object()) {
            problem(spath + ".createOptions", "must hold a JSON object");
            out.create_options = json::object();
          }
        } catch (const json::parse_error& e) {
          problem(spath + ".createOptions", std::string("is not valid JSON: ") + e.what());
        }
      }
      check_create_options(out, spath + ".createOptions");
    }
    if (auto* env = member(obj, path, "env", json::value_t::object, false, "an object")) {
      out.env_json = *env;
      for (const auto& [key, value] : env->items()) {
        std::string epath = path + ".env." + key;
        if (!valid_env_name(key)) {
          problem(epath, "is not a valid variable name (no '+', '#', '$', '.' or whitespace)");
        }
        auto v = value.is_object() ? value.find("value") : value.end();
        if (v == value.end() || !(v->is_string() || v->is_number() || v->is_boolean())) {
          problem(epath, "must be {\"value\": <string, number or boolean>}");
          continue;
        }
        out.env.emplace_back(key, v->is_string() ? v->get<std::string>() : v->dump());
      }
    } else {
      out.env_json = json::object();
    }
  }

  void check_create_options(const ModuleDesired& m, const std::string& path) {
    const auto& co = m.create_options;
    auto array_of_strings = [&](const char* key) {
      auto it = co.find(key);
      if (it == co.end() || it->is_null()) return;
      if (it->is_string()) return;  // Docker also accepts a single string
      if (!it->is_array() ||
          !std::all_of(it->begin(), it->end(), [](const json& e) { return e.is_string(); })) {
        problem(path + "." + key, "must be an array of strings");
      }
    };
    array_of_strings("Cmd");
    array_of_strings("Entrypoint");
    array_of_strings("Env");
    if (auto hc = co.find("HostConfig"); hc != co.end()) {
      if (!hc->is_object()) {
        problem(path + ".HostConfig", "must be an object");
        return;
      }
      for (const char* key : {"Memory", "NanoCpus"}) {
        auto it = hc->find(key);
        if (it != hc->end() && !(it->is_number_integer() && it->get<std::int64_t>() >= 0)) {
          problem(path + ".HostConfig." + key, "must be a non-negative integer");
        }
      }
    }
  }

  std::vector<ManifestProblem>& problems_;
};

}  // namespace

std::string join_create_options(const json& settings) {
  std::vector<std::pair<std::string, std::string>> chunks;
  if (!settings.is_object()) return {};
  for (const auto& [key, value] : settings.items()) {
    if (!is_create_options_key(key) || !value.is_string()) continue;
    std::string lower = key;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    chunks.emplace_back(lower, value.get<std::string>());
  }
  std::sort(chunks.begin(), chunks.end());
  std::string out;
  for (const auto& [key, text] : chunks) out += text;
  return out;
}

json chunk_create_options(const std::string& text) {
  constexpr std::size_t kChunk = 512;
  json out = json::object();
  for (std::size_t i = 0, n = 0; i < text.size() || n == 0; i += kChunk, ++n) {
    std::string key = n == 0 ? "createOptions" : fmt::format("createOptions{:02}", n);
    out[key] = text.substr(i, kChunk);
    if (text.empty()) break;
  }
  return out;
}

std::string config_hash(const ModuleDesired& m) {
  json doc = {{"image", m.image},
              {"version", m.version},
              {"type", m.type},
              {"createOptions", m.create_options},
              {"env", m.env}};
  return crypto::sha256_hex(doc.dump()).substr(0, 32);
}

namespace {

void parse_edgeagent(Parser& p, const json& desired, const std::string& path, Deployment& out) {
  if (!desired.is_object()) {
    p.problem(path, "must be an object");
    return;
  }
  p.schema_version(desired, path);
  out.schema_version = desired.value("schemaVersion", "");
  if (auto* runtime =
          p.member(desired, path, "runtime", json::value_t::object, false, "an object")) {
    out.runtime = *runtime;
    std::string rpath = path + ".runtime";
    auto type = p.string_member(*runtime, rpath, "type", true);
    if (!type.empty() && type != "docker" && type != "process") {
      p.problem(rpath + ".type",
                "'" + type + "' is not a runtime type (\"docker\" or \"process\")");
    }
    if (auto* settings =
            p.member(*runtime, rpath, "settings", json::value_t::object, false, "an object")) {
      std::string spath = rpath + ".settings";
      p.member(*settings, spath, "minDockerVersion", json::value_t::string, false, "a string");
      p.member(*settings, spath, "loggingOptions", json::value_t::string, false, "a string");
      if (auto* creds = p.member(*settings, spath, "registryCredentials", json::value_t::object,
                                 false, "an object")) {
        for (const auto& [name, cred] : creds->items()) {
          std::string cpath = spath + ".registryCredentials." + name;
          if (!cred.is_object()) {
            p.problem(cpath, "must be an object with address, username and password");
            continue;
          }
          RegistryCredential c;
          c.address = p.string_member(cred, cpath, "address", true);
          c.username = p.string_member(cred, cpath, "username", true);
          c.password = p.string_member(cred, cpath, "password", true);
          if (std::any_of(c.address.begin(), c.address.end(),
                          [](char ch) { return std::isspace(static_cast<unsigned char>(ch)); })) {
            p.problem(cpath + ".address", "must not contain whitespace");
          }
          out.registry_credentials[name] = std::move(c);
        }
      }
    }
  }
  if (auto* system = p.member(desired, path, "systemModules", json::value_t::object, false,
                              "an object with edgeAgent and edgeHub")) {
    std::string spath = path + ".systemModules";
    for (const char* name : {"edgeAgent", "edgeHub"}) {
      auto it = system->find(name);
      if (it == system->end()) {
        p.problem(spath + "." + name, "required");
        continue;
      }
      ModuleDesired m;
      p.module(*it, spath + "." + name, name, true, m);
      out.system_modules.push_back(std::move(m));
    }
    for (const auto& [name, value] : system->items()) {
      if (name != "edgeAgent" && name != "edgeHub") {
        p.problem(spath + "." + name, "unknown system module (only edgeAgent and edgeHub)");
      }
    }
  }
  if (auto* modules =
          p.member(desired, path, "modules", json::value_t::object, false, "an object")) {
    for (const auto& [name, value] : modules->items()) {
      std::string mpath = path + ".modules." + name;
      if (!valid_module_name(name)) {
        p.problem(mpath, "module names may only hold letters, digits, '_' and '-'");
        continue;
      }
      if (name == "edgeAgent" || name == "edgeHub") {
        p.problem(mpath, "is a system module name; declare it under systemModules");
        continue;
      }
      ModuleDesired m;
      p.module(value, mpath, name, false, m);
      out.modules.push_back(std::move(m));
    }
  }
}

void parse_edgehub(Parser& p, const json& desired, const std::string& path,
                   const EdgeHubValidator& validate, Deployment& out) {
  if (!desired.is_object()) {
    p.problem(path, "must be an object");
    return;
  }
  out.edgehub_desired = desired;
  if (validate) {
    auto message = validate(desired);
    if (!message.empty()) p.problem(path, message);
  }
}

}  // namespace

ManifestOutcome parse_manifest(const json& document, const EdgeHubValidator& validate_edgehub) {
  ManifestOutcome outcome;
  Parser p(outcome.problems);
  const json* doc = &document;
  std::string prefix;
  if (doc->is_object() && doc->contains("content") && !doc->contains("modulesContent")) {
    doc = &(*doc)["content"];
    prefix = "content.";
  }
  if (!doc->is_object()) {
    p.problem(prefix.empty() ? "$" : "content", "expected {\"modulesContent\": {...}}");
    return outcome;
  }
  auto mc = doc->find("modulesContent");
  if (mc == doc->end() || !mc->is_object()) {
    p.problem(prefix + "modulesContent", "required (an object)");
    return outcome;
  }
  Deployment out;
  out.document = *mc;
  std::string base = prefix + "modulesContent";
  bool has_agent = false, has_hub = false;
  for (const auto& [key, value] : mc->items()) {
    std::string path = base + "." + key;
    auto desired = value.is_object() ? value.find("properties.desired") : value.end();
    if (desired == value.end()) {
      p.problem(path, "must be an object with \"properties.desired\"");
      continue;
    }
    std::string dpath = path + ".properties.desired";
    if (key == "$edgeAgent") {
      has_agent = true;
      parse_edgeagent(p, *desired, dpath, out);
    } else if (key == "$edgeHub") {
      has_hub = true;
      parse_edgehub(p, *desired, dpath, validate_edgehub, out);
    } else if (!valid_module_name(key)) {
      p.problem(path, "module names may only hold letters, digits, '_' and '-'");
    } else if (!desired->is_object()) {
      p.problem(dpath, "must be an object");
    } else {
      out.module_twins[key] = *desired;
    }
  }
  if (!has_agent) p.problem(base + ".$edgeAgent", "required");
  if (!has_hub) p.problem(base + ".$edgeHub", "required");
  std::sort(out.modules.begin(), out.modules.end(),
            [](const ModuleDesired& a, const ModuleDesired& b) { return a.name < b.name; });
  if (outcome.problems.empty()) outcome.deployment = std::move(out);
  return outcome;
}

ManifestOutcome read_manifest(const std::string& path, const EdgeHubValidator& validate_edgehub) {
  std::ifstream in(path);
  if (!in) {
    ManifestOutcome o;
    o.problems.push_back({path, "cannot open the manifest"});
    return o;
  }
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::parse_error& e) {
    ManifestOutcome o;
    o.problems.push_back({path, std::string("not valid JSON: ") + e.what()});
    return o;
  }
  return parse_manifest(doc, validate_edgehub);
}

ManifestOutcome parse_twins(const json& edgeagent_desired, const json& edgehub_desired,
                            const EdgeHubValidator& validate_edgehub) {
  auto strip = [](json d) {
    if (d.is_object()) {
      d.erase("$version");
      d.erase("$metadata");
    }
    return d;
  };
  json doc = {{"modulesContent",
               {{"$edgeAgent", {{"properties.desired", strip(edgeagent_desired)}}},
                {"$edgeHub", {{"properties.desired", strip(edgehub_desired)}}}}}};
  return parse_manifest(doc, validate_edgehub);
}

}  // namespace cairn::agent
