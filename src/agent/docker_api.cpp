#include "agent/docker_api.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <set>
#include <type_traits>

#include "core/crypto.hpp"
#include "core/rfc3339.hpp"
#include "net/http.hpp"
#include <sys/resource.h>

namespace cairn::agent {
namespace {

using nlohmann::json;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

// RFC 3339 as engines write it to Unix ms. Docker's zero time ("0001-01-01T00:00:00Z") and
// anything unparsable give 0 ("never").
std::int64_t rfc3339_to_ms(const std::string& text) {
  auto ms = parse_rfc3339_ms(text);
  return ms && *ms > 0 ? *ms : 0;
}

std::map<std::string, std::string> string_map(const json& j) {
  std::map<std::string, std::string> out;
  if (!j.is_object()) return out;
  for (const auto& [k, v] : j.items()) {
    out[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

// j[key] when both are objects, else an empty object: engine documents are not trusted to
// have the documented shape, and json::value() throws on a non-object.
json object_at(const json& j, const char* key) {
  if (!j.is_object()) return json::object();
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : json::object();
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

std::string engine_message(std::string_view body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    for (const char* key : {"message", "cause", "error"}) {
      auto m = str(j, key);
      if (!m.empty()) return m;
    }
  }
  std::string text(body.substr(0, 300));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text;
}

std::string labels_filter(const std::vector<std::string>& labels, bool container_events = false) {
  json filters = json::object();
  if (!labels.empty()) filters["label"] = labels;
  // No "event" filter: Podman 4.3 matches it against its own names ("died"), so a filter for
  // Docker's "die" drops every exit. The watcher keeps the events it wants itself.
  if (container_events) filters["type"] = json::array({"container"});
  return crypto::url_encode(filters.dump());
}

// ---- normalisation for create_options_drift ---------------------------------------------

bool empty_value(const json& j) {
  return j.is_null() || (j.is_string() && j.get<std::string>().empty()) ||
         (j.is_array() && j.empty()) || (j.is_object() && j.empty()) ||
         (j.is_number() && j.get<double>() == 0.0) || (j.is_boolean() && !j.get<bool>());
}

std::map<std::string, std::string> env_map(const json& env) {
  std::map<std::string, std::string> out;
  if (!env.is_array()) return out;
  for (const auto& e : env) {
    if (!e.is_string()) continue;
    auto s = e.get<std::string>();
    auto eq = s.find('=');
    out.emplace(s.substr(0, eq), eq == std::string::npos ? "" : s.substr(eq + 1));
  }
  return out;
}

// "src:dst[:opts]" without the propagation and recursion flags engines add; "rw" is implied.
std::string normalize_bind(const std::string& bind) {
  auto first = bind.find(':');
  if (first == std::string::npos) return bind;
  auto second = bind.find(':', first + 1);
  std::string base = bind.substr(0, second);
  if (second == std::string::npos) return base;
  std::set<std::string> kept;
  std::string opts = bind.substr(second + 1);
  std::size_t start = 0;
  while (start <= opts.size()) {
    auto comma = opts.find(',', start);
    auto opt = opts.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    static const std::set<std::string> kIgnored = {
        "rw", "rbind",  "bind", "rprivate", "private", "rshared", "shared", "rslave", "slave", "z",
        "Z",  "nocopy", "exec", "suid",     "dev",     "copy",    "noexec", "nosuid", "nodev", ""};
    if (!kIgnored.count(opt)) kept.insert(opt);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  for (const auto& o : kept) base += ":" + o;
  return base;
}

std::set<std::string> bind_set(const json& binds) {
  std::set<std::string> out;
  if (!binds.is_array()) return out;
  for (const auto& b : binds) {
    if (b.is_string()) out.insert(normalize_bind(b.get<std::string>()));
  }
  return out;
}

std::map<std::string, std::pair<std::int64_t, std::int64_t>> ulimit_map(const json& ulimits) {
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> out;
  if (!ulimits.is_array()) return out;
  for (const auto& u : ulimits) {
    if (!u.is_object()) continue;
    auto name = lower(str(u, "Name"));
    if (name.rfind("rlimit_", 0) == 0) name = name.substr(7);
    auto num = [&](const char* k) {
      auto it = u.find(k);
      return it != u.end() && it->is_number() ? it->get<std::int64_t>() : 0;
    };
    out[name] = {num("Soft"), num("Hard")};
  }
  return out;
}

std::string port_key(std::string key) {
  key = lower(key);
  if (key.find('/') == std::string::npos) key += "/tcp";
  return key;
}

std::map<std::string, std::set<std::string>> port_bindings(const json& bindings) {
  std::map<std::string, std::set<std::string>> out;
  if (!bindings.is_object()) return out;
  for (const auto& [port, list] : bindings.items()) {
    auto& set = out[port_key(port)];
    if (!list.is_array()) continue;
    for (const auto& b : list) {
      if (!b.is_object()) continue;
      auto ip = str(b, "HostIp");
      if (ip == "0.0.0.0" || ip == "::") ip.clear();
      set.insert(ip + ":" + str(b, "HostPort"));
    }
  }
  return out;
}

template <class Map>
std::string map_text(const Map& m) {
  json j = json::object();
  for (const auto& [k, v] : m) {
    if constexpr (std::is_same_v<typename Map::mapped_type, std::string>) {
      j[k] = v;
    } else if constexpr (std::is_same_v<typename Map::mapped_type, std::set<std::string>>) {
      j[k] = std::vector<std::string>(v.begin(), v.end());
    } else {
      j[k] = json::array({v.first, v.second});
    }
  }
  return j.dump();
}

json as_command(const json& j) {
  if (j.is_string()) return json::array({j});
  return j;
}

void compare_field(const std::string& path, const std::string& key, const json& want,
                   const json* have, std::vector<std::string>& out) {
  if (empty_value(want)) return;  // nothing asked for: whatever the engine chose is fine
  if (have == nullptr) return;    // the engine does not report it: cannot compare
  auto differs = [&](const std::string& w, const std::string& h) {
    out.push_back(path + ": want " + w + ", engine has " + h);
  };
  if (key == "Env") {
    auto w = env_map(want), h = env_map(*have);
    for (const auto& [k, v] : w) {
      auto it = h.find(k);
      if (it == h.end() || it->second != v) return differs(map_text(w), map_text(h));
    }
  } else if (key == "Labels") {
    auto w = string_map(want), h = string_map(*have);
    for (const auto& [k, v] : w) {
      auto it = h.find(k);
      if (it == h.end() || it->second != v) return differs(map_text(w), map_text(h));
    }
  } else if (key == "Binds") {
    auto w = bind_set(want), h = bind_set(*have);
    if (w != h) differs(json(w).dump(), json(h).dump());
  } else if (key == "Ulimits") {
    auto w = ulimit_map(want), h = ulimit_map(*have);
    for (const auto& [k, v] : w) {
      auto it = h.find(k);
      if (it == h.end() || it->second != v) return differs(map_text(w), map_text(h));
    }
  } else if (key == "PortBindings") {
    auto w = port_bindings(want), h = port_bindings(*have);
    if (w != h) differs(map_text(w), map_text(h));
  } else if (key == "ExposedPorts") {
    if (!want.is_object()) return;
    std::set<std::string> h;
    if (have->is_object()) {
      for (const auto& [k, v] : have->items()) h.insert(port_key(k));
    }
    for (const auto& [k, v] : want.items()) {
      if (!h.count(port_key(k))) return differs(want.dump(), have->dump());
    }
  } else if (key == "LogConfig") {
    if (!want.is_object() || !have->is_object()) return;
    if (lower(str(want, "Type")) != lower(str(*have, "Type")) && !str(want, "Type").empty()) {
      return differs(want.dump(), have->dump());
    }
    auto wc = string_map(object_at(want, "Config"));
    auto hc = string_map(object_at(*have, "Config"));
    for (const auto& [k, v] : wc) {
      auto it = hc.find(k);
      if (it != hc.end() && it->second != v) return differs(want.dump(), have->dump());
    }
  } else if (key == "RestartPolicy") {
    auto name = [](const json& j) {
      auto n = j.is_object() ? str(j, "Name") : std::string{};
      return n.empty() ? std::string("no") : n;
    };
    if (name(want) != name(*have)) differs(want.dump(), have->dump());
  } else if (key == "Cmd" || key == "Entrypoint") {
    if (as_command(want) != as_command(*have)) differs(want.dump(), have->dump());
  } else if (want.is_object() && have->is_object()) {
    for (const auto& [k, v] : want.items()) {
      auto it = have->find(k);
      compare_field(path + "." + k, k, v, it == have->end() ? nullptr : &*it, out);
    }
  } else if (want != *have) {
    differs(want.dump(), have->dump());
  }
}

// A multiplexed log stream starts with a frame header: stream 0-2, then three zero bytes.
bool looks_multiplexed(std::string_view bytes) {
  if (bytes.size() < 8) return false;
  auto s = static_cast<unsigned char>(bytes[0]);
  return s <= 2 && bytes[1] == 0 && bytes[2] == 0 && bytes[3] == 0;
}

}  // namespace

// ---- pure functions ------------------------------------------------------------------------

std::string normalize_image_name(std::string_view image) {
  std::string name(image);
  if (name.find('@') != std::string::npos) return name;
  auto slash = name.rfind('/');
  auto colon = name.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    name += ":latest";
  }
  return name;
}

std::string image_registry(std::string_view image) {
  auto slash = image.find('/');
  if (slash == std::string_view::npos) return "docker.io";
  auto first = image.substr(0, slash);
  if (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
      first == "localhost") {
    return std::string(first);
  }
  return "docker.io";
}

std::pair<std::string, std::string> split_image_reference(std::string_view image) {
  std::string name = normalize_image_name(image);
  auto at = name.find('@');
  if (at != std::string::npos) return {name.substr(0, at), name.substr(at + 1)};
  auto colon = name.rfind(':');
  return {name.substr(0, colon), name.substr(colon + 1)};
}

std::string registry_auth_header(const DockerAuth& auth) {
  json j = {
      {"username", auth.username}, {"password", auth.password}, {"serveraddress", auth.address}};
  std::string b64 = crypto::base64_encode(j.dump());
  std::replace(b64.begin(), b64.end(), '+', '-');
  std::replace(b64.begin(), b64.end(), '/', '_');
  return b64;
}

Result<json> merge_create_options(const json& create_options, const ContainerAdditions& additions) {
  if (!create_options.is_null() && !create_options.is_object()) {
    return make_error(errc::invalid_argument, "createOptions must be a JSON object");
  }
  json body = create_options.is_null() ? json::object() : create_options;
  body["Image"] = additions.image;

  // Env: the module's own list wins over createOptions' Env; first occurrence wins.
  json env = json::array();
  std::set<std::string> seen;
  for (const auto& [k, v] : additions.env) {
    if (seen.insert(k).second) env.push_back(k + "=" + v);
  }
  if (body.contains("Env") && !body["Env"].is_null()) {
    if (!body["Env"].is_array()) {
      return make_error(errc::invalid_argument, "createOptions.Env must be an array of strings");
    }
    for (const auto& e : body["Env"]) {
      if (!e.is_string()) {
        return make_error(errc::invalid_argument, "createOptions.Env must be an array of strings");
      }
      auto s = e.get<std::string>();
      if (seen.insert(s.substr(0, s.find('='))).second) env.push_back(s);
    }
  }
  body["Env"] = std::move(env);

  if (body.contains("Labels") && !body["Labels"].is_null() && !body["Labels"].is_object()) {
    return make_error(errc::invalid_argument, "createOptions.Labels must be an object");
  }
  if (!body.contains("Labels") || body["Labels"].is_null()) body["Labels"] = json::object();
  for (const auto& [k, v] : additions.labels) body["Labels"][k] = v;

  if (body.contains("HostConfig") && !body["HostConfig"].is_null() &&
      !body["HostConfig"].is_object()) {
    return make_error(errc::invalid_argument, "createOptions.HostConfig must be an object");
  }
  if (!body.contains("HostConfig") || body["HostConfig"].is_null()) {
    body["HostConfig"] = json::object();
  }
  json& host = body["HostConfig"];
  json binds = json::array();
  std::set<std::string> targets;
  for (const auto& b : additions.binds) {
    auto first = b.find(':');
    auto second = first == std::string::npos ? first : b.find(':', first + 1);
    targets.insert(first == std::string::npos ? b : b.substr(first + 1, second - first - 1));
  }
  if (host.contains("Binds") && !host["Binds"].is_null()) {
    if (!host["Binds"].is_array()) {
      return make_error(errc::invalid_argument, "createOptions.HostConfig.Binds must be an array");
    }
    for (const auto& b : host["Binds"]) {
      if (!b.is_string()) {
        return make_error(errc::invalid_argument,
                          "createOptions.HostConfig.Binds must be an array of strings");
      }
      auto s = b.get<std::string>();
      auto first = s.find(':');
      auto second = first == std::string::npos ? first : s.find(':', first + 1);
      std::string target = first == std::string::npos ? s : s.substr(first + 1, second - first - 1);
      if (!targets.count(target)) binds.push_back(s);
    }
  }
  for (const auto& b : additions.binds) binds.push_back(b);
  if (!binds.empty()) host["Binds"] = std::move(binds);
  host["RestartPolicy"] = {{"Name", "no"}};

  // Ulimits without nproc: Podman then adds nproc 1048576 (its built-in default, not
  // containers.conf's), which the container cannot set without CAP_SYS_RESOURCE when the host's
  // limit is lower, so the container never starts. Docker would inherit the host's limit; give
  // that explicitly.
  if (host.contains("Ulimits") && host["Ulimits"].is_array() && !host["Ulimits"].empty()) {
    bool has_nproc = false;
    for (const auto& u : host["Ulimits"]) {
      has_nproc = has_nproc || (u.is_object() && str(u, "Name") == "nproc");
    }
    rlimit limit{};
    if (!has_nproc && ::getrlimit(RLIMIT_NPROC, &limit) == 0) {
      // No more processes than process ids: some kernels (sandboxes) refuse a limit above
      // pid_max even below the hard limit.
      std::uint64_t cap = RLIM_INFINITY;
      if (std::FILE* f = std::fopen("/proc/sys/kernel/pid_max", "r")) {
        unsigned long long pid_max = 0;
        if (std::fscanf(f, "%llu", &pid_max) == 1 && pid_max > 0) cap = pid_max;
        std::fclose(f);
      }
      const std::uint64_t hard = std::min<std::uint64_t>(limit.rlim_max, cap);
      const std::uint64_t soft = std::min<std::uint64_t>(limit.rlim_cur, hard);
      if (hard != RLIM_INFINITY) {
        host["Ulimits"].push_back({{"Name", "nproc"},
                                   {"Soft", static_cast<std::int64_t>(soft)},
                                   {"Hard", static_cast<std::int64_t>(hard)}});
      }
    }
  }
  return body;
}

std::vector<std::string> create_options_drift(const json& desired, const json& inspect) {
  std::vector<std::string> out;
  if (!desired.is_object() || !inspect.is_object()) {
    out.push_back("(documents): want objects");
    return out;
  }
  const json empty = json::object();
  const json& config = inspect.contains("Config") ? inspect["Config"] : empty;
  const json& host = inspect.contains("HostConfig") ? inspect["HostConfig"] : empty;
  for (const auto& [key, want] : desired.items()) {
    if (key == "NetworkingConfig") continue;
    if (key == "HostConfig") {
      if (!want.is_object()) continue;
      for (const auto& [hk, hv] : want.items()) {
        auto it = host.find(hk);
        compare_field("HostConfig." + hk, hk, hv, it == host.end() ? nullptr : &*it, out);
      }
      continue;
    }
    auto it = config.find(key);
    compare_field(key, key, want, it == config.end() ? nullptr : &*it, out);
  }
  return out;
}

Status JsonStreamSplitter::feed(std::string_view bytes, const std::function<void(json)>& on_value) {
  if (failed_) return *failed_;
  buffer_.append(bytes);
  std::size_t value_start = 0;
  for (std::size_t i = scanned_; i < buffer_.size(); ++i) {
    char c = buffer_[i];
    if (!started_) {
      if (std::isspace(static_cast<unsigned char>(c))) {
        value_start = i + 1;
        continue;
      }
      if (c != '{' && c != '[') {
        failed_ = make_error(errc::invalid_argument,
                             "JSON stream: expected an object, got '" + std::string(1, c) + "'");
        return *failed_;
      }
      started_ = true;
      value_start = i;
    }
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if (c == '}' || c == ']') {
      if (--depth_ == 0) {
        auto value = json::parse(std::string_view(buffer_).substr(value_start, i + 1 - value_start),
                                 nullptr, false);
        if (value.is_discarded()) {
          failed_ = make_error(errc::invalid_argument, "JSON stream: malformed value");
          return *failed_;
        }
        on_value(std::move(value));
        started_ = false;
        value_start = i + 1;
      }
    }
  }
  // Keep only the unfinished value.
  buffer_.erase(0, started_ ? value_start : buffer_.size());
  scanned_ = buffer_.size();
  if (buffer_.size() > max_) {
    failed_ = make_error(errc::limit_exceeded,
                         "JSON stream: one value exceeds " + std::to_string(max_) + " bytes");
    return *failed_;
  }
  return {};
}

std::optional<DockerEvent> parse_docker_event(const json& event) {
  if (!event.is_object()) return std::nullopt;
  auto type = str(event, "Type");
  if (!type.empty() && type != "container") return std::nullopt;
  DockerEvent out;
  out.action = str(event, "Action");
  if (out.action.empty()) out.action = str(event, "status");
  // "exec_start: sh -c ..." and "health_status: healthy" carry details after a colon.
  if (auto colon = out.action.find(':'); colon != std::string::npos) {
    out.action = out.action.substr(0, colon);
  }
  if (auto actor = event.find("Actor"); actor != event.end() && actor->is_object()) {
    out.id = str(*actor, "ID");
    out.attributes = string_map(object_at(*actor, "Attributes"));
  }
  if (out.id.empty()) out.id = str(event, "id");
  if (out.id.empty()) return std::nullopt;
  if (auto it = out.attributes.find("name"); it != out.attributes.end()) out.name = it->second;
  // Docker says exitCode on "die"; Podman also sends containerExitCode, "0" on every event.
  auto code = out.attributes.find("exitCode");
  if (code == out.attributes.end() && out.action == "die") {
    code = out.attributes.find("containerExitCode");
  }
  if (auto it = code; it != out.attributes.end()) {
    try {
      out.exit_code = std::stoi(it->second);
    } catch (const std::exception&) {
      // not a number: leave it unknown
    }
  }
  if (auto it = event.find("timeNano"); it != event.end() && it->is_number()) {
    out.time_ns = it->get<std::int64_t>();
  } else if (auto t = event.find("time"); t != event.end() && t->is_number()) {
    out.time_ns = t->get<std::int64_t>() * 1'000'000'000;
  }
  return out;
}

Result<std::vector<LogFrame>> demux_log_stream(std::string_view bytes) {
  std::vector<LogFrame> frames;
  if (bytes.empty()) return frames;
  if (!looks_multiplexed(bytes)) {
    frames.push_back({1, std::string(bytes)});
    return frames;
  }
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (bytes.size() - i < 8) {
      return make_error(errc::corruption, "log stream: truncated frame header");
    }
    auto stream = static_cast<unsigned char>(bytes[i]);
    if (stream > 2 || bytes[i + 1] != 0 || bytes[i + 2] != 0 || bytes[i + 3] != 0) {
      return make_error(errc::corruption, "log stream: bad frame header");
    }
    std::uint32_t size = 0;
    for (int b = 4; b < 8; ++b) {
      size = (size << 8) | static_cast<unsigned char>(bytes[i + static_cast<std::size_t>(b)]);
    }
    i += 8;
    if (bytes.size() - i < size) return make_error(errc::corruption, "log stream: truncated frame");
    if (!frames.empty() && frames.back().stream == stream) {
      frames.back().text.append(bytes.substr(i, size));
    } else {
      frames.push_back({stream, std::string(bytes.substr(i, size))});
    }
    i += size;
  }
  return frames;
}

Error docker_error(int status, std::string_view body, std::string_view what) {
  std::string message =
      std::string(what) + ": " + engine_message(body) + " (HTTP " + std::to_string(status) + ")";
  switch (status) {
    case 400:
      return make_error(errc::invalid_argument, std::move(message));
    case 401:
      return make_error(errc::unauthorized, std::move(message));
    case 403:
      return make_error(errc::forbidden, std::move(message));
    case 404:
      return make_error(errc::not_found, std::move(message));
    case 409:
      return make_error(errc::already_exists, std::move(message));
    case 500: {
      // Podman 4.3 answers a name conflict with 500 and this cause where Docker answers 409.
      auto j = json::parse(body, nullptr, false);
      if (j.is_object() && str(j, "cause") == "that name is already in use") {
        return make_error(errc::already_exists, std::move(message));
      }
      return make_error(errc::unavailable, std::move(message));
    }
    default:
      return make_error(status >= 500 ? errc::unavailable : errc::io_error, std::move(message));
  }
}

// ---- the client ----------------------------------------------------------------------------

DockerClient::DockerClient(DockerOptions options) : options_(std::move(options)) {
  if (options_.socket_path.rfind("unix://", 0) == 0) {
    options_.socket_path = options_.socket_path.substr(7);
  }
}

std::string DockerClient::path(std::string_view rest) const {
  return "/v" + options_.api_version + std::string(rest);
}

namespace {

Result<net::HttpResponse> call(const DockerOptions& o, std::string method, std::string target,
                               std::string body = {}, int timeout_secs = 0) {
  net::HttpRequest req{std::move(method), std::move(target), std::move(body)};
  auto res = net::unix_http_request(o.socket_path, req,
                                    timeout_secs > 0 ? timeout_secs : o.request_timeout_secs);
  if (!res) {
    auto e = std::move(res).error();
    e.message = "container engine at " + o.socket_path + ": " + e.message;
    return e;
  }
  return res;
}

}  // namespace

Status DockerClient::ping() {
  auto res = call(options_, "GET", "/_ping");
  if (!res) return std::move(res).error();
  if (res->status != 200) return docker_error(res->status, res->body, "ping");
  return {};
}

Result<DockerVersion> DockerClient::version() {
  auto res = call(options_, "GET", path("/version"));
  if (!res) return std::move(res).error();
  if (res->status != 200) return docker_error(res->status, res->body, "version");
  auto j = json::parse(res->body, nullptr, false);
  if (!j.is_object()) return make_error(errc::io_error, "version: engine sent no JSON object");
  DockerVersion v{str(j, "Version"), str(j, "ApiVersion"), str(j, "Os"), str(j, "Arch"), false};
  if (auto comps = j.find("Components"); comps != j.end() && comps->is_array()) {
    for (const auto& c : *comps) {
      if (contains(str(c, "Name"), "podman")) v.podman = true;
    }
  }
  return v;
}

Status DockerClient::pull_image(const std::string& image, const std::optional<DockerAuth>& auth,
                                const std::function<bool()>& stop) {
  auto [from, tag] = split_image_reference(image);
  std::string target = path("/images/create?fromImage=" + crypto::url_encode(from) +
                            "&tag=" + crypto::url_encode(tag));
  net::HttpRequest req{"POST", target, ""};
  if (auth) req.headers.emplace_back("X-Registry-Auth", registry_auth_header(*auth));
  JsonStreamSplitter splitter(options_.max_stream_object_bytes);
  std::string error_text;
  Status stream_status;
  net::HttpStreamOptions stream_options;
  stream_options.header_timeout_secs = options_.pull_timeout_secs;
  stream_options.idle_timeout_secs = options_.pull_timeout_secs;
  stream_options.stop = stop;
  auto res = net::unix_http_stream(
      options_.socket_path, req,
      [&](std::string_view bytes) {
        stream_status = splitter.feed(bytes, [&](json value) {
          auto err = str(value, "error");
          if (err.empty()) {
            if (auto d = value.find("errorDetail"); d != value.end() && d->is_object()) {
              err = str(*d, "message");
            }
          }
          if (!err.empty() && error_text.empty()) error_text = err;
        });
        return stream_status.ok();
      },
      stream_options);
  std::string what = "pulling " + image;
  if (!res) {
    auto e = std::move(res).error();
    e.message = what + ": " + e.message;
    return e;
  }
  if (res->status < 200 || res->status >= 300) {
    // Docker answers a refused credential with 401/403/404/500 depending on the registry.
    auto e = docker_error(res->status, res->body, what);
    if (res->status == 500 &&
        (contains(res->body, "unauthorized") || contains(res->body, "authentication required"))) {
      e.code = errc::unauthorized;
    }
    return e;
  }
  if (!stream_status)
    return make_error(errc::io_error, what + ": " + stream_status.error().message);
  if (!error_text.empty()) {
    // Podman reports every pull failure as 200 plus an error object: classify by its words.
    errc code = errc::unavailable;
    if (contains(error_text, "unauthorized") || contains(error_text, "authentication required") ||
        contains(error_text, "401") || contains(error_text, "denied")) {
      code = errc::unauthorized;
    } else if (contains(error_text, "not found") || contains(error_text, "manifest unknown") ||
               contains(error_text, "name unknown") || contains(error_text, "404")) {
      code = errc::not_found;
    }
    return make_error(code, what + ": " + error_text);
  }
  return {};
}

Result<ImageInfo> DockerClient::inspect_image(const std::string& image) {
  auto res = call(options_, "GET", path("/images/" + crypto::url_encode(image) + "/json"));
  if (!res) return std::move(res).error();
  if (res->status != 200) return docker_error(res->status, res->body, "image " + image);
  auto j = json::parse(res->body, nullptr, false);
  if (!j.is_object()) return make_error(errc::io_error, "image " + image + ": no JSON object");
  ImageInfo info{str(j, "Id"), {}};
  if (auto tags = j.find("RepoTags"); tags != j.end() && tags->is_array()) {
    for (const auto& t : *tags) {
      if (t.is_string()) info.repo_tags.push_back(t.get<std::string>());
    }
  }
  return info;
}

Result<std::string> DockerClient::create_container(const std::string& name, const json& body) {
  auto res = call(options_, "POST", path("/containers/create?name=" + crypto::url_encode(name)),
                  body.dump());
  if (!res) return std::move(res).error();
  if (res->status != 201 && res->status != 200) {
    return docker_error(res->status, res->body, "creating container " + name);
  }
  auto j = json::parse(res->body, nullptr, false);
  auto id = j.is_object() ? str(j, "Id") : std::string{};
  if (id.empty()) return make_error(errc::io_error, "creating container " + name + ": no Id");
  return id;
}

Status DockerClient::start_container(const std::string& id) {
  auto res = call(options_, "POST", path("/containers/" + crypto::url_encode(id) + "/start"));
  if (!res) return std::move(res).error();
  if (res->status == 204 || res->status == 304 || res->status == 200) return {};
  return docker_error(res->status, res->body, "starting container " + id);
}

Status DockerClient::stop_container(const std::string& id, std::chrono::seconds grace) {
  auto secs = std::max<std::int64_t>(0, grace.count());
  auto res = call(options_, "POST",
                  path("/containers/" + crypto::url_encode(id) + "/stop?t=" + std::to_string(secs)),
                  {}, static_cast<int>(secs) + options_.request_timeout_secs);
  if (!res) return std::move(res).error();
  if (res->status == 204 || res->status == 304 || res->status == 200) return {};
  return docker_error(res->status, res->body, "stopping container " + id);
}

Status DockerClient::remove_container(const std::string& id, bool force) {
  auto res = call(options_, "DELETE",
                  path("/containers/" + crypto::url_encode(id) +
                       "?v=true&force=" + (force ? "true" : "false")));
  if (!res) return std::move(res).error();
  if (res->status == 204 || res->status == 200) return {};
  return docker_error(res->status, res->body, "removing container " + id);
}

Result<ContainerInfo> DockerClient::inspect_container(const std::string& id) {
  auto res = call(options_, "GET", path("/containers/" + crypto::url_encode(id) + "/json"));
  if (!res) return std::move(res).error();
  if (res->status != 200) return docker_error(res->status, res->body, "container " + id);
  auto j = json::parse(res->body, nullptr, false);
  if (!j.is_object()) return make_error(errc::io_error, "container " + id + ": no JSON object");
  ContainerInfo info;
  auto number = [](const json& o, const char* key) -> std::int64_t {
    auto it = o.find(key);
    return it != o.end() && it->is_number() ? it->get<std::int64_t>() : 0;
  };
  auto flag = [](const json& o, const char* key) {
    auto it = o.find(key);
    return it != o.end() && it->is_boolean() && it->get<bool>();
  };
  info.id = str(j, "Id");
  info.name = str(j, "Name");
  if (!info.name.empty() && info.name.front() == '/') info.name.erase(0, 1);
  info.image_id = str(j, "Image");
  const json config = object_at(j, "Config");
  info.image = str(config, "Image");
  info.labels = string_map(object_at(config, "Labels"));
  const json state = object_at(j, "State");
  info.status = str(state, "Status");
  info.running = flag(state, "Running");
  info.exit_code = static_cast<int>(number(state, "ExitCode"));
  info.pid = number(state, "Pid");
  info.oom_killed = flag(state, "OOMKilled");
  info.error = str(state, "Error");
  info.started_at_ms = rfc3339_to_ms(str(state, "StartedAt"));
  info.finished_at_ms = rfc3339_to_ms(str(state, "FinishedAt"));
  info.raw = std::move(j);
  return info;
}

Result<std::vector<ContainerSummary>> DockerClient::list_containers(
    const std::vector<std::string>& labels) {
  auto res =
      call(options_, "GET", path("/containers/json?all=true&filters=" + labels_filter(labels)));
  if (!res) return std::move(res).error();
  if (res->status != 200) return docker_error(res->status, res->body, "listing containers");
  auto j = json::parse(res->body, nullptr, false);
  if (!j.is_array()) return make_error(errc::io_error, "listing containers: no JSON array");
  std::vector<ContainerSummary> out;
  for (const auto& c : j) {
    if (!c.is_object()) continue;
    ContainerSummary s{str(c, "Id"), "", str(c, "Image"), str(c, "State"),
                       string_map(object_at(c, "Labels"))};
    if (auto names = c.find("Names");
        names != c.end() && names->is_array() && !names->empty() && (*names)[0].is_string()) {
      s.name = (*names)[0].get<std::string>();
      if (!s.name.empty() && s.name.front() == '/') s.name.erase(0, 1);
    }
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::string> DockerClient::logs(const std::string& id, const DockerLogOptions& log_options) {
  std::string target = "/containers/" + crypto::url_encode(id) + "/logs?stdout=true&stderr=true";
  if (log_options.tail) target += "&tail=" + std::to_string(*log_options.tail);
  if (log_options.since_secs > 0) target += "&since=" + std::to_string(log_options.since_secs);
  if (log_options.timestamps) target += "&timestamps=true";
  net::HttpRequest req{"GET", path(target), ""};
  std::size_t limit = options_.max_log_bytes;
  std::string pending;  // bytes of a frame not complete yet
  std::string text;     // decoded, newest `limit` bytes
  std::optional<bool> multiplexed;
  Status decode_status;
  net::HttpStreamOptions stream_options;
  stream_options.header_timeout_secs = options_.request_timeout_secs;
  stream_options.idle_timeout_secs = options_.request_timeout_secs;
  auto res = net::unix_http_stream(
      options_.socket_path, req,
      [&](std::string_view bytes) {
        pending.append(bytes);
        if (!multiplexed && pending.size() >= 8) multiplexed = looks_multiplexed(pending);
        if (multiplexed && !*multiplexed) {
          text += pending;
          pending.clear();
        } else if (multiplexed) {
          // Decode every complete frame; keep a partial one for the next chunk.
          std::size_t whole = 0;
          while (pending.size() - whole >= 8) {
            std::uint32_t size = 0;
            for (std::size_t b = 4; b < 8; ++b) {
              size = (size << 8) | static_cast<unsigned char>(pending[whole + b]);
            }
            if (pending.size() - whole - 8 < size) break;
            whole += 8 + size;
          }
          auto frames = demux_log_stream(std::string_view(pending).substr(0, whole));
          if (!frames) {
            decode_status = std::move(frames).error();
            return false;
          }
          for (auto& f : *frames) text += f.text;
          pending.erase(0, whole);
        }
        if (text.size() > limit) text.erase(0, text.size() - limit);
        return true;
      },
      stream_options);
  if (!res) return std::move(res).error();
  if (res->status != 200) return docker_error(res->status, res->body, "logs of " + id);
  if (!decode_status) return decode_status.error();
  if (!multiplexed)
    text += pending;  // fewer than 8 bytes in all: raw text
  else if (!pending.empty())
    return make_error(errc::corruption, "logs of " + id + ": truncated frame");
  if (text.size() > limit) text.erase(0, text.size() - limit);
  return text;
}

Status DockerClient::watch_events(const std::vector<std::string>& labels, std::int64_t since_secs,
                                  const std::function<bool(const DockerEvent&)>& on_event,
                                  const std::function<bool()>& stop) {
  std::string target = "/events?filters=" + labels_filter(labels, true);
  if (since_secs > 0) target += "&since=" + std::to_string(since_secs);
  net::HttpRequest req{"GET", path(target), ""};
  net::HttpStreamOptions stream_options;
  stream_options.header_timeout_secs = options_.request_timeout_secs;
  stream_options.stop = stop;
  JsonStreamSplitter splitter(options_.max_stream_object_bytes);
  Status stream_status;
  bool keep_going = true;
  auto res = net::unix_http_stream(
      options_.socket_path, req,
      [&](std::string_view bytes) {
        stream_status = splitter.feed(bytes, [&](json value) {
          if (!keep_going) return;
          if (auto e = parse_docker_event(value)) keep_going = on_event(*e);
        });
        return stream_status.ok() && keep_going;
      },
      stream_options);
  if (!res) {
    if (res.error().code == errc::cancelled) return {};
    auto e = std::move(res).error();
    e.message = "event stream: " + e.message;
    return e;
  }
  if (res->status != 200) return docker_error(res->status, res->body, "event stream");
  if (!stream_status) return stream_status;
  if (keep_going && !(stop && stop())) {
    return make_error(errc::unavailable, "event stream from " + options_.socket_path + " ended");
  }
  return {};
}

}  // namespace cairn::agent
