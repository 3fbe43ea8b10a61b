#include "agent/agent.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <future>

#include <fmt/format.h>

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"
#include "twin/twin.hpp"
#include <sys/stat.h>

namespace cairn::agent {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kLog = "agent";

std::string iso_or_epoch(std::int64_t ms) { return format_iso8601(ms > 0 ? ms : 0); }

// dump_json never throws: a parser's message may quote a partial UTF-8 sequence of the input.
net::HttpResponse json_response(int status, const json& body) {
  return {status, twin::dump_json(body)};
}
net::HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, {{"message", message}});
}

void respond_on(net::HttpRespond& respond, net::HttpResponse response) {
  respond(std::move(response));
}

// A twin string holds at most 4096 bytes; the problems of a refused deployment are cut well
// below that (at a UTF-8 character boundary) so the report itself is never refused.
constexpr std::size_t kMaxDescriptionBytes = 2048;

std::string cut_description(std::string text) {
  if (text.size() <= kMaxDescriptionBytes) return text;
  std::size_t end = kMaxDescriptionBytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  text.resize(end);
  return text + " ... (cut: `cairnd` logs every problem)";
}

std::int64_t desired_version(const json& desired) {
  auto v = desired.is_object() ? desired.find("$version") : desired.end();
  return v != desired.end() && v->is_number_integer() ? v->get<std::int64_t>() : 0;
}

bool has_properties(const json& desired) {
  if (!desired.is_object()) return false;
  for (const auto& [key, value] : desired.items()) {
    if (!key.starts_with("$")) return true;
  }
  return false;
}

}  // namespace

std::string fit_reported(json& reported, std::size_t max_bytes) {
  auto fits = [&] { return twin::dump_json(reported).size() <= max_bytes; };
  if (fits()) return "full";
  auto* modules = reported.contains("modules") && reported["modules"].is_object()
                      ? &reported["modules"]
                      : nullptr;
  if (modules != nullptr) {
    for (auto& [name, m] : modules->items()) {
      if (!m.is_object()) continue;
      m.erase("env");
      if (auto settings = m.find("settings"); settings != m.end() && settings->is_object()) {
        for (auto k = settings->begin(); k != settings->end();) {
          std::string key = k.key();
          for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          k = key.starts_with("createoptions") ? settings->erase(k) : std::next(k);
        }
      }
    }
    if (fits()) return "compact";
    for (auto& [name, m] : modules->items()) {
      if (!m.is_object()) continue;
      json kept = json::object();
      for (const char* key : {"version", "status", "runtimeStatus", "exitCode", "restartCount"}) {
        if (m.contains(key)) kept[key] = m[key];
      }
      std::string description = m.value("statusDescription", "");
      if (description.size() > 128) {
        std::size_t end = 128;
        while (end > 0 && (static_cast<unsigned char>(description[end]) & 0xC0) == 0x80) --end;
        description.resize(end);
      }
      kept["statusDescription"] = description;
      m = std::move(kept);
    }
    if (fits()) return "minimal";
  }
  // Nothing smaller keeps every module: send the per-module state without the settings
  // echoes of the system modules and runtime too.
  reported.erase("runtime");
  reported.erase("systemModules");
  return "minimal";
}

json merge_diff(const json& before, const json& after) {
  if (!before.is_object() || !after.is_object()) return after;
  json patch = json::object();
  for (const auto& [key, value] : before.items()) {
    if (!after.contains(key)) patch[key] = nullptr;
  }
  for (const auto& [key, value] : after.items()) {
    auto it = before.find(key);
    if (it == before.end()) {
      patch[key] = value;
    } else if (*it != value) {
      patch[key] = (it->is_object() && value.is_object()) ? merge_diff(*it, value) : value;
    }
  }
  return patch;
}

Agent::Agent(AgentOptions options, AgentHost& host, std::shared_ptr<ModuleRuntime> process_runtime,
             std::shared_ptr<ModuleRuntime> docker_runtime)
    : options_(std::move(options)),
      host_(host),
      process_(std::move(process_runtime)),
      docker_(std::move(docker_runtime)),
      io_(1),
      api_io_(1),
      poll_timer_(io_) {}

Agent::~Agent() { stop(); }

