// cairn-cloud: the self-hosted cloud hub. One process serves the IoT Hub device protocol over
// MQTT/TLS (the same broker code as cairnd's hub, in its cloud role: every registered device
// and module, twins of record, telemetry into a durable queue drained by the sink) and the
// IoT Hub service REST API over HTTPS, on one address.
#include <chrono>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <limits>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cloud/authenticator.hpp"
#include "cloud/connections.hpp"
#include "cloud/model_store.hpp"
#include "cloud/registry.hpp"
#include "cloud/rest_api.hpp"
#include "cloud/sqlite_cloud_store.hpp"
#include "cloud/store_worker.hpp"
#include "cloud/telemetry_sink.hpp"
#include "cloud/twins.hpp"
#include "core/log.hpp"
#include "core/memory.hpp"
#include "hub/edgehub_config.hpp"
#include "hub/hub.hpp"
#include "net/asio.hpp"
#include "net/http.hpp"
#include "net/spawn.hpp"
#include "store/message_store.hpp"

namespace {

using namespace cairn;

struct Options {
  std::string home = "/var/lib/cairn-cloud";
  std::string listen = "127.0.0.2";
  std::string hostname;  // default: the listen address
  std::uint16_t mqtt_port = 8883;
  std::uint16_t https_port = 443;
  std::string messages_file;  // JSON lines; default HOME/data/messages.jsonl
  bool fsync = true;
  // Cap of the ingest queue (queue.db): messages PUBACKed but not yet in the cloud store. When
  // it is full, publishers get no PUBACK (they resend later) until the telemetry writer catches
  // up. 0 = no cap.
  std::uint64_t max_queue_bytes = 1024ull * 1024 * 1024;
  cloud::ModelStoreOptions models;  // dir: HOME/models
  cloud::CloudAuthLimits auth;
  cloud::StoreWorkerOptions store;
  // How long a REST request or a device's twin request may wait for the database (queued, and
  // then locked by another process) before it is answered 503.
  std::uint32_t store_timeout_ms = 10'000;
  // How long a CONNECT may wait for its identity lookup before it is refused with "server
  // unavailable". Below the hub's CONNECT timeout (10 s), which would close it silently.
  std::uint32_t auth_timeout_ms = 5'000;
  // The broker's limits (hub::HubConfig::Mqtt), for the cloud role.
  std::size_t max_connections = hub::HubConfig{}.mqtt.max_connections;
  std::size_t max_message_bytes = hub::HubConfig{}.mqtt.max_message_bytes;
  std::size_t max_inflight = hub::HubConfig{}.mqtt.max_inflight_in;
};

// Which clients are connected, as the hub reports them: read by REST requests on the store
// worker's thread (the hub itself belongs to the io thread). Counted, because a client that
// reconnects may be reported connected before its old session is reported gone.
class LiveClients {
 public:
  void set(const std::string& client_id, bool connected) {
    std::lock_guard lock(mu_);
    auto& n = connected_[client_id];
    n += connected ? 1 : -1;
    if (n <= 0) connected_.erase(client_id);
  }
  bool connected(const std::string& client_id) const {
    std::lock_guard lock(mu_);
    return connected_.contains(client_id);
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, int> connected_;  // bounded by the hub's connections
};

// Device-to-cloud messages wait in the hub's durable queue until the sink has stored them.
constexpr const char* kSinkRoutes = R"({"schemaVersion": "1.1",
  "routes": {"telemetry": "FROM /* INTO $upstream"},
  "storeAndForwardConfiguration": {"timeToLiveSecs": -1}})";

