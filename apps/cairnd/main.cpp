// cairnd: the edge daemon. Opens the store under --home, starts the hub's MQTT listeners and
// the management socket, applies the routes of --manifest, and runs until SIGINT/SIGTERM.
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "agent/agent.hpp"
#include "agent/docker_runtime.hpp"
#include "agent/process_runtime.hpp"
#include "agent_host.hpp"
#include "core/log.hpp"
#include "core/memory.hpp"
#include "hub/config.hpp"
#include "hub/edge_api.hpp"
#include "hub/edgehub_config.hpp"
#include "hub/hub.hpp"
#include "hub/twin_cache.hpp"
#include "hub/upstream.hpp"
#include "net/asio.hpp"
#include "net/http.hpp"
#include "net/spawn.hpp"
#include "store/message_store.hpp"

namespace {

using namespace cairn;

// Where modules of type docker run: --docker-uri, config.toml [agent] docker_uri, $DOCKER_HOST,
// then Docker's default socket if it exists. "" = no docker runtime; `why` says where it came
// from (or why there is none).
std::string docker_socket(const std::string& flag, const std::string& configured,
                          std::string& why) {
  auto pick = [&why](const std::string& uri, const char* from) {
    why = from;
    if (uri == "none") {
      why += " says none";
      return std::string();
    }
    return uri.starts_with("unix://") ? uri.substr(7) : uri;
  };
  if (!flag.empty()) return pick(flag, "--docker-uri");
  if (!configured.empty()) return pick(configured, "config.toml [agent] docker_uri");
  if (const char* env = std::getenv("DOCKER_HOST"); env != nullptr && *env != '\0') {
    std::string uri = env;
    if (uri.starts_with("unix://") || uri.starts_with("/")) return pick(uri, "$DOCKER_HOST");
    why = "$DOCKER_HOST is '" + uri + "', not a unix socket (the only kind supported)";
    return {};
  }
  std::error_code ec;
  if (std::filesystem::exists("/var/run/docker.sock", ec)) {
    return pick("/var/run/docker.sock", "the default socket");
  }
  why = "no --docker-uri, [agent] docker_uri or $DOCKER_HOST, and no /var/run/docker.sock";
  return {};
}

int run(const std::string& home, const std::string& config_path, const std::string& manifest,
        const std::string& log_level, const std::string& docker_uri_flag) {
  auto config = hub::load_config(home, config_path);
  if (!config) {
    log::error("cairnd", "{}", config.error().message);
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(config->data_dir(), ec);
  std::filesystem::create_directories(config->run_dir(), ec);
  if (ec) {
    log::error("cairnd", "cannot create {}: {}", config->data_dir(), ec.message());
    return 1;
  }

  // Validate the manifest before touching anything else: a bad one must change nothing.
  std::optional<hub::EdgeHubConfig> edgehub;
  nlohmann::json manifest_document;
  if (!manifest.empty()) {
    auto desired = hub::read_edgehub_desired(manifest);
    if (!desired) {
      log::error("cairnd", "{}", desired.error().message);
      return 2;
    }
    auto parsed = hub::parse_edgehub_desired(*desired);
    if (!parsed) {
      log::error("cairnd", "{}: {}", manifest, parsed.error().message);
      return 2;
    }
    edgehub = std::move(*parsed);
    // The whole manifest (modules too) must be valid before anything starts.
    auto outcome = agent::read_manifest(manifest, [](const nlohmann::json& d) {
      auto p = hub::parse_edgehub_desired(d);
      return p ? std::string() : p.error().message;
    });
    if (!outcome.deployment) {
      log::error("cairnd", "{}: not a valid deployment, nothing applied:\n{}", manifest,
                 outcome.describe());
      return 2;
    }
    std::ifstream in(manifest);
    manifest_document = nlohmann::json::parse(in, nullptr, false);
    // config.toml's default_ttl_secs holds until the manifest says otherwise: a manifest
    // without storeAndForwardConfiguration.timeToLiveSecs keeps it (parsing alone would
    // give the built-in 7200).
    auto sf = desired->find("storeAndForwardConfiguration");
    if (sf == desired->end() || !sf->is_object() || !sf->contains("timeToLiveSecs")) {
      edgehub->ttl_secs = config->default_ttl_secs;
    }
  }

  store::Options store_options;
  store_options.path = config->data_dir() + "/hub.db";
  store_options.sync =
      config->store.fsync ? store::Options::Sync::full : store::Options::Sync::normal;
  store_options.max_bytes = config->store.max_bytes;
  if (edgehub && edgehub->max_store_bytes != 0) store_options.max_bytes = edgehub->max_store_bytes;
  store_options.append_delay_us = static_cast<int>(config->store.append_delay_us);
  store_options.exit_on_fatal = true;  // a supervisor restarts cairnd on a clean reopen
  auto store = store::MessageStore::open(store_options);
  if (!store) {
    log::error("cairnd", "cannot open the store {}: {}", store_options.path,
               store.error().to_string());
    return 1;
  }

  asio::io_context io(1);
  auto hub = hub::Hub::make(io, *config, **store);
  if (!hub) {
    log::error("cairnd", "{}", hub.error().to_string());
    return 1;
  }
  if (edgehub) {
    if (auto s = (*hub)->apply(*edgehub); !s) {
      log::error("cairnd", "{}: {}", manifest, s.error().message);
      return 2;
    }
  }
  // Twins are cached here and, with a cloud configured, synchronised over the upstream link.
  // The $edgeAgent and $edgeHub twins' desired properties are a deployment from the cloud: they
  // go to the agent (once it exists), not to an MQTT client.
  std::weak_ptr<hub::TwinCache> twins_ref;
  agent::Agent* agent_ref = nullptr;
  const std::string agent_twin = config->device_id + "/$edgeAgent";
  const std::string hub_twin = config->device_id + "/$edgeHub";
  // applyConfigurationContent changes both twins at once, but their patches travel on two
  // links: a patch waits this long for its partner so that the pair is applied as one
  // deployment (a refused $edgeAgent part then also keeps the old routes).
  static constexpr auto kTwinPairWait = std::chrono::milliseconds(250);
  asio::steady_timer twin_pair_timer(io);
  auto twins = std::make_shared<hub::TwinCache>(
      io, **store,
      [h = hub->get(), &twins_ref, &agent_ref, &twin_pair_timer, agent_twin, hub_twin](
          const std::string& client_id, const nlohmann::json& patch) {
        if (client_id != agent_twin && client_id != hub_twin) {
          return h->notify_desired(client_id, patch);
        }
        twin_pair_timer.expires_after(kTwinPairWait);  // a later patch restarts the wait
        twin_pair_timer.async_wait(
            [&twins_ref, &agent_ref, agent_twin, hub_twin](net::error_code waited) {
              if (waited) return;
              auto cache = twins_ref.lock();
              if (!cache || agent_ref == nullptr) return;
              auto a = cache->cached_view(agent_twin);
              auto e = cache->cached_view(hub_twin);
              if (!a || !e) return;
              agent_ref->deploy_twins((*a)["desired"], (*e)["desired"]);
            });
        return true;
      });
  twins_ref = twins;
  std::shared_ptr<hub::Upstream> upstream;
  hub::HubServices services;
  services.twins = twins.get();
  // Each module's telemetry waits in a queue of its own: one cloud link that is refused or
  // backing off holds back nothing of the others' (docs/protocol.md §8.2).
  services.upstream_per_identity = true;
  if (config->upstream.enabled()) {
    auto store_id = hub::Upstream::load_store_id(**store);
    if (!store_id) {
      log::error("cairnd", "cannot read or keep the store id for the cloud link: {}",
                 store_id.error().to_string());
      return 1;
    }
    upstream =
        std::make_shared<hub::Upstream>(io, (*hub)->config(), **hub, *twins, std::move(*store_id));
    twins->set_upstream(upstream.get());
    services.observer = upstream.get();
  }
  (*hub)->set_services(services);
  auto api = std::make_shared<hub::EdgeApi>(**hub, **store, twins, upstream);
  (*hub)->set_status_extension([api] { return api->status(); });
  if (auto s = (*hub)->start(); !s) {
    log::error("cairnd", "{}", s.error().to_string());
    return 1;
  }
  if (upstream) upstream->start();
  // The agent: deployments, module runtimes, identities and the workload API, on threads of its
  // own. The hub and the agent meet only through HubAgentHost.
  cairnd::HubAgentHost agent_host(**hub, **store, twins, upstream, config->default_ttl_secs);
  agent::AgentOptions agent_options;
  agent_options.state_dir = config->data_dir() + "/agent";
  agent_options.mnt_dir = config->run_dir() + "/mnt";
  agent_options.device_id = config->device_id;
  agent_options.iothub_hostname = config->iothub_hostname;
  agent_options.gateway_hostname = config->hostname;
  agent_options.trust_bundle_path = home + "/certs/edge-ca.pem";
  agent_options.ca_key_path = home + "/certs/edge-ca.key.pem";
  agent_options.log_level = log_level;
  if (const char* unit = std::getenv("CAIRN_AGENT_COOL_OFF_MS")) {
    // Tests shorten IoT Edge's 10 s back-off unit so a crash loop is observable quickly.
    agent_options.restart.cool_off_unit = std::chrono::milliseconds(std::atoll(unit));
  }
  auto process_runtime = std::make_shared<agent::ProcessRuntime>(
      agent::ProcessRuntimeOptions{home + "/modules", 1024 * 1024});
  // The docker runtime, when an engine socket is known. An engine that is down now is not an
  // error: modules of type docker are reported failed with the engine's answer until it is up.
  std::shared_ptr<agent::ModuleRuntime> docker_runtime;
  std::string docker_why;
  if (auto socket = docker_socket(docker_uri_flag, config->agent.docker_uri, docker_why);
      !socket.empty()) {
    agent::DockerRuntimeOptions docker_options;
    docker_options.docker.socket_path = socket;
    // Containers carry this home as their owner: a restarted cairnd adopts its own only.
    docker_options.owner = std::filesystem::weakly_canonical(home, ec).string();
    if (docker_options.owner.empty()) docker_options.owner = home;
    auto created = agent::DockerRuntime::create(docker_options);
    if (!created) {
      log::error("cairnd", "docker runtime: {}", created.error().message);
      return 1;
    }
    if (auto up = (*created)->client().version()) {
      log::info("cairnd", "docker runtime: {} {} (API {}) at {} (from {})",
                up->podman ? "Podman" : "Docker", up->version, up->api_version, socket, docker_why);
    } else {
      log::warn("cairnd",
                "docker runtime: the engine at {} (from {}) does not answer: {}; modules of type "
                "docker fail until it does",
                socket, docker_why, up.error().message);
    }
    docker_runtime = std::move(*created);
  } else {
    log::info("cairnd", "no docker runtime: {}; only process modules can run", docker_why);
  }
  auto agent =
      std::make_unique<agent::Agent>(agent_options, agent_host, process_runtime, docker_runtime);
  if (auto s = agent->start(); !s) {
    log::error("cairnd", "{}", s.error().to_string());
    return 1;
  }
  agent_ref = agent.get();
  if (upstream) {
    // Deployments from the cloud: cairnd holds the cloud links of the $edgeAgent and $edgeHub
    // identities, as edgeAgent and edgeHub do (their tokens are signed with the edge device's
    // key, which the cloud accepts for the device's modules). Each (re)connection fetches the
    // twin, so a deployment made while offline arrives when the link comes back; desired
    // patches reach the agent through the routing above, and the agent's reported properties
    // go up through the twin cache.
    for (const char* system_module : {"$edgeAgent", "$edgeHub"}) {
      upstream->connected(hub::Principal{config->device_id, system_module, 0});
    }
    // The twins as cached: a deployment whose desired versions the agent has not handled yet
    // (cairnd stopped between caching it and applying it) is applied now, with no network.
    asio::post(io, [&twins_ref, &agent_ref, agent_twin, hub_twin] {
      auto cache = twins_ref.lock();
      if (!cache || agent_ref == nullptr) return;
      auto a = cache->cached_view(agent_twin);
      auto e = cache->cached_view(hub_twin);
      if (a && e) agent_ref->deploy_twins((*a)["desired"], (*e)["desired"]);
    });
  }
  if (!manifest.empty()) {
    agent->deploy(manifest_document, "--manifest " + manifest, [manifest](agent::DeployResult r) {
      if (!r.applied) {
        log::error("cairnd", "{}: the deployment was not applied", manifest);
        for (const auto& p : r.problems) log::error("cairnd", "  {}: {}", p.path, p.message);
      }
    });
  }
  auto mgmt = net::UnixHttpServer::start(
      io, config->mgmt_socket(),
      [h = *hub, api, a = agent.get()](const net::HttpRequest& req, net::HttpRespond respond) {
        if (a->handle_management(req, respond)) return;
        if (!api->handle_management(req, respond)) h->handle_management(req, std::move(respond));
      });
  if (!mgmt) {
    log::error("cairnd", "{}", mgmt.error().to_string());
    return 1;
  }
  // Module-to-module direct methods: HTTPS on the gateway address (docs/protocol.md §9.2).
  std::shared_ptr<net::HttpServer> gateway;
  if (config->http.port != 0) {
    auto started =
        net::HttpServer::start(io, config->mqtt.listen, config->http.port, (*hub)->tls_context(),
                               [api](const net::HttpRequest& req, net::HttpRespond respond) {
                                 api->handle_gateway(req, std::move(respond));
                               });
    if (started) {
      gateway = *started;
      log::info("cairnd", "direct methods over HTTPS on {}:{}", config->mqtt.listen,
                gateway->port());
    } else {
      // Messages, twins and cloud methods do not need it: run on, but say how to fix it.
      log::warn("cairnd",
                "module-to-module direct methods are off: {} (port 443 needs root or "
                "CAP_NET_BIND_SERVICE; set [http] port in config.toml, 0 to disable)",
                started.error().message);
    }
  }
  asio::signal_set signals(io, SIGINT, SIGTERM);
  std::thread agent_stopper;
  signals.async_wait([&](net::error_code, int sig) {
    log::info("cairnd", "signal {}: shutting down", sig);
    // The agent stops its modules first, calling into the hub meanwhile, so it stops on a
    // thread of its own while the hub keeps serving; then the hub shuts down.
    agent_stopper = std::thread([&] {
      agent->stop();
      asio::post(io, [&] {
        (*mgmt)->stop();
        if (gateway) gateway->stop();
        if (upstream) upstream->stop();
        (*hub)->stop();
        // Sessions finish their last writes; then the loop runs dry and returns.
        asio::post(io, [&io] { io.stop(); });
      });
    });
  });
  // "ready" only once the signal handler is installed: a SIGTERM right after it stops cleanly.
  log::info("cairnd", "ready: home={} device={} mgmt={}", home, config->device_id,
            config->mgmt_socket());
  net::run_contained(io);  // a handler that throws is logged; the daemon goes on
  if (agent_stopper.joinable()) agent_stopper.join();
  agent_ref = nullptr;
  agent.reset();
  api.reset();
  upstream.reset();
  twins.reset();
  hub->reset();
  if (auto s = (*store)->flush(); !s) {
    log::error("cairnd", "final store flush failed: {}", s.error().to_string());
    return 1;
  }
  log::info("cairnd", "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cairn::tune_heap_trimming();
  CLI::App app{"cairnd — the cairn edge daemon: MQTT hub with IoT Edge routes and durable queues"};
  std::string home = "/var/lib/cairn";
  std::string config_path;
  std::string manifest;
  std::string level = "info";
  app.add_option("--home", home, "Directory for data, sockets, certificates and config.toml")
      ->capture_default_str();
  app.add_option("--config", config_path, "Config file (default: HOME/config.toml)");
  app.add_option("--manifest", manifest,
                 "IoT Edge deployment manifest; its $edgeHub section gives the routes");
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  std::string docker_uri;
  app.add_option("--docker-uri", docker_uri,
                 "Docker Engine API socket for modules of type docker (unix:///PATH, or none); "
                 "overrides config.toml [agent] docker_uri, $DOCKER_HOST and "
                 "/var/run/docker.sock");
  app.set_version_flag("--version", std::string("cairnd ") + CAIRN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto parsed_level = cairn::log::parse_level(level);
  if (!parsed_level) {
    std::cerr << "cairnd: " << parsed_level.error().message << "\n";
    return 2;
  }
  cairn::log::init(*parsed_level);
  if (!docker_uri.empty() && docker_uri != "none" && !docker_uri.starts_with("unix://") &&
      !docker_uri.starts_with("/")) {
    std::cerr << "cairnd: --docker-uri must be a unix socket (unix:///PATH or /PATH) or none; "
                 "got '"
              << docker_uri << "'\n";
    return 2;
  }
  if (config_path.empty()) {
    config_path = home + "/config.toml";  // optional: defaults apply without it
  } else if (!std::filesystem::exists(config_path)) {
    // A --config given explicitly must exist: a typo would otherwise run on defaults.
    std::cerr << "cairnd: " << config_path << ": no such config file\n";
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return run(home, config_path, manifest, level, docker_uri);
  } catch (const std::exception& e) {
    cairn::log::error("cairnd", "fatal: {}", e.what());
    return 1;
  }
}
