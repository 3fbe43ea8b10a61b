// Agent: the part of cairnd that plays edgeAgent (docs/agent.md). It takes deployments from any
// source through one path (deploy()), keeps the last good one on disk and runs it again at
// start, reconciles desired against actual through the module runtimes, applies restart
// policies with IoT Edge's back-off, keeps a module identity and a workload socket per module,
// and reports `$edgeAgent` reported properties.
//
// The agent does not include the hub: what it needs from it is AgentHost, which apps/cairnd
// implements.
//
// Thread-safety: the agent runs its own thread (its own io_context) so a slow runtime call never
// blocks the hub; the workload sockets run on a second thread of their own, so signing is never
// stuck behind a runtime call either. deploy(), handle_management() and stop() may be called from
// any thread; answers and callbacks run on the agent's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/manifest.hpp"
#include "agent/restart_policy.hpp"
#include "agent/runtime.hpp"
#include "agent/workload_api.hpp"
#include "net/asio.hpp"
#include "net/http.hpp"

namespace cairn::agent {

struct ModuleIdentity {
  std::string module_id;
  std::string key;  // primary key, base64
  std::string generation_id;
};

// What the agent needs from the rest of cairnd. Blocking calls are made from the agent's thread.
class AgentHost {
 public:
  virtual ~AgentHost() = default;
  // Creates the module's identity, or returns the existing one.
  virtual Result<ModuleIdentity> ensure_identity(const std::string& module) = 0;
  virtual Status remove_identity(const std::string& module) = 0;
  // "" if the $edgeHub desired properties are valid, else the problem. Any thread.
  virtual std::string validate_edgehub(const nlohmann::json& desired) = 0;
  // Applies validated routes and store settings live.
  virtual Status apply_edgehub(const nlohmann::json& desired) = 0;
  // A deployment's desired properties for a module (replace the twin's desired section).
  virtual void set_module_desired(const std::string& module, const nlohmann::json& desired) = 0;
  // A patch to the reported properties (null deletes) of the twin of `system_module`:
  // "$edgeAgent" (module state, lastDesiredStatus) or "$edgeHub" (lastDesiredVersion/Status of
  // the routes).
  virtual void report(const std::string& system_module, const nlohmann::json& patch) = 0;
};

struct AgentOptions {
  std::string state_dir;  // HOME/data/agent: deployment.json
  std::string mnt_dir;    // HOME/run/mnt: one workload socket per module
  std::string device_id;
  std::string iothub_hostname;
  std::string gateway_hostname;
  std::string trust_bundle_path;  // the edge CA, PEM
  std::string ca_key_path;        // its key: the workload API issues module certificates
  std::string log_level = "info";
  RestartSettings restart;
  std::chrono::milliseconds poll_interval{500};
  std::chrono::seconds stop_grace{10};
  // On a clean shutdown of cairnd, stop the modules (after kill -9 they keep running and are
  // adopted by the next start).
  bool stop_modules_on_exit = true;
};

// The result of a deployment: applied, or the problems (nothing applied).
struct DeployResult {
  bool applied = false;
  std::vector<ManifestProblem> problems;
  std::string error;  // a failure after validation (e.g. the disk)
};

class Agent {
 public:
  Agent(AgentOptions options, AgentHost& host, std::shared_ptr<ModuleRuntime> process_runtime,
        std::shared_ptr<ModuleRuntime> docker_runtime /* may be null */);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Starts the threads; runs the last good deployment from disk (if any), adopting modules
  // that are still running.
  Status start();
  void stop();

  // Validates and applies a whole manifest document; `done` runs on the agent's thread.
  void deploy(nlohmann::json document, std::string source, std::function<void(DeployResult)> done);
  // From the cloud: the $edgeAgent and $edgeHub twins' desired properties (with "$version").
  // A pair of versions already handled (a resync, a restart) only restores the reported
  // versions; an $edgeAgent desired section without properties (no deployment yet) or an
  // empty $edgeHub one (its patch has not arrived yet) is waited out. A refused deployment
  // changes nothing and is reported as lastDesiredStatus {400, the problems}.
  void deploy_twins(nlohmann::json edgeagent_desired, nlohmann::json edgehub_desired);

  // The agent's management API paths (docs/agent.md "Management API"), among them
  // GET /runtime/check (`cairn check`); false when `request` is not one of them.
  bool handle_management(const net::HttpRequest& request, net::HttpRespond& respond);

  // The $edgeAgent reported properties as last computed (tests, `cairn check`).
  nlohmann::json reported() const;

 private:
  struct Tracked {
    std::uint32_t restart_count = 0;
    std::int64_t last_restart_ms = 0;
    std::int64_t last_start_seen_ms = 0;
    bool held = false;  // stopped because the deployment said so: start again when it says run
    std::string note;   // a failure to prepare/create/start, or runtime notes
    RuntimeStatus status = RuntimeStatus::unknown;
    ModuleState state;
  };