Status Agent::start() {
  std::error_code ec;
  fs::create_directories(options_.state_dir, ec);
  fs::create_directories(options_.mnt_dir, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create " + options_.mnt_dir + ": " + ec.message());
  trust_bundle_ = read_file(options_.trust_bundle_path).value_or("");
  work_.emplace(io_.get_executor());
  api_work_.emplace(api_io_.get_executor());
  auto run = [](asio::io_context& io, const char* what) {
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        // No handler may take the agent down: log and keep serving.
        log::error(kLog, "{} handler failed: {}", what, e.what());
      }
    }
  };
  if (docker_) pulls_.emplace(kPullThreads);
  thread_ = std::thread([this, run] {
    name_this_thread("agent");
    run(io_, "agent");
  });
  api_thread_ = std::thread([this, run] {
    name_this_thread("workload-api");
    run(api_io_, "workload API");
  });
  asio::post(io_, [this] {
    // What the last deployment was reported as (lastDesiredVersion/Status, and the twin
    // versions last handled from the cloud) survives a restart with it.
    if (auto text = read_file(options_.state_dir + "/desired-status.json").value_or("");
        !text.empty()) {
      auto j = json::parse(text, nullptr, false);
      if (j.is_object()) {
        deployment_version_ = j.value("lastDesiredVersion", std::int64_t{0});
        if (j.contains("lastDesiredStatus") && j["lastDesiredStatus"].is_object()) {
          last_desired_status_ = j["lastDesiredStatus"];
        }
        if (auto c = j.find("cloudVersions"); c != j.end() && c->is_array() && c->size() == 2 &&
                                              (*c)[0].is_number_integer() &&
                                              (*c)[1].is_number_integer()) {
          cloud_versions_ = {(*c)[0].get<std::int64_t>(), (*c)[1].get<std::int64_t>()};
        }
      }
    }
    // The last good deployment runs again after a restart, with or without a network.
    auto path = options_.state_dir + "/deployment.json";
    if (fs::exists(path)) {
      auto outcome =
          read_manifest(path, [this](const json& d) { return host_.validate_edgehub(d); });
      if (outcome.deployment) {
        log::info(kLog, "running the last good deployment from {}", path);
        apply(std::move(*outcome.deployment), "disk", {});
      } else {
        log::error(kLog, "{} is not a valid deployment, ignored:\n{}", path, outcome.describe());
      }
    }
    schedule_poll();
  });
  return {};
}

void Agent::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;  // no reconcile pass starts a module from here on
  // A pull can take minutes; a supervisor stopping cairnd should not wait for it.
  if (docker_) docker_->abandon_preparations();
  std::promise<void> done;
  asio::post(io_, [this, &done] {
    poll_timer_.cancel();
    if (options_.stop_modules_on_exit) {
      for (auto* rt : {process_.get(), docker_.get()}) {
        if (!rt) continue;
        auto list = rt->list();
        if (!list) continue;
        for (const auto& m : *list) {
          if (m.status == RuntimeStatus::running) (void)rt->stop(m.name, options_.stop_grace);
        }
      }
    }
    done.set_value();
  });
  done.get_future().wait();
  // The agent thread first: a handler still running there may wait on the workload thread
  // (opening or closing a module's socket), which must therefore still be running.
  work_.reset();
  io_.stop();
  thread_.join();
  if (pulls_) {
    // A pull under way ends within its poll interval (abandoned above); what it posts back is
    // never run.
    pulls_->stop();
    pulls_->join();
  }
  std::promise<void> closed;
  asio::post(api_io_, [this, &closed] {
    for (auto& [name, server] : workload_servers_) server->stop();
    workload_servers_.clear();
    closed.set_value();
  });
  closed.get_future().wait();
  api_work_.reset();
  api_io_.stop();
  api_thread_.join();
}

void Agent::deploy(json document, std::string source, std::function<void(DeployResult)> done) {
  asio::post(io_, [this, document = std::move(document), source = std::move(source),
                   done = std::move(done)]() mutable {
    auto outcome =
        parse_manifest(document, [this](const json& d) { return host_.validate_edgehub(d); });
    if (!outcome.deployment) {
      log::warn(kLog, "deployment from {} refused, nothing changed:\n{}", source,
                outcome.describe());
      refused(outcome.problems, outcome.describe());
      if (done) done(DeployResult{false, std::move(outcome.problems), {}});
      return;
    }
    apply(std::move(*outcome.deployment), source, std::move(done));
  });
}

void Agent::deploy_twins(json edgeagent_desired, json edgehub_desired) {
  asio::post(io_, [this, a = std::move(edgeagent_desired), h = std::move(edgehub_desired)] {
    if (!has_properties(a)) return;  // the cloud has no deployment for this device yet
    if (!has_properties(h)) {
      // applyConfigurationContent writes both twins; their patches travel on two links.
      log::info(kLog, "$edgeAgent desired version {} arrived; waiting for $edgeHub's",
                desired_version(a));
      return;
    }
    const std::pair<std::int64_t, std::int64_t> versions{desired_version(a), desired_version(h)};
    if (cloud_versions_ == versions) return;  // handled already (a resync or a restart)
    auto outcome = parse_twins(a, h, [this](const json& d) { return host_.validate_edgehub(d); });
    if (!outcome.deployment) {
      log::warn(kLog,
                "deployment from the cloud ($edgeAgent version {}, $edgeHub version {}) refused, "
                "nothing changed:\n{}",
                versions.first, versions.second, outcome.describe());
      cloud_versions_ = versions;
      deployment_version_ = versions.first;
      std::string hub_problems;
      for (const auto& p : outcome.problems) {
        if (p.path.starts_with("modulesContent.$edgeHub")) {
          hub_problems += (hub_problems.empty() ? "" : "\n") + p.path + ": " + p.message;
        }
      }
      if (!hub_problems.empty()) report_edgehub(versions.second, 400, hub_problems);
      refused(outcome.problems, outcome.describe());
      return;
    }
    apply(std::move(*outcome.deployment), "the cloud", {}, versions);
  });
}

