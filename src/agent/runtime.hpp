// ModuleRuntime: what the agent needs from a module runtime backend (docs/agent.md
// "Runtimes"). Two implement it: the embedded `process` runtime (process_runtime.hpp) and the
// Docker Engine API (docker_runtime.hpp).
//
// The agent owns restart policy, back-off and desired-vs-actual decisions; a runtime only does
// what it is told, reports what it sees, and never restarts a module by itself (a container is
// created with restart policy "no").
//
// Module names are the manifest's module names without the leading '$' of system modules
// ("edgeHub", "filter"). A runtime only lists and touches modules it created for this cairnd
// home (docker: an owner label; process: its state directory), so a restarted cairnd adopts
// exactly its own modules.
//
// Thread-safety: every call is blocking and may take seconds (an image pull: minutes); the
// agent makes them from its own thread, never from the hub's io thread, and never two at once
// on one runtime. `on_change` callbacks may run on any thread and must only post/queue.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cairn::agent {

// settings.createOptions etc. from `manifest.hpp`, resolved for one module.
enum class ImagePullPolicy { on_create, never };

struct RegistryCredential {
  std::string address;  // "myacr.azurecr.io", "127.0.0.1:5000"
  std::string username;
  std::string password;
};

struct ModuleSpec {
  std::string name;     // module id without '$' ("edgeHub", "filter")
  std::string image;    // settings.image as given (tag defaulted to ":latest" for docker)
  std::string version;  // the manifest's free-form version, reported back
  // The parsed createOptions (chunks joined): a Docker ContainerCreate body; an empty object
  // when the manifest has none. The process runtime reads Cmd, Entrypoint, WorkingDir,
  // HostConfig.Memory and HostConfig.NanoCpus from it and reports the rest as ignored.
  nlohmann::json create_options = nlohmann::json::object();
  // The whole environment in order: the manifest's env first, then the IoT Edge set
  // (IOTEDGE_WORKLOADURI, IOTEDGE_MODULEID, ...). Later duplicates do not override earlier ones.
  std::vector<std::pair<std::string, std::string>> env;
  ImagePullPolicy pull_policy = ImagePullPolicy::on_create;
  // The credential whose address matches the image's registry, if the manifest has one.
  std::optional<RegistryCredential> credentials;
  // Host path of this module's workload socket (HOME/run/mnt/NAME.sock) and where the module
  // sees it (docker bind-mounts it there; the process runtime uses the host path directly, so
  // the two are equal for it).
  std::string workload_socket;
  std::string workload_mount_path = "/var/run/iotedge/workload.sock";
  // A digest of everything whose change requires recreating the module (image, version,
  // createOptions, env). The runtime stores it with the module and returns it in
  // ModuleState::config_hash, so that after a restart of cairnd the agent can tell whether an
  // adopted module still matches the deployment without comparing normalised settings.
  std::string config_hash;
};

// PROTOCOL runtimeStatus values (docs/agent.md "Reported properties").
enum class RuntimeStatus { unknown, backoff, running, unhealthy, stopped, failed, dead };
inline const char* to_string(RuntimeStatus s) noexcept {
  switch (s) {
    case RuntimeStatus::backoff:
      return "backoff";
    case RuntimeStatus::running:
      return "running";
    case RuntimeStatus::unhealthy:
      return "unhealthy";
    case RuntimeStatus::stopped:
      return "stopped";
    case RuntimeStatus::failed:
      return "failed";
    case RuntimeStatus::dead:
      return "dead";
    case RuntimeStatus::unknown:
      break;
  }
  return "unknown";
}

struct ModuleState {
  std::string name;
  // Runtime-specific id: the container id, or "pid:starttime" for a process.
  std::string id;
  RuntimeStatus status = RuntimeStatus::unknown;  // never backoff: that is the agent's
  int exit_code = 0;                              // meaningful once it has exited
  std::int64_t pid = 0;                           // main process id on the host; 0 when none
  std::int64_t started_at_ms = 0;                 // Unix ms; 0 = never started
  std::int64_t exited_at_ms = 0;                  // Unix ms; 0 = has not exited
  std::string description;  // "running", "exited with 3", "killed by signal 9"
  std::string image;        // image the module was created from
  std::string image_hash;   // "sha256:..." when the runtime knows one
  std::string config_hash;  // ModuleSpec::config_hash given at create
};

struct CreateResult {
  std::string id;
  // Settings the runtime could not honour, one sentence each ("HostConfig.Memory ignored:
  // cgroup v2 memory controller not delegated here"). Reported, not fatal.
  std::vector<std::string> notes;
};

struct LogOptions {
  std::optional<std::size_t> tail;  // last N lines; none = all that is kept
  std::int64_t since_ms = 0;        // Unix ms; lines written before are skipped (0 = all)
  bool timestamps = false;          // prefix each line with its RFC 3339 time when known
};

struct RuntimeInfo {
  std::string type;     // "process" or "docker"
  std::string version;  // engine version ("4.3.1"); cairn's own for process
  bool reachable = true;
  std::string detail;  // what failed, or notes ("cgroup v2 limits available")
};

class ModuleRuntime {
 public:
  virtual ~ModuleRuntime() = default;

  virtual RuntimeInfo info() = 0;

  // Makes the image available: pull it (docker, per spec.pull_policy and spec.credentials),
  // or check the executable exists (process). errc::not_found for a missing image or file,
  // errc::unauthorized for a refused credential, errc::unavailable for an unreachable engine.
  virtual Status prepare(const ModuleSpec& spec) = 0;
  // For shutdown, from any thread: prepare() calls under way end as soon as they can (a pull
  // stops within a fraction of a second) with errc::cancelled, and so do later ones.
  virtual void abandon_preparations() {}
  // Whether the image is here without fetching it (`cairn check`): the engine has the image
  // (docker), or the executable exists (process). errc::not_found when it is not,
  // errc::unavailable for an unreachable engine.
  virtual Status image_present(const std::string& image) = 0;
  // Creates the module, not started. errc::already_exists if one by that name exists.
  virtual Result<CreateResult> create(const ModuleSpec& spec) = 0;
  // Starts a created or exited module. Starting a running module is a success.
  virtual Status start(const std::string& name) = 0;
  // SIGTERM (docker: stop), then SIGKILL after `grace`. Stopping a stopped module is a success.
  virtual Status stop(const std::string& name, std::chrono::seconds grace) = 0;
  // Removes a stopped module and what the runtime keeps for it (a running one is killed first).
  // errc::not_found if there is none.
  virtual Status remove(const std::string& name) = 0;
  // errc::not_found if the module does not exist.
  virtual Result<ModuleState> inspect(const std::string& name) = 0;
  // Every module this runtime created for this cairnd home, running or not.
  virtual Result<std::vector<ModuleState>> list() = 0;
  // The module's stdout/stderr as text, oldest first.
  virtual Result<std::string> logs(const std::string& name, const LogOptions& options) = 0;
  // True if host process `pid` runs inside module `name` (its process group or container):
  // the workload API's check of the caller's SO_PEERCRED pid. Unlike the other calls it is made
  // from the workload API's thread, concurrently with them: answer from state kept in memory or
  // /proc (docker: /proc/PID/cgroup naming the container id), never from a slow engine call.
  virtual bool owns_process(const std::string& name, std::int64_t pid) = 0;
  // `changed(name)` runs whenever the runtime notices a module changed state (an exit), from
  // any thread; it must not call on_change. Once on_change returns, the callback it replaced is
  // not running and never runs again. Optional: the agent also polls with list().
  virtual void on_change(std::function<void(const std::string& name)> changed) = 0;
};

}  // namespace cairn::agent
