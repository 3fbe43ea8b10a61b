// cairn-infer: serves ML models (ONNX through ONNX Runtime, TFLite through Arm NN) over REST:
// Azure ML style /score, the KServe v2 / Open Inference Protocol and Prometheus /metrics.
// Standalone: models from --model and/or a --models JSON file (the module twin's desired
// schema, docs/infer.md), re-read on SIGHUP to load new versions without stopping.
// Module mode (the IoT Edge environment or --connection-string): models from the module twin,
// state reported back, scoring requests on a routed input answered on an output; REST too when
// --http is given. Models given by URL are fetched with model delivery (cairn::modelpkg).
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "cairn/module_client.hpp"
#include "core/log.hpp"
#include "core/thread_name.hpp"
#include "infer/model_delivery.hpp"
#include "infer/model_manager.hpp"
#include "infer/module_service.hpp"
#include "infer/rest_api.hpp"
#include "net/asio.hpp"
#include "net/http.hpp"

namespace {

using namespace cairn;

constexpr std::string_view kLog = "cairn-infer";

struct Options {
  std::vector<std::string> models;  // NAME=PATH[@VERSION]
  std::string models_file;
  std::string default_model;
  std::string http = "127.0.0.1:8000";
  bool http_given = false;
  // Module mode.
  std::string connection_string;
  std::string ca_file;
  std::string connect_host;
  int port = 8883;
  infer::ModuleOptions module;
  infer::DeliveryOptions delivery;
  std::size_t max_body_bytes = 64 * 1024 * 1024;
  std::size_t max_reading_bytes = 256 * 1024 * 1024;
  std::size_t max_connections = 256;
  // Threads serving HTTP; with 2 or more, one request at a time may run inline.
  std::size_t http_threads = 2;
  infer::ManagerOptions manager;
  infer::ModelSpec defaults;
};

Result<infer::ModelSpec> parse_model_arg(const std::string& arg, const infer::ModelSpec& defaults) {
  const auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) {
    return make_error(errc::invalid_argument, "--model " + arg + ": expected NAME=PATH[@VERSION]");
  }
  infer::ModelSpec spec = defaults;
  spec.name = arg.substr(0, eq);
  spec.path = arg.substr(eq + 1);
  const auto at = spec.path.rfind('@');
  const auto slash = spec.path.rfind('/');
  if (at != std::string::npos && (slash == std::string::npos || at > slash)) {
    spec.version = spec.path.substr(at + 1);
    spec.path.resize(at);
  }
  // Validate the name and version the same way the twin's entries are.
  auto checked =
      infer::parse_model_spec(spec.name, {{"version", spec.version}, {"path", spec.path}});
  if (!checked) return checked.error();
  return spec;
}

Result<std::pair<std::string, std::uint16_t>> parse_host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return make_error(errc::invalid_argument, "--http " + text + ": expected HOST:PORT");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    return make_error(errc::invalid_argument, "--http " + text + ": bad port");
  }
  return std::make_pair(host, static_cast<std::uint16_t>(port));
}

Result<nlohmann::json> read_models_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(errc::not_found, path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  auto j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded()) return make_error(errc::invalid_argument, path + ": not valid JSON");
  if (j.contains("models")) j = j["models"];  // the twin's desired section as a whole
  if (!j.is_object()) {
    return make_error(errc::invalid_argument, path + ": expected {\"name\": {...}, ...}");
  }
  return j;
}

bool module_environment() {
  for (const char* name : {"EdgeHubConnectionString", "IOTEDGE_WORKLOADURI", "IOTEDGE_MODULEID"}) {
    if (const char* v = std::getenv(name); v && *v) return true;
  }
  return false;
}