void Agent::refused(const std::vector<ManifestProblem>& problems, const std::string& text) {
  (void)problems;
  last_desired_status_ = {{"code", 400}, {"description", cut_description(text)}};
  save_desired_status();
  report_state();
}

void Agent::save_desired_status() {
  json state = {{"lastDesiredVersion", deployment_version_},
                {"lastDesiredStatus", last_desired_status_}};
  if (cloud_versions_) state["cloudVersions"] = {cloud_versions_->first, cloud_versions_->second};
  if (auto s = write_file_atomic(options_.state_dir + "/desired-status.json", state.dump(), true);
      !s) {
    log::warn(kLog, "{}", s.error().message);
  }
}

void Agent::report_edgehub(std::int64_t version, int code, const std::string& description) {
  // edgeHub's own reported properties: which $edgeHub desired version is in force.
  json reported = {
      {"schemaVersion", "1.0"},
      {"lastDesiredVersion", version},
      {"lastDesiredStatus", {{"code", code}, {"description", cut_description(description)}}}};
  if (reported == last_hub_reported_) return;
  host_.report(
      "$edgeHub",
      merge_diff(last_hub_reported_.is_null() ? json::object() : last_hub_reported_, reported));
  last_hub_reported_ = std::move(reported);
}

void Agent::apply(Deployment deployment, const std::string& source,
                  std::function<void(DeployResult)> done,
                  std::optional<std::pair<std::int64_t, std::int64_t>> cloud_versions) {
  DeployResult result;
  if (source != "disk") {
    json doc = {{"modulesContent", deployment.document}};
    if (auto s = write_file_atomic(options_.state_dir + "/deployment.json", doc.dump(), true); !s) {
      result.error = s.error().message;
      log::error(kLog, "deployment from {} not applied: {}", source, result.error);
      if (done) done(std::move(result));
      return;
    }
  }
  auto routes = host_.apply_edgehub(deployment.edgehub_desired);
  if (!routes) {
    log::error(kLog, "routes of the deployment from {} not applied: {}", source,
               routes.error().message);
  }
  for (const auto& [name, desired] : deployment.module_twins)
    host_.set_module_desired(name, desired);
  deployment_ = std::move(deployment);
  if (cloud_versions) {
    cloud_versions_ = cloud_versions;
    deployment_version_ = cloud_versions->first;
    report_edgehub(cloud_versions->second, routes ? 200 : 500,
                   routes ? std::string() : routes.error().message);
  } else if (source != "disk" || deployment_version_ == 0) {
    ++deployment_version_;
  }
  if (source != "disk") {
    last_desired_status_ = {{"code", 200}, {"description", ""}};
    save_desired_status();
  }
  log::info(kLog, "deployment from {} accepted (lastDesiredVersion {}): {} modules", source,
            deployment_version_, deployment_->modules.size());
  result.applied = true;
  if (done) done(std::move(result));
  reconcile();
}

void Agent::schedule_poll() {
  poll_timer_.expires_after(options_.poll_interval);
  poll_timer_.async_wait([this](error_code ec) {
    if (ec) return;
    try {
      reconcile();
    } catch (const std::exception& e) {
      log::error(kLog, "reconcile failed: {}", e.what());
    }
    schedule_poll();
  });
}

ModuleRuntime* Agent::runtime_for(const ModuleDesired& m) {
  return m.process_runtime() ? process_.get() : docker_.get();
}

ModuleSpec Agent::spec_for(const ModuleDesired& m, const ModuleIdentity& id) const {
  ModuleSpec spec;
  spec.name = m.name;
  spec.image = m.image;
  spec.version = m.version;
  spec.create_options = m.create_options;
  spec.pull_policy = m.pull_policy;
  if (deployment_) spec.credentials = deployment_->credential_for(m.image);
  spec.workload_socket = options_.mnt_dir + "/" + m.name + ".sock";
  if (m.process_runtime()) spec.workload_mount_path = spec.workload_socket;
  spec.env = m.env;
  auto add = [&spec](const std::string& k, const std::string& v) {
    for (const auto& [key, value] : spec.env) {
      if (key == k) return;  // the manifest's value wins
    }
    spec.env.emplace_back(k, v);
  };
  add("IOTEDGE_WORKLOADURI", "unix://" + spec.workload_mount_path);
  add("IOTEDGE_AUTHSCHEME", "sasToken");
  add("IOTEDGE_MODULEGENERATIONID", id.generation_id);
  add("IOTEDGE_IOTHUBHOSTNAME", options_.iothub_hostname);
  add("IOTEDGE_DEVICEID", options_.device_id);
  add("IOTEDGE_MODULEID", m.name);
  add("IOTEDGE_GATEWAYHOSTNAME", options_.gateway_hostname);
  add("IOTEDGE_APIVERSION", "2022-08-03");
  add("RuntimeLogLevel", options_.log_level);
  if (m.process_runtime()) {
    // A process module inherits no environment from cairnd; a PATH lets scripts find tools.
    add("PATH", "/usr/local/bin:/usr/bin:/bin");
  }
  // The hash covers the whole environment the module gets, so a new generation id (identity
  // recreated) or a changed manifest env both recreate the module.
  ModuleDesired hashed = m;
  hashed.env = spec.env;
  spec.config_hash = config_hash(hashed);
  return spec;
}

