// ProcessRuntime: modules as native processes, no container engine (docs/agent.md "The process
// runtime").
//
// The image names the executable: an absolute path or a file:// URL. argv is the executable,
// then createOptions.Entrypoint, then createOptions.Cmd. The environment is the spec's (the
// manifest's env, createOptions.Env, then the IoT Edge set). Each module gets ROOT/NAME/:
//   module.json   what create() was given (argv, env, config hash, notes)
//   process.json  the running process: pid, its start time in clock ticks since boot
//                 (/proc/PID/stat field 22) and the boot id, so a pid reused after the module
//                 died, or after a reboot, is never taken for the module
//   exit.json     how it last ended
//   work/         its working directory (unless createOptions.WorkingDir names another)
//   output.log    stdout and stderr, opened O_APPEND by the module itself, so the module keeps
//                 writing while cairnd is down; rotated by copy-and-truncate to output.log.1 once
//                 it passes `max_log_bytes` (both files bounded: at most 2 x max_log_bytes, plus
//                 what is written between two rotation checks)
// A module is its own session and process group (setsid): stop signals the group, SIGTERM then
// SIGKILL after the grace period. Because state lives on disk, a cairnd restarted after
// `kill -9` finds its running modules again with list() and adopts them.
//
// createOptions.HostConfig.Memory and NanoCpus become cgroup v2 limits (memory.max, cpu.max) in a
// child cgroup of cairnd's own, when that cgroup is writable and delegates the controllers;
// otherwise create() returns a note saying the limit is ignored and why.
//
// Thread-safety: the ModuleRuntime calls are made from one thread at a time; owns_process may
// be called from any thread concurrently.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "agent/runtime.hpp"

namespace cairn::agent {

struct ProcessRuntimeOptions {
  std::string root;  // HOME/modules
  // Each of output.log and output.log.1 is rotated past this size.
  std::size_t max_log_bytes = 1024 * 1024;
};

class ProcessRuntime : public ModuleRuntime {
 public:
  explicit ProcessRuntime(ProcessRuntimeOptions options);
  ~ProcessRuntime() override;

  RuntimeInfo info() override;
  Status prepare(const ModuleSpec& spec) override;
  Status image_present(const std::string& image) override;
  Result<CreateResult> create(const ModuleSpec& spec) override;
  Status start(const std::string& name) override;
  Status stop(const std::string& name, std::chrono::seconds grace) override;
  Status remove(const std::string& name) override;
  Result<ModuleState> inspect(const std::string& name) override;
  Result<std::vector<ModuleState>> list() override;
  Result<std::string> logs(const std::string& name, const LogOptions& options) override;
  bool owns_process(const std::string& name, std::int64_t pid) override;
  void on_change(std::function<void(const std::string& name)> changed) override;

  // The executable an image names ("/usr/bin/x" or "file:///usr/bin/x"), or an error.
  static Result<std::string> executable(const std::string& image);

 private:
  std::string dir(const std::string& name) const { return options_.root + "/" + name; }
  // Reaps or re-checks the module's process and records an exit; returns its pid if alive.
  std::int64_t alive_pid(const std::string& name);
  void rotate_log(const std::string& name);

  ProcessRuntimeOptions options_;
  std::mutex mutex_;                             // guards running_
  std::map<std::string, std::int64_t> running_;  // name -> pid of live modules
  std::map<std::string, bool> stopping_;         // stop() in progress: exit means "stopped"
  std::mutex changed_mutex_;
  std::function<void(const std::string&)> changed_;  // guarded by changed_mutex_
};

}  // namespace cairn::agent