int run(Options o) {
  const bool module_mode = !o.connection_string.empty() || module_environment();
  const bool serve_http = !module_mode || o.http_given;
  auto address = parse_host_port(o.http);
  if (!address) {
    log::error(kLog, "{}", address.error().message);
    return 2;
  }
  Result<sdk::ConnectionSettings> settings = make_error(errc::invalid_argument, "standalone");
  if (module_mode) {
    settings = o.connection_string.empty()
                   ? sdk::settings_from_environment()
                   : sdk::settings_from_connection_string(o.connection_string);
    if (!settings) {
      log::error(kLog, "{}", settings.error().message);
      return 2;
    }
    if (!o.ca_file.empty()) settings->ca_file = o.ca_file;
  }
  std::vector<infer::ModelSpec> specs;
  std::vector<std::string> pinned;
  for (const auto& arg : o.models) {
    auto spec = parse_model_arg(arg, o.defaults);
    if (!spec) {
      log::error(kLog, "{}", spec.error().message);
      return 2;
    }
    spec->is_default = spec->name == o.default_model;
    pinned.push_back(spec->name);
    specs.push_back(std::move(*spec));
  }
  if (specs.empty() && o.models_file.empty() && !module_mode) {
    log::error(kLog,
               "nothing to serve: give --model NAME=PATH or --models FILE, or run as a module "
               "(--connection-string or the IoT Edge environment)");
    return 2;
  }

  // Declared first, destroyed last: model workers still finishing requests at shutdown drop
  // HTTP answers whose timers belong to these io_contexts. `io` runs on this thread (signals,
  // the module client); `http_io` on o.http_threads threads of its own. Concurrency hint 1:
  // one of them at a time does the I/O and runs what it finds, the others sleep until woken
  // (by an answer from a model worker, or by the inline-run watch when a request running
  // inline takes long; infer/inline_watch.hpp), so a request wakes no second thread.
  asio::io_context io(1);
  asio::io_context http_io(1);
  infer::ModelDelivery delivery(o.delivery);
  infer::ModelManager models(o.manager);
  models.set_fetcher(
      [&delivery](const infer::ModelSpec& spec, const infer::DeliveryProgress& progress) {
        return delivery.fetch(spec, progress);
      });
  for (const auto& spec : specs) {
    if (auto s = models.load(spec, true); !s) {
      log::error(kLog, "model {} version {}: {}", spec.name, spec.version, s.error().message);
      return 1;
    }
  }
  auto apply_file = [&] {
    auto desired = read_models_file(o.models_file);
    if (!desired) {
      log::error(kLog, "{}", desired.error().message);
      return;
    }
    if (!o.default_model.empty() && desired->contains(o.default_model)) {
      (*desired)[o.default_model]["default"] = true;
    }
    (void)models.apply_desired(*desired, pinned);
  };
  if (!o.models_file.empty()) apply_file();

  infer::RestOptions rest_options;
  rest_options.server_version = CAIRN_VERSION;
  if (o.http_threads > 1) {
    rest_options.max_inline_runs = 1;
    rest_options.wake_http_thread = [&http_io] { asio::post(http_io, [] {}); };
  }
  infer::RestApi rest(models, rest_options);
  std::shared_ptr<net::HttpServer> server;
  std::unique_ptr<sdk::ModuleClient> client;
  std::unique_ptr<infer::ModuleService> service;
  // Signals are caught from here on (one that arrives before the wait below is kept for it), so
  // a SIGTERM right after the "listening" line stops cleanly instead of killing the process.
  asio::signal_set stop_signals(io, SIGINT, SIGTERM);
  asio::signal_set reload_signal(io, SIGHUP);
  stop_signals.async_wait([&](net::error_code ec, int sig) {
    if (ec) return;
    log::info(kLog, "signal {}: shutting down", sig);
    if (server) server->stop();
    if (client) {
      client->stop();  // io stops once the client reports `stopped`
    } else {
      asio::post(io, [&io] { io.stop(); });
    }
  });
  if (serve_http) {
    net::HttpLimits limits;
    limits.max_body_bytes = o.max_body_bytes;
    limits.max_reading_body_bytes = o.max_reading_bytes;
    limits.max_connections = o.max_connections;
    auto started = net::HttpServer::start(
        http_io, address->first, address->second, nullptr,
        [&rest](net::HttpRequest& request, net::HttpRespond respond) {
          rest.handle(request, std::move(respond));
        },
        limits);
    if (!started) {
      log::error(kLog, "cannot listen on {}: {}", o.http, started.error().to_string());
      return 1;
    }
    server = *started;
    // The bound address on stdout (port 0 picks one) for scripts and tests.
    std::cout << "cairn-infer listening on http://" << address->first << ":" << server->port()
              << std::endl;
    log::info(kLog, "ready: http={}:{} models={}", address->first, server->port(),
              models.list().size());
  }

  // Module mode: the SDK client on the same io_context, the service between it and the models.
  if (module_mode) {
    sdk::ModuleClientOptions client_options;
    client_options.connect_host = o.connect_host;
    client_options.port = static_cast<std::uint16_t>(o.port);
    auto created = sdk::ModuleClient::create(io, *settings, client_options);
    if (!created) {
      log::error(kLog, "{}", created.error().message);
      return 2;
    }
    client = std::move(*created);
    sdk::ModuleClient* c = client.get();
    infer::ModuleLink link;
    const std::size_t max_message_bytes = client_options.max_message_bytes;
    link.send = [c, max_message_bytes](const std::string& output, infer::ModuleMessage m) {
      const std::size_t body_bytes = m.body.size();
      sdk::OutputMessage out;
      out.body = std::move(m.body);
      out.properties.message_id = std::move(m.message_id);
      out.properties.correlation_id = std::move(m.correlation_id);
      out.properties.content_type = "application/json";
      out.properties.content_encoding = "utf-8";
      out.properties.app = std::move(m.app);
      const std::string correlation_id = out.properties.correlation_id;
      c->send(
          output, std::move(out),
          [c, output, correlation_id, body_bytes, max_message_bytes](Status st) {
            if (st) return;
            log::warn(kLog, "result on output {} not delivered: {}", output, st.error().message);
            // A result too big for one message still gets an answer the caller can correlate.
            if (st.error().code != errc::limit_exceeded || body_bytes + 1024 < max_message_bytes) {
              return;
            }
            sdk::OutputMessage error;
            error.body = nlohmann::json{
                {"error",
                 "the result is " + std::to_string(body_bytes) +
                     " bytes, over the message size limit (" + std::to_string(max_message_bytes) +
                     ")"}}.dump();
            error.properties.correlation_id = correlation_id;
            error.properties.content_type = "application/json";
            error.properties.content_encoding = "utf-8";
            error.properties.app = {{"status", "413"}};
            c->send(output, std::move(error), [output](Status again) {
              if (!again) {
                log::warn(kLog, "error result on output {} not delivered: {}", output,
                          again.error().message);
              }
            });
          });
    };
    link.report = [c](nlohmann::json patch) {
      c->update_reported(std::move(patch), [](Status st) {
        if (!st) log::warn(kLog, "reported properties not stored: {}", st.error().message);
      });
    };
    o.module.pinned = pinned;
    o.module.public_key_fixed = !o.delivery.public_key.empty();
    o.module.twin_public_key_path = o.delivery.data_dir + "/twin-public-key.pem";
    service = std::make_unique<infer::ModuleService>(models, &delivery, std::move(link), o.module);
    infer::ModuleService* svc = service.get();
    client->on_input(o.module.score_input, [svc](const sdk::InputMessage& m) {
      infer::ModuleMessage request;
      request.body = m.body;
      request.message_id = m.properties.message_id;
      request.correlation_id = m.properties.correlation_id;
      request.app = m.properties.app;
      svc->on_message(request);
    });
    client->on_desired([svc](const nlohmann::json& desired, long long version, bool complete) {
      svc->on_desired(desired, version, complete);
    });
    client->on_connection([svc, c, &io](sdk::ConnectionState state, const std::string& reason) {
      log::info(kLog, "hub connection: {}{}{}", sdk::to_string(state), reason.empty() ? "" : ": ",
                reason);
      if (state == sdk::ConnectionState::connected) {
        svc->report_all();
        c->get_twin([svc](Result<nlohmann::json> twin) {
          if (twin && twin->contains("reported")) svc->forget_stale_reports((*twin)["reported"]);
        });
      }
      if (state == sdk::ConnectionState::stopped) asio::post(io, [&io] { io.stop(); });
    });
    client->start();
    log::info(kLog, "module mode: {} scores input '{}' to output '{}'", settings->client_id(),
              o.module.score_input, o.module.results_output);
  }

  std::function<void()> wait_reload = [&] {
    reload_signal.async_wait([&](net::error_code ec, int) {
      if (ec) return;
      if (o.models_file.empty()) {
        log::warn(kLog, "SIGHUP: no --models file to re-read");
      } else {
        log::info(kLog, "SIGHUP: re-reading {}", o.models_file);
        apply_file();  // loads run on the manager's loader thread
      }
      wait_reload();
    });
  };
  wait_reload();
  auto http_work = asio::make_work_guard(http_io);
  std::vector<std::thread> http_runners;
  for (std::size_t i = 0; i < o.http_threads; ++i) {
    http_runners.emplace_back([&http_io] {
      name_this_thread("http");
      http_io.run();
    });
  }
  io.run();
  // The HTTP threads stop before what their requests use (the REST API, the models) goes.
  if (server) server->stop();
  http_work.reset();
  http_io.stop();
  for (auto& runner : http_runners) runner.join();
  // No result or report goes to the client once the service is closed; then the client goes,
  // before the models (whose workers may still finish requests into the closed service).
  if (service) service->close();
  client.reset();
  server.reset();
  log::info(kLog, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cairn-infer — serves ONNX and TFLite models over REST: POST /score (Azure ML style), the "
      "KServe v2 / Open Inference Protocol under /v2, Prometheus text on /metrics.\n"
      "As an IoT Edge module (the IOTEDGE_* environment or --connection-string) it takes its "
      "models from the module twin's desired property 'models', reports their state, and "
      "scores messages routed to input 'score' onto output 'results': JSON tensors, or raw "
      "records such as sensor readings mapped by a model's 'inputMapping' (REST only with "
      "--http)."};
  Options o;
  std::string level = "info";
  std::int64_t max_queue_delay_us = 0;
  app.add_option("--model", o.models,
                 "NAME=PATH[@VERSION] (repeatable; the same NAME twice serves both versions, the "
                 "last one for unversioned requests)");
  app.add_option("--models", o.models_file,
                 "JSON file {NAME: {version, path, sha256, engine, batching, limits, default}} "
                 "(the module twin's desired schema); re-read on SIGHUP")
      ->check(CLI::ExistingFile);
  app.add_option("--default", o.default_model, "Model that POST /score serves");
  app.add_option("--http", o.http,
                 "HOST:PORT to listen on (port 0 picks a free one); in module mode REST is served "
                 "only when this is given")
      ->capture_default_str();
  app.add_option("--max-body-bytes", o.max_body_bytes, "Largest request body (413 beyond)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 32));
  app.add_option("--max-reading-bytes", o.max_reading_bytes,
                 "Request body bytes being read at once over all connections, each request "
                 "counting its Content-Length until its body is read (503 with Retry-After "
                 "beyond; a body alone always passes)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1024}, std::numeric_limits<std::size_t>::max()));
  app.add_option("--max-connections", o.max_connections, "Concurrent HTTP connections")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  app.add_option("--http-threads", o.http_threads,
                 "Threads serving HTTP. 2 or more: one request at a time runs inline on the "
                 "thread that read it (no hand-off to a worker), another thread takes over the "
                 "I/O if it runs long. 1: every request goes to the model's workers")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{64}));
  app.add_option("--max-models", o.manager.max_models, "Models served at once")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000}));
  app.add_option("--max-queue-bytes", o.manager.max_queue_bytes,
                 "Request bytes held by queued requests, all models together; one more request is "
                 "refused (HTTP 429, or an error answer to a message) unless nothing else waits")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::numeric_limits<std::size_t>::max()));
  app.add_option("--intra-op-threads", o.defaults.engine.intra_op_threads,
                 "ONNX Runtime threads per run (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--inter-op-threads", o.defaults.engine.inter_op_threads,
                 "ONNX Runtime threads across graph branches")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--graph-optimization", o.defaults.engine.graph_optimization,
                 "ONNX Runtime graph optimisation: disable, basic, extended, all")
      ->capture_default_str()
      ->check(CLI::IsMember({"disable", "basic", "extended", "all"}));
  app.add_option("--execution-provider", o.defaults.engine.execution_providers,
                 "ONNX Runtime execution provider, in preference order (repeatable)");
  app.add_option("--max-batch-size", o.defaults.batching.max_batch_size,
                 "Requests merged into one run (1: no batching)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}));
  app.add_option("--max-queue-delay-us", max_queue_delay_us, "Microseconds a batch waits to fill")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{10'000'000}));
  app.add_option("--max-queue", o.defaults.limits.max_queue,
                 "Requests waiting per model before 429")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  app.add_option("--concurrency", o.defaults.limits.concurrency,
                 "Runs of a model at once: its worker threads, and the run slots a request "
                 "running inline on an HTTP thread takes")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{64}));
  app.add_option("--connection-string", o.connection_string,
                 "Module mode: HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=... "
                 "(else the IoT Edge environment, when present)");
  app.add_option("--ca-file", o.ca_file,
                 "Module mode: PEM file of the CAs that sign the hub's certificate")
      ->envname("EdgeModuleCACertificateFile");
  app.add_option("--connect-host", o.connect_host,
                 "Module mode: address to connect to instead of the gateway host name");
  app.add_option("--port", o.port, "Module mode: MQTT/TLS port of the hub")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--score-input", o.module.score_input,
                 "Module mode: input whose messages are scoring requests")
      ->capture_default_str();
  app.add_option("--results-output", o.module.results_output,
                 "Module mode: output the results (and errors) go to")
      ->capture_default_str();
  app.add_option("--max-pending-messages", o.module.max_pending_messages,
                 "Module mode: routed requests being scored at once; more get an error result")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  std::int64_t report_debounce_ms = o.module.report_debounce.count();
  app.add_option("--report-debounce-ms", report_debounce_ms,
                 "Module mode: reported-property changes within this are sent as one patch")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{60'000}));
  app.add_option("--data-dir", o.delivery.data_dir,
                 "Where models given by URL and the chunk store of model delivery live")
      ->envname("CAIRN_INFER_DATA_DIR")
      ->capture_default_str();
  app.add_option("--public-key", o.delivery.public_key,
                 "PEM Ed25519 key: model packages must be signed with it (unsigned ones and "
                 "plain model URLs are refused); fixes the key against the twin's")
      ->check(CLI::ExistingFile);
  app.add_option("--delivery-ca-file", o.delivery.ca_file,
                 "PEM CA bundle for https:// model URLs (default: the system store)");
  bool no_warmup = false;
  app.add_flag("--no-warmup", no_warmup,
               "Skip the zero-input warm-up run (for models that cannot take zeros)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("cairn-infer ") + CAIRN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  o.defaults.batching.max_queue_delay = std::chrono::microseconds(max_queue_delay_us);
  o.module.report_debounce = std::chrono::milliseconds(report_debounce_ms);
  o.http_given = app.count("--http") > 0;
  o.defaults.warmup = !no_warmup;
  auto parsed_level = cairn::log::parse_level(level);
  if (!parsed_level) {
    std::cerr << "cairn-infer: " << parsed_level.error().message << "\n";
    return 2;
  }
  cairn::log::init(*parsed_level);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return run(o);
  } catch (const std::exception& e) {
    cairn::log::error("cairn-infer", "fatal: {}", e.what());
    return 1;
  }
}