Status Agent::ensure_workload(const std::string& name, const ModuleIdentity& id) {
  {
    std::lock_guard lock(*workload_mutex_);
    (*workload_modules_)[name] = WorkloadModule{name, id.key, id.generation_id};
  }
  std::promise<Status> started;
  asio::post(api_io_, [this, name, &started] {
    if (workload_servers_.count(name)) {
      started.set_value({});
      return;
    }
    auto path = options_.mnt_dir + "/" + name + ".sock";
    WorkloadContext ctx;
    ctx.trust_bundle_pem = trust_bundle_;
    ctx.ca_cert_path = options_.trust_bundle_path;
    ctx.ca_key_path = options_.ca_key_path;
    ctx.device_id = options_.device_id;
    ctx.iothub_hostname = options_.iothub_hostname;
    std::weak_ptr<ModuleRuntime> process = process_, docker = docker_;
    ctx.owns_pid = [process, docker](const std::string& module, std::int64_t pid) {
      for (const auto& weak : {process, docker}) {
        if (auto rt = weak.lock(); rt && rt->owns_process(module, pid)) return true;
      }
      return false;
    };
    auto modules = workload_modules_;
    auto mutex = workload_mutex_;
    net::HttpLimits limits;
    limits.max_body_bytes = 64 * 1024;  // sign/encrypt payloads are small
    limits.max_connections = 10;        // IoT Edge: 10 concurrent requests per module socket
    auto server = net::UnixHttpServer::start(
        api_io_, path,
        [name, ctx, modules, mutex](const net::HttpRequest& req, net::HttpRespond respond) {
          WorkloadModule m;
          {
            std::lock_guard lock(*mutex);
            auto it = modules->find(name);
            if (it == modules->end()) {
              respond(error_response(404, "module '" + name + "' is not deployed"));
              return;
            }
            m = it->second;
          }
          respond(handle_workload(req, m, ctx));
        },
        limits);
    if (!server) {
      started.set_value(server.error());
      return;
    }
    ::chmod(path.c_str(), 0666);  // any local user a module runs as; the pid check authorises
    workload_servers_[name] = *server;
    started.set_value({});
  });
  return started.get_future().get();
}

void Agent::drop_module(ModuleRuntime& runtime, const std::string& name) {
  log::info(kLog, "module {} is no longer deployed: stopping and removing it", name);
  (void)runtime.stop(name, options_.stop_grace);
  if (auto s = runtime.remove(name); !s) log::warn(kLog, "remove {}: {}", name, s.error().message);
  {
    std::lock_guard lock(*workload_mutex_);
    workload_modules_->erase(name);
  }
  std::promise<void> closed;
  asio::post(api_io_, [this, name, &closed] {
    if (auto it = workload_servers_.find(name); it != workload_servers_.end()) {
      it->second->stop();
      workload_servers_.erase(it);
    }
    closed.set_value();
  });
  closed.get_future().wait();
  if (auto s = host_.remove_identity(name); !s && s.error().code != errc::not_found) {
    log::warn(kLog, "remove identity {}: {}", name, s.error().message);
  }
  identities_.erase(name);
  tracked_.erase(name);
}