  // `cloud_versions`: the ($edgeAgent, $edgeHub) desired versions of a deployment from the cloud.
  void apply(Deployment deployment, const std::string& source,
             std::function<void(DeployResult)> done,
             std::optional<std::pair<std::int64_t, std::int64_t>> cloud_versions = {});
  void reconcile();
  void schedule_poll();
  ModuleRuntime* runtime_for(const ModuleDesired& m);
  ModuleSpec spec_for(const ModuleDesired& m, const ModuleIdentity& id) const;
  Status ensure_workload(const std::string& name, const ModuleIdentity& id);
  void drop_module(ModuleRuntime& runtime, const std::string& name);
  // Whether the module's image is ready for `spec`; if not, its preparation is started (or
  // still runs) on pulls_, and reconcile() runs again when it ends. The process runtime's
  // (a file check) answers at once. An outcome is returned
  // once; the next call starts another preparation.
  std::optional<Status> prepared(ModuleRuntime& runtime, const ModuleSpec& spec);
  void report_state();
  void report_edgehub(std::int64_t version, int code, const std::string& description);
  void refused(const std::vector<ManifestProblem>& problems, const std::string& text);
  void save_desired_status();
  nlohmann::json module_json(const std::string& name);
  void manage(const net::HttpRequest& request, net::HttpRespond respond);
  // {"checks": [{id, status ok|warning|error, message}]}: engines reachable, images present,
  // modules healthy; each message says what to do when it is not ok.
  nlohmann::json runtime_checks();

  AgentOptions options_;
  AgentHost& host_;
  std::shared_ptr<ModuleRuntime> process_;
  std::shared_ptr<ModuleRuntime> docker_;
  asio::io_context io_;
  asio::io_context api_io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_, api_work_;
  std::thread thread_, api_thread_;
  // Image pulls (the docker runtime's prepare), kPullThreads at a time: a pull can take minutes
  // (or hang on a registry that does not answer), and meanwhile the agent's thread answers
  // management requests and looks after the other modules. Only with a docker runtime.
  static constexpr std::size_t kPullThreads = 3;
  std::optional<asio::thread_pool> pulls_;
  std::atomic<bool> stopping_{false};  // set by stop(): reconcile starts nothing more
  asio::steady_timer poll_timer_;

  std::optional<Deployment> deployment_;
  std::int64_t deployment_version_ = 0;  // lastDesiredVersion: the twin's $version or a count
  nlohmann::json last_desired_status_ = {{"code", 200}, {"description", ""}};
  // The ($edgeAgent, $edgeHub) desired versions last handled from the cloud (HOME/data/agent/
  // cloud.json): a later start applies the twins only if they moved on.
  std::optional<std::pair<std::int64_t, std::int64_t>> cloud_versions_;
  nlohmann::json last_hub_reported_;
  std::string reported_detail_ = "full";
  std::map<std::string, Tracked> tracked_;
  // A module's image being made available (or made available) for this configuration.
  struct Preparation {
    std::string config_hash;
    bool done = false;
    Status result;
  };
  std::map<std::string, Preparation> preparations_;             // agent thread
  std::map<const ModuleRuntime*, std::string> runtime_errors_;  // the last list() failure
  std::map<std::string, ModuleIdentity> identities_;
  std::map<std::string, std::shared_ptr<net::UnixHttpServer>> workload_servers_;  // api_io_
  std::string trust_bundle_;
  nlohmann::json last_reported_;  // the whole document as computed
  nlohmann::json last_sent_;      // as sent: fitted to kMaxReportedBytes
  mutable std::mutex reported_mutex_;
  nlohmann::json reported_snapshot_;
  std::shared_ptr<std::mutex> workload_mutex_ = std::make_shared<std::mutex>();
  std::shared_ptr<std::map<std::string, WorkloadModule>> workload_modules_ =
      std::make_shared<std::map<std::string, WorkloadModule>>();
};

// A JSON merge patch that turns `before` into `after` (removed keys become null).
nlohmann::json merge_diff(const nlohmann::json& before, const nlohmann::json& after);

// The most a whole $edgeAgent reported document may take, serialized: IoT Hub's 32 KiB limit on
// a reported section and on one patch (the first report is the whole document), less room for
// the versions and metadata the twin adds.
inline constexpr std::size_t kMaxReportedBytes = 30 * 1024;

// Makes an $edgeAgent reported document fit kMaxReportedBytes, in steps: "full" (as is),
// "compact" (per module: no settings.createOptions chunks and no env, which echo the desired
// properties), "minimal" (per module only version, status, runtimeStatus, exitCode,
// restartCount and a statusDescription of at most 128 characters). Returns the level used.
std::string fit_reported(nlohmann::json& reported, std::size_t max_bytes = kMaxReportedBytes);

}  // namespace cairn::agent
