#include "agent/docker_runtime.hpp"

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>

#include "core/log.hpp"
#include "core/thread_name.hpp"
#include <sys/stat.h>

namespace cairn::agent {
namespace {

using nlohmann::json;

constexpr std::string_view kLog = "docker";

std::string describe_exit(int code) {
  // Engines report a signal death as 128 + signal (SIGKILL after a stop's grace: 137).
  if (code > 128 && code < 128 + 65) {
    return "exited with " + std::to_string(code) + " (killed by signal " +
           std::to_string(code - 128) + ")";
  }
  return "exited with " + std::to_string(code);
}

// Identity of a process's pid namespace, "" when unreadable (gone, or not ours to see).
std::string pid_namespace(std::int64_t pid) {
  struct stat st {};
  std::string path = pid > 0 ? "/proc/" + std::to_string(pid) + "/ns/pid" : "/proc/self/ns/pid";
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

}  // namespace

Result<std::unique_ptr<DockerRuntime>> DockerRuntime::create(DockerRuntimeOptions options) {
  if (options.owner.empty()) {
    return make_error(errc::invalid_argument, "docker runtime: an owner label value is required");
  }
  return std::unique_ptr<DockerRuntime>(new DockerRuntime(std::move(options)));
}

DockerRuntime::DockerRuntime(DockerRuntimeOptions options)
    : options_(std::move(options)), client_(options_.docker) {}

DockerRuntime::~DockerRuntime() {
  stopping_ = true;
  if (watcher_.joinable()) watcher_.join();
}

std::string DockerRuntime::container_name(const std::string& module) const {
  return options_.name_prefix + module;
}

RuntimeInfo DockerRuntime::info() {
  RuntimeInfo out;
  out.type = "docker";
  auto v = client_.version();
  if (!v) {
    out.reachable = false;
    out.detail = v.error().message;
    return out;
  }
  out.version = v->version;
  out.detail = std::string(v->podman ? "Podman" : "Docker") + " " + v->version + " (API " +
               v->api_version + ") at " + client_.options().socket_path;
  return out;
}

Status DockerRuntime::image_present(const std::string& image) {
  auto present = client_.inspect_image(normalize_image_name(image));
  if (!present) return std::move(present).error();
  return {};
}

Status DockerRuntime::prepare(const ModuleSpec& spec) {
  std::string image = normalize_image_name(spec.image);
  if (spec.pull_policy == ImagePullPolicy::never) {
    auto present = client_.inspect_image(image);
    if (!present) {
      if (present.error().code == errc::not_found) {
        return make_error(errc::not_found, "module " + spec.name + ": image " + image +
                                               " is not on the engine and imagePullPolicy is "
                                               "never");
      }
      return std::move(present).error();
    }
    return {};
  }
  std::optional<DockerAuth> auth;
  if (spec.credentials) {
    auth = DockerAuth{spec.credentials->address, spec.credentials->username,
                      spec.credentials->password};
  }
  auto pulled = client_.pull_image(image, auth, [this] { return preparations_abandoned_.load(); });
  if (pulled) return {};
  if (pulled.error().code == errc::unavailable && client_.inspect_image(image).ok()) {
    log::warn(kLog, "module={} pull of {} failed, using the image already present: {}", spec.name,
              image, pulled.error().message);
    return {};
  }
  auto e = std::move(pulled).error();
  e.message = "module " + spec.name + ": " + e.message;
  return e;
}

void DockerRuntime::abandon_preparations() { preparations_abandoned_ = true; }

Result<json> DockerRuntime::container_body(const ModuleSpec& spec) const {
  ContainerAdditions add;
  add.image = normalize_image_name(spec.image);
  add.env = spec.env;
  add.labels = {{kOwnerLabel, options_.owner},
                {kModuleLabel, spec.name},
                {kVersionLabel, spec.version},
                {kConfigHashLabel, spec.config_hash},
                {kImageLabel, spec.image}};
  if (!spec.workload_socket.empty()) {
    add.binds.push_back(spec.workload_socket + ":" + spec.workload_mount_path);
  }
  auto body = merge_create_options(spec.create_options, add);
  if (!body) {
    auto e = std::move(body).error();
    e.message = "module " + spec.name + ": " + e.message;
    return e;
  }
  return body;
}

Result<CreateResult> DockerRuntime::create(const ModuleSpec& spec) {
  auto body = container_body(spec);
  if (!body) return std::move(body).error();
  CreateResult out;
  if (auto host = spec.create_options.find("HostConfig");
      host != spec.create_options.end() && host->is_object()) {
    auto policy = host->find("RestartPolicy");
    std::string asked;
    if (policy != host->end() && policy->is_object()) {
      auto name = policy->find("Name");
      if (name != policy->end() && name->is_string()) asked = name->get<std::string>();
    }
    if (!asked.empty() && asked != "no") {
      out.notes.push_back(
          "HostConfig.RestartPolicy ignored: the agent restarts modules "
          "(restartPolicy), the engine never does");
    }
  }
  auto id = client_.create_container(container_name(spec.name), *body);
  if (!id) {
    auto e = std::move(id).error();
    e.message = "module " + spec.name + ": " + e.message;
    return e;
  }
  out.id = std::move(*id);
  log::info(kLog, "module={} container={} created from {}", spec.name, out.id.substr(0, 12),
            spec.image);
  return out;
}

Result<ContainerInfo> DockerRuntime::find(const std::string& module) {
  auto info = client_.inspect_container(container_name(module));
  if (!info) return std::move(info).error();
  auto owner = info->labels.find(kOwnerLabel);
  if (owner == info->labels.end() || owner->second != options_.owner) {
    return make_error(errc::not_found, "module " + module + ": container " +
                                           container_name(module) +
                                           " exists but was not created by this cairnd home");
  }
  return info;
}

Status DockerRuntime::start(const std::string& name) {
  auto c = find(name);
  if (!c) return std::move(c).error();
  return client_.start_container(c->id);
}

Status DockerRuntime::stop(const std::string& name, std::chrono::seconds grace) {
  auto c = find(name);
  if (!c) return std::move(c).error();
  if (!c->running) return {};
  return client_.stop_container(c->id, grace);
}

Status DockerRuntime::remove(const std::string& name) {
  auto c = find(name);
  if (!c) return std::move(c).error();
  auto removed = client_.remove_container(c->id, true);
  if (removed) log::info(kLog, "module={} container={} removed", name, c->id.substr(0, 12));
  return removed;
}

ModuleState DockerRuntime::to_state(const ContainerInfo& info) const {
  ModuleState s;
  auto label = [&](const char* key) {
    auto it = info.labels.find(key);
    return it == info.labels.end() ? std::string{} : it->second;
  };
  s.name = label(kModuleLabel);
  if (s.name.empty())
    s.name = info.name.substr(std::min(info.name.size(), options_.name_prefix.size()));
  s.id = info.id;
  s.exit_code = info.exit_code;
  s.pid = info.running ? info.pid : 0;
  s.started_at_ms = info.started_at_ms;
  s.image = label(kImageLabel).empty() ? info.image : label(kImageLabel);
  s.image_hash = info.image_id;
  s.config_hash = label(kConfigHashLabel);
  if (info.running || info.status == "running" || info.status == "restarting") {
    s.status = RuntimeStatus::running;
    s.description = "running";
  } else if (info.status == "created" || info.status == "configured" || info.started_at_ms == 0) {
    s.status = RuntimeStatus::stopped;
    s.description = "created";
  } else if (info.status == "dead") {
    s.status = RuntimeStatus::dead;
    s.description = "dead";
    s.exited_at_ms = info.finished_at_ms;
  } else {
    s.exited_at_ms = info.finished_at_ms;
    s.status = info.exit_code == 0 ? RuntimeStatus::stopped : RuntimeStatus::failed;
    s.description = describe_exit(info.exit_code);
    if (info.oom_killed) s.description += ", out of memory";
    if (!info.error.empty()) s.description += ": " + info.error;
  }
  return s;
}

Result<ModuleState> DockerRuntime::inspect(const std::string& name) {
  auto c = find(name);
  if (!c) return std::move(c).error();
  return to_state(*c);
}

Result<std::vector<ModuleState>> DockerRuntime::list() {
  auto summaries = client_.list_containers({std::string(kOwnerLabel) + "=" + options_.owner});
  if (!summaries) return std::move(summaries).error();
  std::vector<ModuleState> out;
  for (const auto& s : *summaries) {
    auto info = client_.inspect_container(s.id);
    if (!info) {
      if (info.error().code == errc::not_found) continue;  // removed meanwhile
      return std::move(info).error();
    }
    out.push_back(to_state(*info));
  }
  return out;
}

Result<std::string> DockerRuntime::logs(const std::string& name, const LogOptions& options) {
  auto c = find(name);
  if (!c) return std::move(c).error();
  DockerLogOptions o;
  o.tail = options.tail;
  o.since_secs = options.since_ms > 0 ? options.since_ms / 1000 : 0;
  o.timestamps = options.timestamps;
  return client_.logs(c->id, o);
}

bool DockerRuntime::owns_process(const std::string& name, std::int64_t pid) {
  if (pid <= 0) return false;
  auto c = find(name);
  if (!c || !c->running || c->pid <= 0) return false;
  // The cgroup path names the container id under Docker and Podman alike (any driver).
  std::ifstream cgroup("/proc/" + std::to_string(pid) + "/cgroup");
  std::stringstream text;
  text << cgroup.rdbuf();
  if (text.str().find(c->id) != std::string::npos) return true;
  // Otherwise the pid namespace, unless the container shares the host's.
  auto container_ns = pid_namespace(c->pid);
  return !container_ns.empty() && container_ns != pid_namespace(0) &&
         container_ns == pid_namespace(pid);
}

void DockerRuntime::on_change(std::function<void(const std::string& name)> changed) {
  {
    std::lock_guard lock(changed_mutex_);
    changed_ = std::move(changed);
  }
  if (!watcher_.joinable()) watcher_ = std::thread([this] { watch_loop(); });
}

void DockerRuntime::watch_loop() {
  name_this_thread("docker-events");
  DockerClient client(options_.docker);
  auto backoff = std::chrono::milliseconds(500);
  std::int64_t since = 0;
  auto stop = [this] { return stopping_.load(); };
  while (!stopping_) {
    auto connected_at = std::chrono::steady_clock::now();
    auto now_secs = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    // Every container's events, not only those with our owner label: Podman 4.3's events carry
    // no container labels, so a label filter would drop them all. Events are matched to modules
    // below; one for a foreign container of the same name only causes an extra look.
    auto status = client.watch_events(
        {}, since,
        [this](const DockerEvent& e) {
          // State changes only (Docker's names, and Podman's where they differ), not exec,
          // attach, init or cleanup.
          static const std::set<std::string, std::less<>> kStateChanges = {
              "create", "start",   "die",    "died", "stop",
              "kill",   "destroy", "remove", "oom",  "restart"};
          if (!kStateChanges.contains(e.action)) return true;
          // Engines copy the container's labels into the event; without them, the name.
          std::string module;
          if (auto it = e.attributes.find(kModuleLabel); it != e.attributes.end()) {
            module = it->second;
          } else if (e.name.size() > options_.name_prefix.size() &&
                     e.name.compare(0, options_.name_prefix.size(), options_.name_prefix) == 0) {
            module = e.name.substr(options_.name_prefix.size());
          }
          if (module.empty()) return true;
          log::debug(kLog, "module={} event={}", module, e.action);
          // Called under the lock, so once on_change() returns the old callback is not running
          // and never runs again (its captures may then go away).
          std::lock_guard lock(changed_mutex_);
          if (changed_) changed_(module);
          return true;
        },
        stop);
    if (stopping_) break;
    // Resume from where the broken stream left off, so an exit during the gap is not missed.
    since = now_secs;
    if (!status) log::warn(kLog, "event stream: {}", status.error().message);
    if (std::chrono::steady_clock::now() - connected_at > std::chrono::seconds(30)) {
      backoff = std::chrono::milliseconds(500);
    }
    auto until = std::chrono::steady_clock::now() + backoff;
    while (!stopping_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
  }
}

Result<std::vector<std::string>> DockerRuntime::drift(const ModuleSpec& spec) {
  auto body = container_body(spec);
  if (!body) return std::move(body).error();
  auto c = find(spec.name);
  if (!c) return std::move(c).error();
  return create_options_drift(*body, c->raw);
}

}  // namespace cairn::agent