void Agent::reconcile() {
  if (!deployment_ || stopping_) return;
  const auto now = now_unix_ms();
  // Modules the runtimes hold that the deployment no longer has.
  for (auto* rt : {process_.get(), docker_.get()}) {
    if (!rt) continue;
    auto list = rt->list();
    auto& last_error = runtime_errors_[rt];
    if (!list) {
      // Said once per change, not every poll: an engine that is down stays down for a while.
      if (last_error != list.error().message) {
        log::warn(kLog, "{} runtime: {}", rt->info().type, list.error().message);
        last_error = list.error().message;
      }
      continue;
    }
    if (!last_error.empty()) {
      log::info(kLog, "{} runtime answers again", rt->info().type);
      last_error.clear();
    }
    for (const auto& m : *list) {
      const auto* desired = deployment_->find(m.name);
      if (!desired || runtime_for(*desired) != rt) drop_module(*rt, m.name);
    }
  }
  std::vector<const ModuleDesired*> order;
  for (const auto& m : deployment_->modules) order.push_back(&m);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return a->startup_order < b->startup_order;
  });
  for (auto it = preparations_.begin(); it != preparations_.end();) {
    // A module no longer deployed: a preparation that ended is forgotten (one still running
    // reports back and is forgotten then).
    it = it->second.done && !deployment_->find(it->first) ? preparations_.erase(it) : std::next(it);
  }
  std::optional<std::uint32_t> waiting_for_order;  // a module of this order is being prepared
  for (const auto* m : order) {
    auto& t = tracked_[m->name];
    auto* rt = runtime_for(*m);
    if (!rt) {
      t.status = RuntimeStatus::failed;
      t.note =
          "no docker runtime is configured (cairnd --docker-uri, config.toml [agent] "
          "docker_uri, $DOCKER_HOST or /var/run/docker.sock)";
      continue;
    }
    auto id = identities_.find(m->name);
    if (id == identities_.end()) {
      auto created = host_.ensure_identity(m->name);
      if (!created) {
        t.status = RuntimeStatus::failed;
        t.note = "identity: " + created.error().message;
        continue;
      }
      id = identities_.emplace(m->name, *created).first;
    }
    if (auto s = ensure_workload(m->name, id->second); !s) {
      t.status = RuntimeStatus::failed;
      t.note = "workload socket: " + s.error().message;
      continue;
    }
    auto spec = spec_for(*m, id->second);
    auto state = rt->inspect(m->name);
    if (state && state->config_hash != spec.config_hash) {
      log::info(kLog, "module {} changed: recreating it", m->name);
      (void)rt->stop(m->name, options_.stop_grace);
      (void)rt->remove(m->name);
      t = Tracked{};
      state = make_error(errc::not_found, "recreating");
    }
    if (!state) {
      // Modules later in the startup order wait for the images of earlier ones.
      if (waiting_for_order && m->startup_order > *waiting_for_order) {
        t.note = "waiting for modules earlier in the startup order";
        continue;
      }
      auto ready = prepared(*rt, spec);
      if (!ready) {
        // A pull tried again after a failure leaves the failure in view until it succeeds.
        if (t.status != RuntimeStatus::failed) t.note = "preparing: image " + spec.image;
        waiting_for_order = m->startup_order;
        continue;
      }
      if (!*ready) {
        t.status = RuntimeStatus::failed;
        t.note = ready->error().message;
        continue;
      }
      auto created = rt->create(spec);
      if (!created) {
        t.status = RuntimeStatus::failed;
        t.note = created.error().message;
        continue;
      }
      t.note.clear();
      for (const auto& n : created->notes) t.note += (t.note.empty() ? "" : "; ") + n;
      state = rt->inspect(m->name);
      if (!state) continue;
    }
    t.state = *state;
    if (m->status == DesiredStatus::stopped) {
      t.held = true;
      if (state->status == RuntimeStatus::running) {
        (void)rt->stop(m->name, options_.stop_grace);
        if (auto s = rt->inspect(m->name)) t.state = *s;
      }
      t.status = t.state.status == RuntimeStatus::running ? RuntimeStatus::running
                                                          : RuntimeStatus::stopped;
      continue;
    }
    if (state->status == RuntimeStatus::running) {
      t.status = RuntimeStatus::running;
      // Healthy long enough: the restart statistics start over.
      if (t.restart_count > 0 && state->started_at_ms > 0 &&
          now - state->started_at_ms >= options_.restart.healthy_reset.count()) {
        t.restart_count = 0;
      }
      continue;
    }
    // Never started, held by a desired "stopped", or stopped on request (a clean shutdown of
    // cairnd, `cairn` stop): start it whatever the restart policy says about exits.
    bool never_started =
        (state->started_at_ms == 0 && state->exited_at_ms == 0) || t.held ||
        (state->status == RuntimeStatus::stopped && state->description == "stopped");
    t.held = false;
    bool start_now = never_started;
    if (!never_started) {
      if (!restart_candidate(m->restart_policy, state->status)) {
        t.status = state->status;
        continue;
      }
      if (t.restart_count >= options_.restart.max_restarts) {
        t.status = RuntimeStatus::failed;
        continue;
      }
      auto since_exit = now - std::max(state->exited_at_ms, t.last_restart_ms);
      if (since_exit >= cool_off(options_.restart, t.restart_count).count()) {
        start_now = true;
        ++t.restart_count;
        t.last_restart_ms = now;
      } else {
        t.status = RuntimeStatus::backoff;
        continue;
      }
    }
    if (start_now) {
      if (auto s = rt->start(m->name); !s) {
        t.status = RuntimeStatus::failed;
        t.note = s.error().message;
        continue;
      }
      if (auto s = rt->inspect(m->name)) t.state = *s;
      t.status = t.state.status;
    }
  }
  report_state();
}