int run(const Options& o) {
  const std::string hostname = o.hostname.empty() ? o.listen : o.hostname;
  std::error_code ec;
  std::filesystem::create_directories(o.home + "/data", ec);
  if (ec) {
    log::error("cairn-cloud", "cannot create {}/data: {}", o.home, ec.message());
    return 1;
  }
  cloud::SqliteCloudStoreOptions db_options;
  db_options.path = o.home + "/data/cloud.db";
  db_options.full_sync = o.fsync;
  auto db = cloud::SqliteCloudStore::open(db_options);
  if (!db) {
    log::error("cairn-cloud", "cannot open {}: {}", db_options.path, db.error().to_string());
    return 1;
  }
  auto policy = (*db)->find_policy(cloud::kOwnerPolicy);
  if (!policy || !*policy) {
    log::error("cairn-cloud", "the {} access policy is missing from {}", cloud::kOwnerPolicy,
               db_options.path);
    return 1;
  }
  store::Options queue_options;
  queue_options.path = o.home + "/data/queue.db";
  queue_options.sync = o.fsync ? store::Options::Sync::full : store::Options::Sync::normal;
  queue_options.max_bytes = o.max_queue_bytes;
  queue_options.exit_on_fatal = true;  // a supervisor restarts cairn-cloud on a clean reopen
  auto queue = store::MessageStore::open(queue_options);
  if (!queue) {
    log::error("cairn-cloud", "cannot open {}: {}", queue_options.path, queue.error().to_string());
    return 1;
  }

  hub::HubConfig config;
  config.home = o.home;
  config.device_id = "cairn-cloud";
  config.hostname = hostname;
  config.iothub_hostname = hostname;
  config.mqtt.listen = o.listen;
  config.mqtt.tls_port = o.mqtt_port;
  config.mqtt.plain_port = 0;
  config.store.fsync = o.fsync;
  config.store.max_bytes = o.max_queue_bytes;
  config.mqtt.max_connections = o.max_connections;
  config.mqtt.max_message_bytes = o.max_message_bytes;
  config.mqtt.max_inflight_in = o.max_inflight;

  asio::io_context io(1);
  auto hub = hub::Hub::make(io, config, **queue);
  if (!hub) {
    log::error("cairn-cloud", "{}", hub.error().to_string());
    return 1;
  }
  auto routes = hub::parse_edgehub_desired(nlohmann::json::parse(kSinkRoutes));
  if (!routes) {
    log::error("cairn-cloud", "{}", routes.error().to_string());
    return 1;
  }
  // The telemetry writer has a connection of its own, used on its own thread: its commits
  // (and a database locked by someone else) never hold up the io thread.
  auto sink_db = cloud::SqliteCloudStore::open(db_options);
  if (!sink_db) {
    log::error("cairn-cloud", "cannot open {}: {}", db_options.path, sink_db.error().to_string());
    return 1;
  }
  std::weak_ptr<hub::Hub> weak_hub = *hub;
  cloud::TelemetrySinkOptions sink_options;
  sink_options.jsonl_path =
      o.messages_file.empty() ? o.home + "/data/messages.jsonl" : o.messages_file;
  sink_options.exit_on_fatal = true;
  sink_options.dead_letter = [weak_hub](const Message& m, const std::string& reason) {
    if (auto h = weak_hub.lock()) h->dead_letter("$upstream", m, reason);
  };
  auto sink = cloud::TelemetrySink::open(io, std::move(*sink_db), sink_options);
  if (!sink) {
    log::error("cairn-cloud", "{}", sink.error().to_string());
    return 1;
  }
  // Registry, twin and REST work runs on the store worker's thread, on the connection opened
  // above: a slow or locked database delays the clients that need it, not the io thread.
  auto started = cloud::StoreWorker::start(io, std::move(*db), o.store);
  if (!started) {
    log::error("cairn-cloud", "{}", started.error().to_string());
    return 1;
  }
  std::unique_ptr<cloud::StoreWorker> worker = std::move(*started);
  const auto store_timeout = std::chrono::milliseconds(o.store_timeout_ms);
  cloud::Registry registry(worker->store());
  cloud::CloudAuthenticator authenticator(
      registry, hostname, o.auth, worker->runner(std::chrono::milliseconds(o.auth_timeout_ms)));
  authenticator.set_connection_count(
      [weak_hub](const std::string& device_id, const std::string& except_client) {
        auto h = weak_hub.lock();
        return h ? h->device_connections(device_id, except_client) : std::size_t{0};
      });
  cloud::CloudTwins twins(worker->store(), worker->runner(store_timeout));
  LiveClients live;
  // Connection state is written on the telemetry writer's thread, never on the io thread.
  cloud::ConnectionTracker connections(
      [weak_sink = std::weak_ptr<cloud::TelemetrySink>(*sink), &live](
          const cloud::TwinKey& who, bool connected, std::int64_t at_ms) {
        live.set(who.client_id(), connected);
        if (auto w = weak_sink.lock()) w->record_connection(who, connected, at_ms);
      });
  hub::HubServices services;
  services.authenticator = &authenticator;
  services.twins = &twins;
  services.observer = &connections;
  (*hub)->set_services(services);
  if (auto s = (*hub)->apply(*routes); !s) {
    log::error("cairn-cloud", "{}", s.error().to_string());
    return 1;
  }
  if (auto s = (*hub)->start(); !s) {
    log::error("cairn-cloud", "{}", s.error().to_string());
    return 1;
  }
  (*hub)->attach_upstream(*sink);

  cloud::RestHooks hooks;
  hooks.push_desired = [weak_hub](const std::string& client_id, const nlohmann::json& patch) {
    if (auto h = weak_hub.lock()) h->notify_desired(client_id, patch);
  };
  hooks.invoke_method = [weak_hub](const std::string& client_id, hub::MethodRequest request,
                                   hub::MethodCallback done) {
    if (auto h = weak_hub.lock()) {
      h->invoke_method(client_id, std::move(request), std::move(done));
    } else {
      done(make_error(errc::unavailable, "cairn-cloud is stopping"));
    }
  };
  hooks.disconnect_client = [weak_hub](const std::string& client_id, const std::string& reason) {
    if (auto h = weak_hub.lock(); h && h->disconnect_client(client_id, reason) > 0) {
      log::info("cairn-cloud", "client={} disconnected: {}", client_id, reason);
    }
  };
  hooks.disconnect_device = [weak_hub](const std::string& device_id, const std::string& reason) {
    if (auto h = weak_hub.lock()) {
      if (auto n = h->disconnect_device(device_id, reason); n > 0) {
        log::info("cairn-cloud", "device={}: {} connections closed: {}", device_id, n, reason);
      }
    }
  };
  hooks.is_connected = [&live](const std::string& client_id) { return live.connected(client_id); };
  hooks.list_dead_letters = [weak_hub](net::HttpRespond respond) {
    if (auto h = weak_hub.lock()) {
      h->list_dead_letters(std::move(respond));
    } else {
      respond(net::json_response(503, {{"error", "cairn-cloud is stopping"}}));
    }
  };
  hooks.status_extension = [weak_hub, weak_sink = std::weak_ptr<cloud::TelemetrySink>(*sink),
                            &queue = **queue, max_queue_bytes = o.max_queue_bytes, &authenticator,
                            &worker = *worker, &o] {
    nlohmann::json out = nlohmann::json::object();
    const auto sc = worker.counters();
    out["store"] = {{"queued", sc.queued},
                    {"maxQueued", worker.options().max_queued},
                    {"timeoutMs", o.store_timeout_ms},
                    {"authTimeoutMs", o.auth_timeout_ms},
                    {"refusedFull", sc.refused_full},
                    {"refusedTimeout", sc.refused_timeout},
                    {"failedException", sc.failed_exception}};
    const auto& limits = authenticator.limits();
    out["auth"] = {
        {"maxTokenLifetimeSecs", limits.max_token_lifetime_secs},
        {"maxModulesPerDevice", limits.max_modules_per_device},
        {"maxConnectionsPerDevice", limits.max_connections_per_device},
        {"modulesRegistered", authenticator.modules_registered()},
        {"modulesRefusedQuota", authenticator.modules_refused_quota()},
        {"connectionsRefusedDeviceLimit", authenticator.connections_refused_device_limit()}};
    const auto st = queue.stats();
    out["ingestQueue"] = {{"healthy", st.healthy},
                          {"refusing", st.refusing},
                          {"refusalReason", st.refusal_reason},
                          {"storedBytes", st.stored_bytes},
                          {"storedMessages", st.stored_messages},
                          {"maxBytes", max_queue_bytes},
                          {"rejectedFullTotal", st.rejected_full_total},
                          {"refusedWritesTotal", st.refused_writes_total}};
    if (auto s = weak_sink.lock()) {
      const auto c = s->counters();
      out["telemetryWriter"] = {{"waiting", c.waiting},
                                {"storeFailures", c.store_failures},
                                {"deadLettered", c.dead_lettered},
                                {"fileFailures", c.file_failures},
                                {"connectionRecordFailures", c.connection_record_failures},
                                {"failing", c.failing},
                                {"lastFailure", c.last_failure}};
    }
    if (auto h = weak_hub.lock()) {
      const auto hub_status = h->status();
      out["messagesDeadLettered"] = hub_status["counters"]["messagesDeadLettered"];
      out["messagesRejected"] = hub_status["counters"]["messagesRejected"];
    }
    return out;
  };
  hooks.metrics = [weak_hub, &authenticator, &worker = *worker] {
    std::string out;
    auto metric = [&out](const char* name, const char* type, const char* help,
                         std::uint64_t value) {
      out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, value);
    };
    metric("cairn_cloud_modules_registered_total", "counter",
           "Modules registered because their edge device connected them",
           authenticator.modules_registered());
    metric("cairn_cloud_modules_refused_quota_total", "counter",
           "Module registrations refused by --max-modules-per-device",
           authenticator.modules_refused_quota());
    metric("cairn_cloud_connections_refused_device_limit_total", "counter",
           "Connections refused by --max-connections-per-device",
           authenticator.connections_refused_device_limit());
    const auto sc = worker.counters();
    metric("cairn_cloud_store_queued", "gauge", "Requests waiting for the database thread",
           sc.queued);
    metric("cairn_cloud_store_refused_total", "counter",
           "Requests refused because the database did not take them in time or the store "
           "queue was full",
           sc.refused_full + sc.refused_timeout);
    if (auto h = weak_hub.lock()) {
      const auto& c = h->counters();
      metric("cairn_cloud_connections_refused_total", "counter",
             "MQTT connections refused (credentials, limits, malformed CONNECT)",
             c.connections_refused);
      metric("cairn_cloud_connected_clients", "gauge", "MQTT connections open",
             h->status()["mqtt"]["connections"].get<std::uint64_t>());
    }
    return out;
  };
  cloud::ModelStoreOptions model_options = o.models;
  model_options.dir = o.home + "/models";
  auto model_store = cloud::ModelStore::open(model_options);
  if (!model_store) {
    log::error("cairn-cloud", "{}", model_store.error().to_string());
    return 1;
  }
  hooks.models = model_store->get();
  hooks.store = worker->runner(store_timeout);
  cloud::RestApiConfig rest_config;
  rest_config.hostname = hostname;
  rest_config.max_token_lifetime_secs = o.auth.max_token_lifetime_secs;
  auto rest = std::make_shared<cloud::RestApi>(rest_config, registry, twins, hooks);
  auto https =
      net::HttpServer::start(io, o.listen, o.https_port, (*hub)->tls_context(),
                             [rest](const net::HttpRequest& request, net::HttpRespond respond) {
                               rest->handle(request, std::move(respond));
                             });
  if (!https) {
    log::error("cairn-cloud", "{} (port 443 needs root or CAP_NET_BIND_SERVICE; see --https-port)",
               https.error().to_string());
    return 1;
  }

  // Signals are caught before "ready" is said: a SIGTERM right after it stops cleanly.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](net::error_code, int sig) {
    log::info("cairn-cloud", "signal {}: shutting down", sig);
    (*https)->stop();
    (*hub)->stop();
    asio::post(io, [&io] { io.stop(); });
  });
  // What a user needs to connect, on stdout; logs go to stderr.
  std::cout << "cairn-cloud ready\n"
            << "  MQTT (devices):   mqtts://" << hostname << ":" << (*hub)->tls_port() << "\n"
            << "  REST (service):   https://" << hostname << ":" << (*https)->port() << "\n"
            << "  models:           https://" << hostname << ":" << (*https)->port()
            << "/models/NAME-VERSION.cidx\n"
            << "  CA certificate:   " << o.home << "/certs/edge-ca.pem\n"
            << "  messages:         " << sink_options.jsonl_path << "\n"
            << "  service connection string:\n"
            << "    HostName=" << hostname << ";SharedAccessKeyName=" << cloud::kOwnerPolicy
            << ";SharedAccessKey=" << (*policy)->primary_key << "\n"
            << std::flush;
  log::info("cairn-cloud", "ready: home={} mqtt={}:{} https={}:{}", o.home, o.listen,
            (*hub)->tls_port(), o.listen, (*https)->port());
  net::run_contained(io);  // a handler that throws is logged; the daemon goes on
  worker.reset();          // after the job in progress: jobs use what is destroyed below
  rest.reset();
  hub->reset();
  if (auto s = (*queue)->flush(); !s) {
    log::error("cairn-cloud", "final store flush failed: {}", s.error().to_string());
    return 1;
  }
  log::info("cairn-cloud", "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cairn::tune_heap_trimming();
  CLI::App app{
      "cairn-cloud — the self-hosted cloud hub: device registry, twins, direct methods and a "
      "telemetry sink behind the IoT Hub device (MQTT) and service (REST) protocols"};
  Options o;
  std::string level = "info";
  app.add_option("--home", o.home, "Directory for the database, certificates and messages")
      ->capture_default_str();
  app.add_option("--listen", o.listen,
                 "IP address for MQTT and HTTPS (cairnd on the same host keeps 127.0.0.1)")
      ->capture_default_str();
  app.add_option("--hostname", o.hostname,
                 "Host name devices and services use (certificate and token audience; default: "
                 "the listen address)");
  app.add_option("--mqtt-port", o.mqtt_port, "MQTT over TLS port")->capture_default_str();
  app.add_option("--https-port", o.https_port, "REST API port")->capture_default_str();
  app.add_option(
      "--messages-file", o.messages_file,
      "JSON-lines file receiving every stored message (default HOME/data/messages.jsonl)");
  app.add_option("--fsync", o.fsync, "Sync every commit to disk (true|false)")
      ->capture_default_str();
  app.add_option("--max-queue-bytes", o.max_queue_bytes,
                 "Cap of the ingest queue (messages accepted, not yet stored); when full, "
                 "publishers get no PUBACK until it drains. 0 = no cap")
      ->capture_default_str();
  app.add_option("--model-max-bytes", o.models.max_model_bytes,
                 "Largest model version `cairn cloud model push` may store")
      ->capture_default_str();
  app.add_option("--model-store-max-bytes", o.models.max_store_bytes,
                 "Cap on the model store (HOME/models: chunks, deltas, indexes); pushes beyond "
                 "it are refused")
      ->capture_default_str();
  app.add_option("--model-delta-versions", o.models.delta_versions,
                 "Earlier versions of a model a pushed version gets deltas from")
      ->capture_default_str();
  app.add_option("--max-token-lifetime-secs", o.auth.max_token_lifetime_secs,
                 "Refuse SAS tokens (MQTT and REST) valid for longer than this from the moment "
                 "they are presented. 0 = no maximum")
      ->capture_default_str();
  app.add_option("--max-modules-per-device", o.auth.max_modules_per_device,
                 "Modules an edge device may register by connecting them with its key; beyond "
                 "it the connection is refused")
      ->capture_default_str();
  app.add_option("--max-connections-per-device", o.auth.max_connections_per_device,
                 "MQTT connections one device and its modules may hold at once. 0 = no limit")
      ->capture_default_str();
  // A limit that must be at least 1, its default shown in --help.
  auto positive = [&app](const char* name, auto& value, const char* help) {
    using T = std::remove_reference_t<decltype(value)>;
    return app.add_option(name, value, help)
        ->capture_default_str()
        ->check(CLI::Range(T{1}, std::numeric_limits<T>::max()));
  };
  positive("--max-store-queue", o.store.max_queued,
           "Requests (REST, twin, CONNECT lookups) that may wait for the database thread; beyond "
           "it they are refused at once (HTTP 503, CONNACK server unavailable)");
  positive("--store-timeout-ms", o.store_timeout_ms,
           "How long a REST or twin request may wait for the database (queued or locked by "
           "another process) before it is answered 503 with nothing changed");
  positive("--auth-timeout-ms", o.auth_timeout_ms,
           "How long a CONNECT may wait for its identity lookup before it is refused with server "
           "unavailable");
  positive("--max-connections", o.max_connections,
           "MQTT connections open at once (every socket, authenticated or not)");
  app.add_option("--max-message-bytes", o.max_message_bytes,
                 "Largest device-to-cloud message (body plus properties); a bigger PUBLISH "
                 "closes the connection (at most 16 MiB)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{16} << 20));
  app.add_option("--max-inflight", o.max_inflight,
                 "QoS 1 publishes and twin requests of one connection waiting for their answer "
                 "before the broker stops reading from it")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{65535}));
  app.add_option("--model-delta-max-bytes", o.models.max_delta_input_bytes,
                 "Segment bytes one push compresses into deltas at most (0: no cap); changed "
                 "segments past it are fetched as chunks")
      ->capture_default_str();
  std::int64_t orphan_grace_seconds = o.models.orphan_grace.count();
  app.add_option("--model-orphan-grace", orphan_grace_seconds,
                 "Seconds a chunk or delta no index references is kept (a push in progress "
                 "uploads chunks before its commit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("cairn-cloud ") + CAIRN_VERSION);
  try {
    app.parse(argc, argv);
    o.models.orphan_grace = std::chrono::seconds(orphan_grace_seconds);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto parsed_level = cairn::log::parse_level(level);
  if (!parsed_level) {
    std::cerr << "cairn-cloud: " << parsed_level.error().message << "\n";
    return 2;
  }
  cairn::log::init(*parsed_level);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return run(o);
  } catch (const std::exception& e) {
    cairn::log::error("cairn-cloud", "fatal: {}", e.what());
    return 1;
  }
}
