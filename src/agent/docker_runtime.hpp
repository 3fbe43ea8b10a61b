// DockerRuntime: the `docker` module runtime (ModuleRuntime) on a Docker Engine API socket —
// Docker itself, or Podman's Docker-compatible service.
//
// A module is one container, named after the module (plus an optional prefix), created from
// the module's createOptions merged with what the agent adds (merge_create_options): the
// module's environment, its workload socket bind-mounted at the IoT Edge path, restart policy
// "no", and labels that find the container again after cairnd restarts:
//   net.cairn.owner        this cairnd home (DockerRuntimeOptions::owner): list() and every
//                          call only see containers carrying it, so a container of the same
//                          name made by someone else is never touched
//   net.cairn.module       the module name
//   net.cairn.version      the manifest's version
//   net.cairn.config-hash  ModuleSpec::config_hash (how the agent tells an adopted container
//                          is current without comparing normalised settings)
//   net.cairn.image        the image as the manifest names it
// Exits are noticed through the engine's event stream (a thread started by on_change(), which
// reconnects with back-off while the engine is away); the agent also polls list().
//
// Thread-safety: as ModuleRuntime says — one caller at a time for the blocking calls; the
// event thread only reads the options and calls the on_change callback. The destructor stops
// and joins the event thread (within about 200 ms).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "agent/docker_api.hpp"
#include "agent/runtime.hpp"

namespace cairn::agent {

struct DockerRuntimeOptions {
  DockerOptions docker;
  // Identifies this cairnd home on a shared engine (e.g. a hash of the home path). Required:
  // it is what adoption after a restart matches on.
  std::string owner;
  // Prepended to module names to make container names. Empty gives IoT Edge's names
  // ("filter"); a prefix lets two cairnd homes (or test runs) share one engine.
  std::string name_prefix;
};

class DockerRuntime final : public ModuleRuntime {
 public:
  static constexpr const char* kOwnerLabel = "net.cairn.owner";
  static constexpr const char* kModuleLabel = "net.cairn.module";
  static constexpr const char* kVersionLabel = "net.cairn.version";
  static constexpr const char* kConfigHashLabel = "net.cairn.config-hash";
  static constexpr const char* kImageLabel = "net.cairn.image";

  // REQUIRES: !options.owner.empty(). Does not contact the engine (it may start later).
  static Result<std::unique_ptr<DockerRuntime>> create(DockerRuntimeOptions options);
  ~DockerRuntime() override;
  DockerRuntime(const DockerRuntime&) = delete;
  DockerRuntime& operator=(const DockerRuntime&) = delete;

  RuntimeInfo info() override;
  // Pulls the image (pull policy on-create) with the spec's credentials. When the registry is
  // unreachable but the engine already has the image, that is a success: an edge device must
  // be able to recreate its modules offline. imagePullPolicy never: the image must be present.
  Status prepare(const ModuleSpec& spec) override;
  void abandon_preparations() override;
  Status image_present(const std::string& image) override;
  // The spec's workload socket must exist on the host (it is bind-mounted). Notes report a
  // createOptions RestartPolicy that was replaced.
  Result<CreateResult> create(const ModuleSpec& spec) override;
  Status start(const std::string& name) override;
  Status stop(const std::string& name, std::chrono::seconds grace) override;
  Status remove(const std::string& name) override;
  Result<ModuleState> inspect(const std::string& name) override;
  Result<std::vector<ModuleState>> list() override;
  Result<std::string> logs(const std::string& name, const LogOptions& options) override;
  // The pid is in the container's cgroup, or in its own pid namespace.
  bool owns_process(const std::string& name, std::int64_t pid) override;
  // Starts the event thread on the first call.
  void on_change(std::function<void(const std::string& name)> changed) override;

  // The container-create body create() sends for `spec` (for tests and `cairn check`).
  Result<nlohmann::json> container_body(const ModuleSpec& spec) const;
  // Differences between what `spec` asks and what the engine reports for the module's
  // container (create_options_drift); empty when it matches.
  Result<std::vector<std::string>> drift(const ModuleSpec& spec);
  DockerClient& client() { return client_; }

 private:
  explicit DockerRuntime(DockerRuntimeOptions options);
  std::string container_name(const std::string& module) const;
  // The module's container, checked to carry this home's owner label.
  Result<ContainerInfo> find(const std::string& module);
  ModuleState to_state(const ContainerInfo& info) const;
  void watch_loop();

  DockerRuntimeOptions options_;
  DockerClient client_;
  std::mutex changed_mutex_;
  std::function<void(const std::string&)> changed_;  // guarded by changed_mutex_
  std::atomic<bool> stopping_{false};
  std::atomic<bool> preparations_abandoned_{false};
  std::thread watcher_;
};

}  // namespace cairn::agent