std::optional<Status> Agent::prepared(ModuleRuntime& runtime, const ModuleSpec& spec) {
  auto it = preparations_.find(spec.name);
  if (it != preparations_.end() && it->second.config_hash == spec.config_hash) {
    if (!it->second.done) return std::nullopt;
    // Used once: the next creation of the module (a failed one retried, a container removed
    // behind our back) prepares again, as a pull policy of on-create asks.
    Status result = std::move(it->second.result);
    preparations_.erase(it);
    return result;
  }
  if (&runtime == process_.get() || !pulls_) return runtime.prepare(spec);
  preparations_[spec.name] = Preparation{spec.config_hash, false, {}};
  asio::post(*pulls_, [this, &runtime, spec] {
    name_this_thread("image-pull");  // the pool's threads are asio's: named by their work
    Status result;
    try {
      result = runtime.prepare(spec);
    } catch (const std::exception& e) {
      result = make_error(errc::internal, "module " + spec.name + ": " + e.what());
    }
    asio::post(io_, [this, name = spec.name, hash = spec.config_hash,
                     result = std::move(result)]() mutable {
      auto entry = preparations_.find(name);
      if (entry == preparations_.end() || entry->second.config_hash != hash) return;  // superseded
      entry->second.done = true;
      entry->second.result = std::move(result);
      reconcile();
    });
  });
  return std::nullopt;
}

json Agent::module_json(const std::string& name) {
  const auto* m = deployment_ ? deployment_->find(name) : nullptr;
  auto it = tracked_.find(name);
  if (!m || it == tracked_.end()) return nullptr;
  const auto& t = it->second;
  json settings = m->settings;
  for (auto k = settings.begin(); k != settings.end();) {
    std::string key = k.key();
    for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    k = key.starts_with("createoptions") ? settings.erase(k) : std::next(k);
  }
  const json chunks = chunk_create_options(m->create_options_text);  // items() only refers to it
  for (const auto& [k, v] : chunks.items()) settings[k] = v;
  if (!t.state.image_hash.empty()) settings["imageHash"] = t.state.image_hash;
  std::string description =
      t.status == RuntimeStatus::backoff ? "backing off before a restart" : t.state.description;
  if (!t.note.empty()) description += (description.empty() ? "" : "; ") + t.note;
  json out = {{"version", m->version},
              {"type", m->type},
              {"status", to_string(m->status)},
              {"restartPolicy", to_string(m->restart_policy)},
              {"imagePullPolicy", to_string(m->pull_policy)},
              {"runtimeStatus", to_string(t.status)},
              {"exitCode", t.state.exit_code},
              {"statusDescription", description},
              {"lastStartTimeUtc", iso_or_epoch(t.state.started_at_ms)},
              {"lastExitTimeUtc", iso_or_epoch(t.state.exited_at_ms)},
              {"restartCount", t.restart_count},
              {"lastRestartTimeUtc", iso_or_epoch(t.last_restart_ms)},
              {"settings", settings},
              {"env", m->env_json}};
  if (m->startup_order != kDefaultStartupOrder) out["startupOrder"] = m->startup_order;
  return out;
}

void Agent::report_state() {
  json reported = {{"schemaVersion", "1.0"},
                   {"version", {{"version", CAIRN_VERSION}, {"build", ""}, {"commit", ""}}},
                   {"lastDesiredVersion", deployment_version_},
                   {"lastDesiredStatus", last_desired_status_}};
  if (deployment_) {
    json modules = json::object();
    for (const auto& m : deployment_->modules) {
      auto j = module_json(m.name);
      if (!j.is_null()) modules[m.name] = std::move(j);
    }
    json system = json::object();
    for (const auto& m : deployment_->system_modules) {
      // cairnd itself plays both system modules: they run as long as it does.
      json s = {{"type", m.type},
                {"runtimeStatus", "running"},
                {"exitCode", 0},
                {"statusDescription", "running (part of cairnd)"},
                {"imagePullPolicy", to_string(m.pull_policy)},
                {"settings", m.settings}};
      if (m.name == "edgeHub") {
        s["status"] = "running";
        s["restartPolicy"] = to_string(m.restart_policy);
        s["restartCount"] = 0;
      }
      system[m.name] = std::move(s);
    }
    const json runtime = deployment_->runtime.is_object() ? deployment_->runtime : json::object();
    reported["runtime"] = {
        {"type", runtime.value("type", "docker")},
        {"platform", {{"os", "linux"}, {"architecture", "x86_64"}, {"version", CAIRN_VERSION}}},
        {"settings", runtime.value("settings", json::object())}};
    // Registry passwords never leave the device in reported properties.
    if (reported["runtime"]["settings"].contains("registryCredentials")) {
      for (auto& [k, c] : reported["runtime"]["settings"]["registryCredentials"].items()) {
        if (c.is_object()) c.erase("password");
      }
    }
    reported["systemModules"] = std::move(system);
    reported["modules"] = std::move(modules);
  }
  // A deployment that declares no module at all (a routes-only manifest) has nothing to report,
  // unless a deployment was refused.
  const bool nothing =
      !deployment_ || (deployment_->modules.empty() && deployment_->system_modules.empty());
  if (last_reported_.is_null() && nothing && last_desired_status_.value("code", 200) == 200) {
    return;
  }
  if (reported == last_reported_) return;
  // The twin takes at most 32 KiB of reported properties: many modules are reported with
  // fewer details rather than not at all.
  json sent = reported;
  auto detail = fit_reported(sent);
  if (detail != reported_detail_) {
    if (detail == "full") {
      log::info(kLog, "$edgeAgent reported properties are in full detail again");
    } else {
      log::warn(kLog,
                "$edgeAgent reported properties in '{}' detail ({} modules): the full document "
                "takes {} bytes, over the {} a twin takes; {} bytes sent",
                detail, deployment_ ? deployment_->modules.size() : 0,
                twin::dump_json(reported).size(), kMaxReportedBytes, twin::dump_json(sent).size());
    }
    reported_detail_ = detail;
  }
  auto patch = merge_diff(last_sent_.is_null() ? json::object() : last_sent_, sent);
  if (!patch.empty()) host_.report("$edgeAgent", patch);
  last_sent_ = std::move(sent);
  last_reported_ = reported;
  std::lock_guard lock(reported_mutex_);
  reported_snapshot_ = std::move(reported);
}

json Agent::reported() const {
  std::lock_guard lock(reported_mutex_);
  return reported_snapshot_;
}

bool Agent::handle_management(const net::HttpRequest& request, net::HttpRespond& respond) {
  auto path = net::http_path(request.target);
  if (!(path == "/modules" || path.starts_with("/modules/") || path == "/deployment" ||
        path == "/runtime/check")) {
    return false;
  }
  asio::post(io_, [this, request, respond = std::move(respond)]() mutable {
    try {
      manage(request, std::move(respond));
    } catch (const std::exception& e) {
      log::error(kLog, "management request {} failed: {}", request.target, e.what());
    }
  });
  return true;
}

json Agent::runtime_checks() {
  json checks = json::array();
  auto add = [&checks](std::string id, const char* status, std::string message) {
    checks.push_back({{"id", std::move(id)}, {"status", status}, {"message", std::move(message)}});
  };
  std::size_t docker_modules = 0;
  if (deployment_) {
    for (const auto& m : deployment_->modules) docker_modules += m.process_runtime() ? 0 : 1;
  }
  add("runtime-process", "ok", "built in; " + process_->info().detail);
  bool engine_up = false;
  if (docker_) {
    auto info = docker_->info();
    engine_up = info.reachable;
    if (engine_up) {
      add("runtime-docker", "ok", info.detail);
    } else {
      add("runtime-docker", docker_modules > 0 ? "error" : "warning",
          "the container engine does not answer (" + info.detail +
              "): start it (systemctl start docker, or podman system service), or point "
              "cairnd at its socket (--docker-uri, config.toml [agent] docker_uri)");
    }
  } else if (docker_modules > 0) {
    add("runtime-docker", "error",
        std::to_string(docker_modules) +
            " deployed modules need a container engine and none is configured: set config.toml "
            "[agent] docker_uri (or --docker-uri, $DOCKER_HOST) and restart cairnd");
  }
  if (!deployment_) return {{"checks", checks}};
  for (const auto& m : deployment_->modules) {
    auto* rt = runtime_for(m);
    // The image: there now, so a recreate or restart does not depend on a registry.
    if (!m.process_runtime() && !engine_up) {
      add("image-" + m.name, "warning",
          "not checked: no container engine answers (see runtime-docker)");
    } else if (rt) {
      if (auto s = rt->image_present(m.image); s) {
        add("image-" + m.name, "ok", m.image + " is present");
      } else if (m.process_runtime()) {
        add("image-" + m.name, "error",
            s.error().message + ": install it, or fix settings.image in the deployment");
      } else {
        add("image-" + m.name, "error",
            m.image + " is not on the container engine (" + s.error().message + "): " +
                (m.pull_policy == ImagePullPolicy::never
                     ? "imagePullPolicy is never, so load it yourself (docker pull " + m.image + ")"
                     : "cairnd pulls it when it creates the module; see `cairn list` for the "
                       "pull error, check the registry and registryCredentials, or run "
                       "docker pull " +
                           m.image));
      }
    }
    // The module: running as desired, and not restarting over and over.
    auto it = tracked_.find(m.name);
    const Tracked* t = it == tracked_.end() ? nullptr : &it->second;
    const std::string id = "module-" + m.name;
    const std::string look = "; see `cairn logs " + m.name + "`";
    std::string description = t ? t->state.description : "";
    if (t && !t->note.empty()) description += (description.empty() ? "" : "; ") + t->note;
    if (m.status == DesiredStatus::stopped) {
      add(id, "ok", "stopped, as the deployment says");
    } else if (!t || t->status == RuntimeStatus::unknown) {
      add(id, "warning", "not started yet: the agent is still creating it; check again shortly");
    } else if (t->status == RuntimeStatus::running && t->restart_count == 0) {
      add(id, "ok", "running: " + description);
    } else if (t->status == RuntimeStatus::running) {
      add(id, "warning",
          "running, but it exited and was restarted " + std::to_string(t->restart_count) +
              " times (last at " + iso_or_epoch(t->last_restart_ms) +
              "; the count clears once it stays up " +
              std::to_string(options_.restart.healthy_reset.count() / 60000) +
              " minutes): it may be crash-looping" + look);
    } else if (t->status == RuntimeStatus::backoff) {
      add(id, "error",
          "restart loop: it exited (" + description + ") and was restarted " +
              std::to_string(t->restart_count) + " times; waiting before the next restart" + look);
    } else if (t->status == RuntimeStatus::failed && t->restart_count > 0 &&
               t->restart_count >= options_.restart.max_restarts) {
      add(id, "error",
          "failed: gave up after " + std::to_string(t->restart_count) + " restarts (" +
              description + "); fix the cause, then `cairn restart " + m.name + "`" + look);
    } else {
      add(id, "error", std::string(to_string(t->status)) + ": " + description + look);
    }
  }
  return {{"checks", checks}};
}

void Agent::manage(const net::HttpRequest& request, net::HttpRespond respond) {
  auto path = net::http_path(request.target);
  std::vector<std::string> seg;
  for (std::size_t i = 1; i <= path.size();) {
    auto j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) seg.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  if (seg.size() == 1 && seg[0] == "deployment") {
    if (request.method == "GET") {
      respond_on(respond,
                 json_response(200, deployment_ ? json{{"modulesContent", deployment_->document}}
                                                : json::object()));
      return;
    }
    if (request.method != "POST")
      return respond_on(respond, error_response(405, "use GET or POST"));
    json doc;
    try {
      doc = json::parse(request.body);
    } catch (const json::parse_error& e) {
      return respond_on(respond, error_response(400, std::string("not valid JSON: ") + e.what()));
    }
    auto outcome = parse_manifest(doc, [this](const json& d) { return host_.validate_edgehub(d); });
    if (!outcome.deployment) {
      json problems = json::array();
      for (const auto& p : outcome.problems)
        problems.push_back({{"path", p.path}, {"message", p.message}});
      log::warn(kLog, "deployment from the command line refused, nothing changed:\n{}",
                outcome.describe());
      refused(outcome.problems, outcome.describe());
      return respond_on(
          respond, json_response(400, {{"message", outcome.describe()}, {"problems", problems}}));
    }
    apply(std::move(*outcome.deployment), "the command line", [&respond](DeployResult r) {
      if (!r.applied) return respond(error_response(500, r.error));
      respond(json_response(200, {{"applied", true}}));
    });
    return;
  }
  if (seg.size() == 2 && seg[0] == "runtime") {
    if (request.method != "GET") return respond_on(respond, error_response(405, "use GET"));
    return respond_on(respond, json_response(200, runtime_checks()));
  }
  // /modules, /modules/{name}, /modules/{name}/{logs|restart|start|stop}
  if (seg.size() == 1 && request.method == "GET") {
    json list = json::array();
    if (deployment_) {
      for (const auto& m : deployment_->modules) {
        auto j = module_json(m.name);
        if (j.is_null()) continue;
        j["name"] = m.name;
        j["image"] = m.image;
        list.push_back(std::move(j));
      }
    }
    return respond_on(respond, json_response(200, {{"modules", list}}));
  }
  if (seg.size() < 2) return respond_on(respond, error_response(404, "no such path"));
  const std::string& name = seg[1];
  const auto* m = deployment_ ? deployment_->find(name) : nullptr;
  if (!m) return respond_on(respond, error_response(404, "no module '" + name + "' is deployed"));
  auto* rt = runtime_for(*m);
  if (!rt) return respond_on(respond, error_response(503, "no runtime for module '" + name + "'"));
  if (seg.size() == 2 && request.method == "GET") {
    auto j = module_json(name);
    j["name"] = name;
    return respond_on(respond, json_response(200, j));
  }
  if (seg.size() == 3 && seg[2] == "logs" && request.method == "GET") {
    LogOptions opts;
    auto tail = net::http_query_param(request.target, "tail");
    if (!tail.empty() && tail != "all") {
      try {
        opts.tail = std::stoull(tail);
      } catch (const std::exception&) {
        return respond_on(respond, error_response(400, "tail must be a number or 'all'"));
      }
    }
    auto since = net::http_query_param(request.target, "since");
    if (!since.empty()) {
      try {
        opts.since_ms = std::stoll(since) * 1000;
      } catch (const std::exception&) {
        return respond_on(respond, error_response(400, "since must be Unix seconds"));
      }
    }
    auto text = rt->logs(name, opts);
    if (!text) return respond_on(respond, error_response(404, text.error().message));
    net::HttpResponse r{200, std::move(*text)};
    r.content_type = "text/plain; charset=utf-8";
    return respond_on(respond, std::move(r));
  }
  if (seg.size() == 3 && request.method == "POST" &&
      (seg[2] == "restart" || seg[2] == "stop" || seg[2] == "start")) {
    Status s;
    if (seg[2] != "start") s = rt->stop(name, options_.stop_grace);
    if (s && seg[2] != "stop") {
      s = rt->start(name);
      tracked_[name].restart_count = 0;
    }
    if (!s) return respond_on(respond, error_response(500, s.error().message));
    reconcile();
    return respond_on(respond, net::HttpResponse{204, ""});
  }
  respond_on(respond, error_response(404, "no such path"));
}

}  // namespace cairn::agent
